"""The errors of the client, one class per way a write or a read can fail.

Every one is a ReplogError with the node's error code, its one-sentence detail, the HTTP status
(None when no node answered) and the whole JSON body it answered.
"""

from __future__ import annotations

from typing import Any


class ReplogError(Exception):
    """A request that failed: code and detail as the node said them (or as the client saw the failure)."""

    def __init__(
        self, detail: str, *, code: str, status: int | None = None, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code  # the node's "error" (or "unreachable" when none answered)
        self.status = status  # the HTTP status, None when no node answered
        self.body = body or {}

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.detail}"


class Rejected(ReplogError):
    """A 4xx: the request itself is refused (bad input, too large, an id taken by other content). Nothing
    was appended; retrying the same request gets the same answer."""


class WriteConcernTimeout(ReplogError):
    """The write is stored (seq) but fewer than w nodes held it in time (acks); it keeps replicating."""

    def __init__(self, detail: str, **kw: Any) -> None:
        super().__init__(detail, **kw)
        body = self.body
        entries = body.get("entries")
        self.seq: int | None = body.get("seq", entries[-1]["seq"] if entries else None)  # the last seq written
        self.id: str | None = body.get("id")
        self.entries: list[dict[str, Any]] | None = entries  # a batch's entries
        self.w: int | None = body.get("w")
        self.acks: int | None = body.get("acks")


class Unavailable(ReplogError):
    """No node could take the request: unreachable, or a 5xx that retries did not get past in time."""


class NoQuorum(Unavailable):
    """The master is read-only: fewer than a majority of the nodes are reachable (or it is recovering)."""


class NotMaster(Unavailable):
    """The node asked takes no writes: a secondary, or a master deposed by a newer one. master is the
    master's URL when the node named one."""

    def __init__(self, detail: str, **kw: Any) -> None:
        super().__init__(detail, **kw)
        master = self.body.get("master")
        self.master: str | None = master if isinstance(master, str) and master else None


def from_answer(status: int, body: Any) -> ReplogError:
    """The typed error of a node's error answer."""
    if not isinstance(body, dict):
        body = {}
    code = body.get("error") if isinstance(body.get("error"), str) else "http_error"
    detail = body.get("detail") if isinstance(body.get("detail"), str) else f"the node answered HTTP {status}"
    kw: dict[str, Any] = {"code": code, "status": status, "body": body}
    if status == 504 and code == "write_concern_timeout":
        return WriteConcernTimeout(detail, **kw)
    if code == "not_master":
        return NotMaster(detail, **kw)
    if code == "no_quorum":
        return NoQuorum(detail, **kw)
    if 400 <= status < 500:
        return Rejected(detail, **kw)
    return Unavailable(detail, **kw)


def unreachable(url: str, exc: BaseException) -> Unavailable:
    reason = str(exc) or type(exc).__name__
    return Unavailable(f"cannot reach {url}: {reason}", code="unreachable")
