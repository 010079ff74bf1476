"""A secondary's reorder buffer: entries arrive in any order, the log shows only the gap-free prefix."""

from __future__ import annotations

from dataclasses import dataclass, field

from replog.log import Item, Log


class Conflict(Exception):
    """An offered entry contradicts the one already held at its seq."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"a different entry is already held at seq {seq}")
        self.seq = seq


@dataclass
class Released:
    """What one offer moved into the log: items for seqs first..first+len(items)-1."""

    first: int
    items: list[Item] = field(default_factory=list)


class ReorderBuffer:
    """Drops duplicates, holds entries behind a gap, releases the gap-free prefix to the log.

    Invariant: every key of pending is > log.last_seq + 1 (the next seq is never pending).
    """

    def __init__(self, log: Log, *, max_pending: int = 200_000, window: int = 10_000_000) -> None:
        self.log = log
        self.pending: dict[int, Item] = {}  # seq -> item, held until the gap before it fills
        self.max_pending = max_pending  # beyond this many held entries the buffer is dropped (they are resent)
        self.window = window  # entries this far past the log's end are refused outright

    def check(self, entries: list[tuple[int, str | None, str]]) -> None:
        """Raise Conflict if any entry contradicts one already held; changes nothing."""
        last = self.log.last_seq
        for seq, id_, text in entries:
            if seq <= last and self.log.item(seq) != (id_, text):
                raise Conflict(seq)

    def offer(self, entries: list[tuple[int, str | None, str]]) -> Released:
        """Take entries (any order, duplicates allowed); return what became gap-free.

        The caller has run check() first; entries at seqs the log holds are ignored.
        Seqs must be >= 1 and within the window (the caller validates).
        """
        last = self.log.last_seq
        for seq, id_, text in entries:
            if seq > last:
                self.pending[seq] = (id_, text)
        released = Released(first=last + 1)
        nxt = last + 1
        pending = self.pending
        while nxt in pending:
            released.items.append(pending.pop(nxt))
            nxt += 1
        if released.items:
            self.log.extend(released.items)
        if len(pending) > self.max_pending:
            # A flood of entries behind a gap: forget them rather than grow without bound.
            pending.clear()
        return released

    def reset(self) -> None:
        self.pending.clear()
