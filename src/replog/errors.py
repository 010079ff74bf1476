"""Domain errors: why a node refuses a request, independent of HTTP.

Each carries a stable code (the "error" of the JSON answer), one human sentence and any data the
answer shows. The web layer (replog.http) maps each class to its status code.
"""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A request the node refuses, with a stable code and one human sentence."""

    code = "refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


class NoQuorum(Refusal):
    """Too few nodes are reachable (or the master is still recovering): read-only."""

    code = "no_quorum"


class DiskFailed(Refusal):
    """The node cannot make writes durable any more."""

    code = "disk_failed"


class NotMaster(Refusal):
    """This node does not take writes (any more): deposed, or not the master."""

    code = "not_master"


class Switching(Refusal):
    """Under failover: the node is between roles (taking or giving up the master's) for a moment; retry."""

    code = "switching_role"


class WriteConcernTimeout(Refusal):
    """The write is stored and keeps replicating, but its w was not met in time."""

    code = "write_concern_timeout"


class IdConflict(Refusal):
    """The idempotency key is taken by different content."""

    code = "id_conflict"


class ReservedId(Refusal):
    """The id is of the form this log generates, for an entry that cannot be a retry."""

    code = "reserved_id"


class StaleEpoch(Refusal):
    """An internal request from a master of an epoch this node has promised away."""

    code = "stale_epoch"


class EntryConflict(Refusal):
    """The master's entries contradict the ones this node holds."""

    code = "entry_conflict"


class LogMismatch(Refusal):
    """The master's log is another log than the one this node holds."""

    code = "log_mismatch"


class Failed(Refusal):
    """A part of the node died; it tells the truth instead of pretending to work."""

    code = "node_failed"


class InjectedFailure(Refusal):
    """A fault injected on purpose (--fail-rate): the request was served, then answered as failed."""

    code = "injected_failure"
