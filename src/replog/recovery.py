"""Start-up recovery of the master: which secondary, if any, holds log entries the master lacks.

Pure decision logic; the master asks the secondaries and fetches the entries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """What one secondary said of its log at the master's start-up."""

    url: str
    log_id: str | None  # None: it holds no log yet
    seq: int  # highest seq it holds with no gap
    agrees: bool = True  # its log matches the master's up to the shorter of the two (checksums)


@dataclass(frozen=True)
class Donor:
    url: str
    log_id: str
    seq: int


def enough_answers(answered: int, nodes: int) -> bool:
    """The master may decide once a majority of all nodes, itself included, has answered."""
    return answered + 1 >= nodes // 2 + 1


def choose_donor(log_id: str | None, last_seq: int, answers: list[Answer]) -> Donor | None:
    """The secondary to copy missing entries from, or None if the master holds the most.

    A master with entries trusts only secondaries of its own log (others are diverged and
    never merged). A master with no entries (it lost its memory or its disk) adopts the log
    of the most advanced secondary. Ties go to the first answer, for determinism.
    """
    best: Donor | None = None
    for a in answers:
        if a.log_id is None or a.seq <= 0:
            continue
        if last_seq > 0 and (a.log_id != log_id or not a.agrees):
            continue
        if a.seq > last_seq and (best is None or a.seq > best.seq):
            best = Donor(a.url, a.log_id, a.seq)
    return best
