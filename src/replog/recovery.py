"""Start-up election of a static master: its epoch, whether its own vote counts, how many promises
it needs, and which node's log it recovers from.

Pure decision logic; the master asks the secondaries, fetches entries and rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from replog.commitment import majority


@dataclass(frozen=True)
class Position:
    """How far one node's log goes: a node's log epoch, then its seq, rank logs (Raft's up-to-date rule)."""

    url: str | None  # None: the master itself
    log_id: str | None  # None: it holds no log yet
    log_epoch: int
    seq: int

    @property
    def rank(self) -> tuple[int, int]:
        return (self.log_epoch, self.seq)


def next_epoch(proposal: int, saved: int, reported: Iterable[int]) -> int:
    """The epoch to propose: the current proposal if it is still above every epoch seen, else one more."""
    seen = max([saved, *reported])
    return proposal if proposal > seen else seen + 1


def counts_itself(had_log: bool, saved: int, reported: Iterable[int], *, blank: bool = False) -> bool:
    """The master's own vote counts only if it restarted on its own log (a data dir that held one,
    locked by this process) and no node has heard of an epoch newer than the one saved there: an
    older copy of the data dir, or a lost one, must not outvote a secondary that holds more.

    blank: the operator started a brand-new cluster (--new-cluster) and every node that answered has
    no history at all (no log, no promise, no log epoch). Its vote counts then, so that a new cluster
    takes writes with a secondary still down. (The flag's window: a master that lost its memory,
    restarted with it while the only secondaries that answer have lost theirs too, or never heard of it.)"""
    return (had_log and saved >= max(reported, default=0)) or (blank and not had_log)


def promises_needed(nodes: int, self_counts: bool) -> int:
    """Promises from secondaries needed: a majority of all nodes, less the master's own vote if it
    counts; never more than there are secondaries (with all of them consulted, nothing is left to learn)."""
    need = majority(nodes) - (1 if self_counts else 0)
    return min(need, nodes - 1)


def choose_donor(own: Position, answers: Iterable[Position]) -> Position:
    """The most up-to-date log among the master's own and the promising nodes'; the master's own on a tie.

    A master holding entries trusts only nodes of its own log (others are diverged and never merged);
    a master with an empty log takes the log of the most up-to-date node, whatever its identity, even
    one that holds no entry yet: its identity (and log epoch) is the cluster's, and a new one would
    make every later write look foreign to a master that comes back on its old data dir.
    """
    best = own
    for a in answers:
        if a.log_id is None:
            continue  # a node with no log at all has nothing to give, not even an identity
        if own.seq > 0 and a.log_id != own.log_id:
            continue
        if a.rank > best.rank:
            best = a
    return best
