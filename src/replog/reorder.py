"""A secondary's reorder buffer: entries arrive in any order, the log shows only the gap-free prefix.

Every entry travels with its chain value. An entry is released into the log only when that value
follows from the log's own chain head, so an entry that belongs to another log (a late request
of a dead master, say) can wait behind a gap but never slips in after the gap fills. Entries are
released in whole client batches only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replog.log import BATCH_MORE, HashedItem, Log, chain

WireEntry = tuple[int, str | None, str, int, bytes]  # (seq, id, text, flags, hash)


class Conflict(Exception):
    """An offered entry contradicts the one already held at its seq."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"a different entry is already held at seq {seq}")
        self.seq = seq


@dataclass
class Released:
    """What one offer moved into the log: items for seqs first..first+len(items)-1."""

    first: int
    items: list[HashedItem] = field(default_factory=list)
    dropped: int = 0  # buffered entries thrown away because they did not chain onto the log


class ReorderBuffer:
    """Drops duplicates, holds entries behind a gap, releases the verified gap-free prefix.

    Invariant: every key of pending is > log.last_seq (what the log holds is never pending).
    """

    def __init__(self, log: Log, *, max_pending: int = 200_000, window: int = 10_000_000) -> None:
        self.log = log
        self.pending: dict[int, HashedItem] = {}  # seq -> entry, held until the gap before it fills
        self.max_pending = max_pending  # beyond this many held entries the buffer is dropped (they are resent)
        self.window = window  # entries this far past the log's end are refused outright

    def check(self, entries: list[WireEntry]) -> None:
        """Raise Conflict if any entry contradicts one already held; changes nothing."""
        log = self.log
        last = log.last_seq
        for seq, _, _, _, h in entries:
            if seq <= last and log.hash(seq) != h:
                raise Conflict(seq)

    def offer(self, entries: list[WireEntry]) -> Released:
        """Take entries (any order, duplicates allowed); return what became gap-free.

        The caller has run check() first; entries at seqs the log holds are ignored.
        Seqs must be >= 1 and within the window (the caller validates).
        """
        log = self.log
        last = log.last_seq
        pending = self.pending
        for seq, id_, text, flags, h in entries:
            if seq > last:
                pending[seq] = (id_, text, flags, h)
        released = Released(first=last + 1)
        run: list[HashedItem] = []
        whole = 0  # how many entries of run end a client batch
        head = log.hash(last)
        nxt = last + 1
        foreign = False
        while nxt in pending:
            item = pending[nxt]
            id_, text, flags, h = item
            if chain(head, id_, text, flags) != h:
                foreign = True
                break
            run.append(item)
            head = h
            if not flags & BATCH_MORE:
                whole = len(run)
            nxt += 1
        if whole:
            for seq in range(last + 1, last + 1 + whole):
                del pending[seq]
            released.items = run[:whole]
            log.extend_hashed(released.items)
        if foreign:
            # An entry that does not chain onto the log belongs to another log (a dead master's
            # late request): everything held past the gap is suspect; the master resends ours.
            released.dropped = len(pending)
            pending.clear()
        elif len(pending) > self.max_pending:
            # A flood of entries behind a gap: forget them rather than grow without bound.
            released.dropped = len(pending)
            pending.clear()
        return released

    def reset(self) -> None:
        self.pending.clear()
