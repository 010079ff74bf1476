"""A secondary's reorder buffer: entries arrive in any order, the log shows only the gap-free prefix.

Every entry travels with its chain value. An entry is released into the log only when that value
follows from the log's own chain head, so an entry that belongs to another log (a late request
of a dead master, say) can wait behind a gap but never slips in after the gap fills. Entries are
released in whole client batches only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from replog.log import BATCH_MORE, HashedItem, Log, chain

WireEntry = tuple[int, str | None, str, int, bytes]  # (seq, id, text, flags, hash)
ENTRY_OVERHEAD = 200  # bytes an entry held costs beyond its strings: its tuple, its dict slot, its hash


def held_size(id_: str | None, text: str) -> int:
    """Memory one held entry costs, as the buffer counts it (the strings as Python stores them)."""
    return sys.getsizeof(text) + (sys.getsizeof(id_) if id_ is not None else 0) + ENTRY_OVERHEAD


class BufferFull(Exception):
    """Holding these entries behind the gap would take the buffer past its byte cap: refused whole, nothing
    changes; the master resends from the gap."""

    def __init__(self, held: int, offered: int, cap: int) -> None:
        super().__init__(f"holding {offered} more bytes behind the gap ({held} held) would pass the cap of {cap}")
        self.held = held
        self.offered = offered
        self.cap = cap


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
    trimmed: int = 0  # held entries forgotten (the farthest first) to keep the buffer under its byte cap


class ReorderBuffer:
    """Drops duplicates, holds entries behind a gap, releases the verified gap-free prefix.

    Invariants: every key of pending is > log.last_seq (what the log holds is never pending);
    held_bytes is the sum of held_size over pending, and after offer() it is at most max_bytes.
    """

    def __init__(
        self, log: Log, *, max_pending: int = 200_000, window: int = 10_000_000, max_bytes: int = 64 << 20
    ) -> None:
        self.log = log
        self.pending: dict[int, HashedItem] = {}  # seq -> entry, held until the gap before it fills
        self.max_pending = max_pending  # beyond this many held entries the buffer is dropped (they are resent)
        self.window = window  # entries this far past the log's end are refused outright
        self.max_bytes = max_bytes  # memory held behind the gap at most (held_size of each entry)
        self.held_bytes = 0

    def admit(self, entries: list[WireEntry]) -> None:
        """Raise BufferFull if entries cannot fill the gap and holding them would pass the byte cap;
        changes nothing. A request that holds the next seq is always taken: it moves the log on."""
        last = self.log.last_seq
        offered = 0
        for seq, id_, text, _, _ in entries:
            if seq == last + 1:
                return
            if seq > last and seq not in self.pending:
                offered += held_size(id_, text)
        if offered and self.held_bytes + offered > self.max_bytes:
            raise BufferFull(self.held_bytes, offered, self.max_bytes)

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
                old = pending.get(seq)
                if old is not None:
                    self.held_bytes -= held_size(old[0], old[1])
                pending[seq] = (id_, text, flags, h)
                self.held_bytes += held_size(id_, text)
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
                id_, text, _, _ = pending.pop(seq)
                self.held_bytes -= held_size(id_, text)
            released.items = run[:whole]
            log.extend_hashed(released.items)
        if foreign:
            # An entry that does not chain onto the log belongs to another log (a dead master's
            # late request): everything held past the gap is suspect; the master resends ours.
            released.dropped = len(pending)
            self.reset()
        elif len(pending) > self.max_pending:
            # A flood of entries behind a gap: forget them rather than grow without bound.
            released.dropped = len(pending)
            self.reset()
        elif self.held_bytes > self.max_bytes:
            # Over the byte cap (a request that filled part of the gap brought more): forget the farthest
            # entries first, which the master resends once the gap before them fills.
            for seq in sorted(pending, reverse=True):
                id_, text, _, _ = pending.pop(seq)
                self.held_bytes -= held_size(id_, text)
                released.trimmed += 1
                if self.held_bytes <= self.max_bytes:
                    break
        return released

    def reset(self) -> None:
        self.pending.clear()
        self.held_bytes = 0
