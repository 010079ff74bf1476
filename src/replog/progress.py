"""What the master knows of one secondary: its position in the log, its promise and its health.

Pure state with written invariants; the replicator and the heartbeat loop drive it through these
methods only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    SUSPECTED = "suspected"
    UNHEALTHY = "unhealthy"
    DIVERGED = "diverged"  # holds a log that contradicts the master's; never merged

    def __str__(self) -> str:
        return self.value


@dataclass
class Progress:
    """Position, promise and health of one secondary.

    Invariants: 0 <= match < next_seq; match is what the secondary last *reported* holding durably
    without gaps (under its current incarnation) and agreeing with the master's chain, never what
    the master merely sent; DIVERGED implies match == 0.
    """

    match: int = 0  # highest seq it holds durably, gap-free, agreeing with our chain, as last reported
    next_seq: int = 1  # first seq the next replication request carries
    incarnation: str | None = None  # the secondary process's incarnation id, as it last reported
    promised: int = 0  # the epoch it last reported promising (to us: others answer stale_epoch)
    log_epoch: int = 0  # the epoch of the master whose log its whole log is a prefix of, as last reported
    status: Status = Status.UNHEALTHY  # unhealthy until the first answer
    missed: int = 0  # consecutive missed heartbeats
    failures: int = 0  # consecutive failed replication requests
    last_contact: float | None = None  # clock time of the last answer of any kind
    synced: tuple[str | None, int] | None = None  # (incarnation, match) an epoch-only request was sent for

    def report(self, incarnation: str, seq: int, promised: int, log_epoch: int) -> bool:
        """Take what the secondary says of itself; return True if that rewound our position.

        Under one incarnation its seq, promise and log epoch never go down, so a lower number is a
        stale answer (pipelined answers can arrive out of order) and max() keeps the newer one. A
        new incarnation is a new process, possibly with less than before (restarted empty): believe
        it, even downwards, and resend everything past what it reports.
        """
        rewound = False
        if incarnation != self.incarnation:
            # A new process holds nothing it was merely sent: resend from what it reports.
            rewound = self.incarnation is not None
            self.incarnation = incarnation
            self.match, self.promised, self.log_epoch = seq, promised, log_epoch
        else:
            self.match = max(self.match, seq)
            self.promised = max(self.promised, promised)
            self.log_epoch = max(self.log_epoch, log_epoch)
        if rewound or self.next_seq <= self.match:
            self.next_seq = self.match + 1
        return rewound

    def counted(self, epoch: int, start_end: int) -> int:
        """The seq this node counts as holding for acks of the master of epoch (0: none).

        Only a copy held under the current epoch counts, and only once it covers the master's
        start-up log: a copy a later master could throw away is never counted.
        """
        if self.status is Status.DIVERGED or self.promised != epoch or self.log_epoch != epoch:
            return 0
        return self.match if self.match >= start_end else 0

    def needs_epoch(self, epoch: int) -> bool:
        """It has not yet taken our epoch as its log epoch, and no epoch-only request was sent for its position."""
        return (self.promised != epoch or self.log_epoch != epoch) and self.synced != (self.incarnation, self.match)

    def sent(self, last_seq: int) -> None:
        """Entries up to last_seq are in flight; the next request starts after them."""
        self.next_seq = max(self.next_seq, last_seq + 1)

    def sync_sent(self) -> None:
        """An epoch-only request (no entries) went out for its current position; one is enough."""
        self.synced = (self.incarnation, self.match)

    def failed(self) -> None:
        """A request failed: resend everything not acknowledged."""
        self.failures += 1
        self.rewind()

    def rewind(self) -> None:
        """Resend from the first seq it is not known to hold (a request was abandoned, or every
        request was answered and it still lacks what was sent: held behind a gap, or dropped)."""
        self.next_seq = self.match + 1

    def succeeded(self, now: float) -> None:
        self.failures = 0
        self.last_contact = now

    def diverge(self, incarnation: str | None) -> bool:
        """Its log contradicts ours: never merged, never counted. True if it just diverged."""
        was = self.status is Status.DIVERGED
        self.status = Status.DIVERGED
        if incarnation is not None:
            self.incarnation = incarnation
        self.match, self.next_seq = 0, 1
        return not was

    def rejoin(self) -> None:
        """A new process answered in place of a diverged one: judge its log afresh."""
        self.status = Status.HEALTHY
        self.incarnation = None
        self.match, self.next_seq, self.synced = 0, 1, None

    def beat_ok(self, now: float) -> bool:
        """A heartbeat was answered; return True if the secondary just came back."""
        came_back = self.status in (Status.SUSPECTED, Status.UNHEALTHY)
        self.missed = 0
        self.last_contact = now
        if self.status is not Status.DIVERGED:
            self.status = Status.HEALTHY
        return came_back

    def beat_missed(self, suspect_after: int, unhealthy_after: int) -> bool:
        """A heartbeat went unanswered; return True if the status changed."""
        self.missed += 1
        before = self.status
        if self.status is Status.DIVERGED:
            return False
        if self.missed >= unhealthy_after:
            self.status = Status.UNHEALTHY
        elif self.missed >= suspect_after and self.status is Status.HEALTHY:
            self.status = Status.SUSPECTED
        return self.status is not before

    def unavailable(self) -> bool:
        """It answered that it cannot do its job (its disk failed): out of the quorum at once.
        Return True if the status changed."""
        before = self.status
        if self.status is not Status.DIVERGED:
            self.status = Status.UNHEALTHY
        return self.status is not before

    @property
    def available(self) -> bool:
        """Counts towards the quorum: reachable and holding a compatible log."""
        return self.status in (Status.HEALTHY, Status.SUSPECTED)
