"""The pure rules of automatic failover (SPEC "Automatic failover (etcd)"): a master's own lease
deadline, whom a candidate defers to, how long it may defer, and how an etcd revision becomes an epoch.

No asyncio, no aiohttp, no etcd client: the node runtime calls these with times read from boottime()
and with what etcd and the other members answered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from replog.recovery import Position

DEFAULT_DRIFT = 0.05  # the clock-rate difference tolerated between this node and etcd (5 %)
DEFAULT_MARGIN = 0.2  # seconds kept in hand for the time between a deadline check and the answer it allows


def boottime() -> float:
    """Seconds on a monotonic clock that also counts time the machine was suspended (CLOCK_BOOTTIME),
    where the platform has one; else time.monotonic(). Only differences between two readings mean anything."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    if clock is not None:
        try:
            return time.clock_gettime(clock)
        except OSError:  # a kernel without it
            pass
    return time.monotonic()


@dataclass
class LeaseDeadline:
    """The time until which a lease holder may act as the holder, by its own clock.

    etcd keeps a lease alive for ttl seconds after it receives a keep-alive; that keep-alive was sent no
    earlier than sent_at, so the lease cannot expire at etcd before sent_at + ttl by etcd's clock. Our
    clock may run slower than etcd's by up to drift, and a check is acted on a little later than it is
    made, so the deadline is sent_at + ttl * (1 - drift) - margin: until then, no other node can hold the
    key that this lease keeps (for clocks whose rates differ by less than drift).
    """

    ttl: float
    drift: float = DEFAULT_DRIFT
    margin: float = DEFAULT_MARGIN
    sent_at: float = field(default=-math.inf, init=False)  # the send time of the latest successful keep-alive

    def __post_init__(self) -> None:
        if self.ttl <= 0 or not 0 <= self.drift < 1 or self.margin < 0:
            raise ValueError(f"a lease needs ttl > 0, 0 <= drift < 1, margin >= 0 (got {self})")

    def renewed(self, sent_at: float) -> None:
        """A keep-alive (or the grant) sent at sent_at succeeded. The deadline only moves forward: an
        answer to an older keep-alive that arrives after a newer one's changes nothing."""
        self.sent_at = max(self.sent_at, sent_at)

    def lost(self) -> None:
        """The lease is gone (etcd said it expired, or we revoked it): no deadline until the next grant."""
        self.sent_at = -math.inf

    def deadline(self) -> float:
        """The last instant (on the clock sent_at was read from) at which the holder may act; -inf before
        any renewal."""
        if self.sent_at == -math.inf:
            return -math.inf
        return self.sent_at + self.ttl * (1 - self.drift) - self.margin

    def valid(self, now: float) -> bool:
        """True while now is before the deadline: the lease surely still holds at etcd."""
        return now < self.deadline()

    def remaining(self, now: float) -> float:
        """Seconds left before the deadline (<= 0 once past it)."""
        return self.deadline() - now


def _comparable(mine: Position, other: Position) -> bool:
    """other's log can be ranked against mine as recovery.choose_donor ranks donors: it holds a log, and
    not another log's identity while mine holds entries (a master of ours would never take that one)."""
    if other.log_id is None:
        return False
    return not (mine.seq > 0 and mine.log_id is not None and other.log_id != mine.log_id)


def should_defer(me: str, mine: Position, others: Mapping[str, Position]) -> bool:
    """True if a reachable member (others: name -> its position, as it answered just now) is more up to
    date than this node: a higher (log epoch, seq), or the same with a smaller name. Members with no log,
    or with another log's identity while this node holds entries, are never deferred to."""
    for name, pos in others.items():
        if name == me or not _comparable(mine, pos):
            continue
        if pos.rank > mine.rank or (pos.rank == mine.rank and name < me):
            return True
    return False


@dataclass
class Deferral:
    """How long a candidate may keep deferring to better members: at most ttl plus a random jitter in
    [0, jitter) from the first deferral, then it campaigns anyway (the winner recovers from the best node of
    its promise majority, so campaigning is safe; deferring only makes a shorter recovery likely)."""

    ttl: float
    jitter: float
    started: float | None = None  # when this round of deferring began (None: not deferring)
    limit: float = 0.0  # how long this round may last

    def may_defer(self, now: float, rand: Callable[[], float]) -> bool:
        """True if the candidate may still defer at now; the first call of a round starts its clock."""
        if self.started is None:
            self.started = now
            self.limit = self.ttl + self.jitter * rand()
        return now - self.started < self.limit

    def reset(self) -> None:
        """A leader appeared (or this node won): the next vacancy starts a new round."""
        self.started = None


def campaign_delay(base: float, jitter: float, rand: Callable[[], float]) -> float:
    """The wait before campaigning once the leader key is seen gone: base plus a jitter in [0, jitter),
    so that candidates that saw the key vanish at once do not all try at the same instant."""
    return base + jitter * rand()


def epoch_of(create_revision: int, promised: int) -> int | None:
    """The epoch a leader key of create_revision gives, or None if it is not above this node's promise
    (etcd's revisions went back: etcd was wiped or restored; the caller logs it and refuses)."""
    return create_revision if create_revision > promised else None
