"""What the master knows of one secondary: its position in the log and its health.

Pure state with written invariants; the replicator and the heartbeat loop drive it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(str, enum.Enum):
    HEALTHY = "healthy"
    SUSPECTED = "suspected"
    UNHEALTHY = "unhealthy"
    DIVERGED = "diverged"  # holds a log that contradicts the master's; never merged

    def __str__(self) -> str:
        return self.value


@dataclass
class Progress:
    """Position and health of one secondary.

    Invariants: 0 <= match < next_seq; match is what the secondary last *reported* holding
    without gaps (under its current boot), never what the master merely sent.
    """

    match: int = 0  # highest seq the secondary holds without gaps, as it last reported
    next_seq: int = 1  # first seq the next replication request carries
    boot: str | None = None  # the secondary process's boot id, as it last reported
    status: Status = Status.UNHEALTHY  # unhealthy until the first answer
    missed: int = 0  # consecutive missed heartbeats
    failures: int = 0  # consecutive failed replication requests
    last_contact: float | None = None  # clock time of the last answer of any kind

    def report(self, boot: str, seq: int) -> bool:
        """Take what the secondary says it holds; return True if that rewound our position.

        Under the same boot the secondary's gap-free seq never goes down, so a lower
        number is a stale answer and max() keeps the newer one. A new boot means a new
        process, possibly with less than before (restarted empty): believe it, even downwards.
        """
        rewound = False
        if boot != self.boot:
            rewound = self.boot is not None and seq < self.match
            self.boot = boot
            self.match = seq
        elif seq > self.match:
            self.match = seq
        if rewound or self.next_seq <= self.match:
            self.next_seq = self.match + 1
        return rewound

    def sent(self, last_seq: int) -> None:
        """Entries up to last_seq are in flight; the next request starts after them."""
        self.next_seq = max(self.next_seq, last_seq + 1)

    def failed(self) -> None:
        """A request failed: resend everything not acknowledged."""
        self.failures += 1
        self.next_seq = self.match + 1

    def succeeded(self) -> None:
        self.failures = 0

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

    @property
    def available(self) -> bool:
        """Counts towards the quorum: reachable and holding a compatible log."""
        return self.status in (Status.HEALTHY, Status.SUSPECTED)
