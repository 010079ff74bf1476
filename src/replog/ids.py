"""The idempotency index: which client ids the log holds, and what a write with an id means.

Pure (stdlib only). The index is built from what the log stores, entry by entry, so the index rebuilt
from a log after a restart is the very one that was built live while it was written.

Ids and keys:
- A single write with id J stores one entry with id J and flags 0.
- A client batch with key K stores entries with ids ``K:0 .. K:n-1`` and flags ``BATCH`` (plus
  ``BATCH_MORE`` on all but the last); a batch without a key stores ids None. The flags, not the id
  suffixes, say what is a batch: a single whose id is literally ``"K:0"`` is a single.
- One namespace: single ids, batch keys and the ids of batch entries are all distinct ("K" is a single
  or a batch; a single "K:1" and entry 1 of a batch "K" cannot both exist; nor a batch "K:0" and a
  batch "K"), so every name a client uses means one thing.
- Entries without an id (most of a log) cost the index nothing but a bit of run bookkeeping.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

BATCH = 1  # the entry belongs to a client batch (a POST with "messages")
BATCH_MORE = 2  # the next entry belongs to the same client batch


class Found(NamedTuple):
    """What is stored under a key: its first seq, how many entries, and whether it was a batch."""

    first: int
    count: int
    batch: bool


class IdRefused(Exception):
    """A write whose id the log cannot take; ``detail`` is one human sentence for the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class IdConflict(IdRefused):
    """The id is stored with something else (the HTTP layer answers 409 id_conflict)."""


class ReservedId(IdRefused):
    """The id has the form of the ids this log generates and names no retry (400 reserved_id)."""


def _batch_entry(id_: str) -> tuple[str, int] | None:
    """(K, i) if id_ is spelled like entry i of a batch K ("K:i", i written as str(i) writes it)."""
    key, sep, tail = id_.rpartition(":")
    if not sep or not tail.isascii() or not tail.isdigit() or (tail[0] == "0" and len(tail) > 1):
        return None
    return key, int(tail)


class IdIndex:
    """The ids stored in a log's entries 1..last_seq.

    Fed with ``add`` for every entry in seq order (live, as the master appends, or from a log it
    loads or recovers) and cut back with ``truncate``. Two indexes fed with the same entries are equal.

    Invariants: ``_keys`` is in seq order (dict insertion order), so a rollback pops from its end;
    ``_run_first``/``_run_last`` are the maximal runs of seqs whose entries carry an id, ascending.
    """

    __slots__ = ("_keys", "_run_first", "_run_last", "_last", "_more", "_open")
    __hash__ = None  # type: ignore[assignment]  # mutable; compared by content

    def __init__(self) -> None:
        # Single id -> its seq; batch key -> (first seq, count so far). One dict, one namespace.
        self._keys: dict[str, int | tuple[int, int]] = {}
        self._run_first = array("q")  # first seq of each run of entries that carry an id
        self._run_last = array("q")  # last seq of each such run
        self._last = 0  # the last seq added
        self._more = False  # the last entry added had BATCH_MORE: the next one continues its batch
        self._open: str | None = None  # the key of that unfinished batch (None: no key, or none open)

    @classmethod
    def of(cls, entries: Iterable[tuple[int, str | None, int]]) -> IdIndex:
        """The index of (seq, id, flags) entries 1..n, in seq order (a log being loaded)."""
        index = cls()
        for seq, id_, flags in entries:
            index.add(seq, id_, flags)
        return index

    @property
    def last_seq(self) -> int:
        """The last seq added (0 for none)."""
        return self._last

    def __len__(self) -> int:
        """How many single ids and batch keys are stored."""
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdIndex):
            return NotImplemented
        return (
            self._last == other._last
            and self._more == other._more
            and self._open == other._open
            and self._keys == other._keys
            and self._run_first == other._run_first
            and self._run_last == other._run_last
        )

    def __repr__(self) -> str:
        # Short whatever the log's size: a count of keys and of id runs (16 bytes each), not their contents.
        more = f", open batch {self._open!r}" if self._more else ""
        return f"IdIndex(last_seq={self._last}, keys={len(self._keys)}, runs={len(self._run_first)}{more})"

    # -- queries ---------------------------------------------------------------------

    def lookup(self, key: str) -> Found | None:
        """What is stored under the single id or batch key ``key``, or None."""
        value = self._keys.get(key)
        if value is None:
            return None
        if isinstance(value, int):
            return Found(value, 1, False)
        return Found(value[0], value[1], True)

    def taken(self, name: str) -> bool:
        """Whether name is in use: a single's id, a batch's key, or the id "K:i" of a batch's entry."""
        return name in self._keys or self.batch_holding(name) is not None

    def has_id(self, seq: int) -> bool:
        """Whether entry seq (1..last_seq) stores a client id; False means its id is generated."""
        i = bisect_right(self._run_first, seq) - 1
        return i >= 0 and seq <= self._run_last[i]

    def batch_holding(self, id_: str) -> tuple[str, int] | None:
        """(K, i) if id_ is the id of entry i of a stored batch K."""
        parsed = _batch_entry(id_)
        if parsed is None:
            return None
        value = self._keys.get(parsed[0])
        if isinstance(value, tuple) and parsed[1] < value[1]:
            return parsed
        return None

    # -- changes ---------------------------------------------------------------------

    def add(self, seq: int, id_: str | None, flags: int) -> None:
        """Register entry seq, which must be last_seq + 1.

        Raises ValueError (and changes nothing) for what no master writes: a seq out of order, unknown
        flags, a batch torn or continued with the wrong id, an id or key already stored.
        """
        if seq != self._last + 1:
            raise ValueError(f"entry {seq} added after entry {self._last}: entries are added in seq order")
        if flags & ~(BATCH | BATCH_MORE) or (flags & BATCH_MORE and not flags & BATCH):
            raise ValueError(f"entry {seq} has flags {flags}, which mean nothing")
        batch = bool(flags & BATCH)
        key: str | None = None
        if self._more:
            # The entry continues the batch the previous entry left open.
            if not batch:
                raise ValueError(f"entry {seq} is not a batch entry, but entry {seq - 1} said the batch goes on")
            key = self._open
            if key is None:
                if id_ is not None:
                    raise ValueError(f'entry {seq} has id "{id_}" inside a batch without a key')
            else:
                first, count = self._keys[key]  # type: ignore[misc]
                if id_ != f"{key}:{count}":
                    raise ValueError(f'entry {seq} has id {id_!r}, entry {count} of batch "{key}" has "{key}:{count}"')
                if id_ in self._keys:
                    raise ValueError(f'entry {seq}: the id "{id_}" is already in use')
                self._keys[key] = (first, count + 1)
        elif batch:
            if id_ is not None:
                if not id_.endswith(":0"):
                    raise ValueError(f'entry {seq} starts a batch with id "{id_}", not "<key>:0"')
                key = id_[:-2]
                if self.taken(key) or self.taken(id_):
                    raise ValueError(f'entry {seq} starts a batch "{key}", but "{key}" or "{id_}" is already in use')
                self._keys[key] = (seq, 1)
        elif id_ is not None:
            if self.taken(id_):
                raise ValueError(f'entry {seq}: the id "{id_}" is already in use')
            self._keys[id_] = seq
        if id_ is not None:
            if self._run_last and self._run_last[-1] == seq - 1:
                self._run_last[-1] = seq
            else:
                self._run_first.append(seq)
                self._run_last.append(seq)
        self._more = bool(flags & BATCH_MORE)
        self._open = key if self._more else None
        self._last = seq

    def truncate(self, last_seq: int) -> None:
        """Forget the entries after last_seq (a rollback); a last_seq at or past the end changes nothing.

        last_seq must end a client batch (logs hold whole batches, so a rollback never cuts one):
        cutting a batch with a key raises ValueError and changes nothing. A cut inside a batch without a
        key cannot be seen here; the index then reads entry last_seq as the end of its batch.
        """
        if last_seq < 0:
            raise ValueError(f"cannot truncate to seq {last_seq}")
        if last_seq >= self._last:
            return
        keys = self._keys
        for key in reversed(keys):  # seq order, so only the forgotten keys and one more are visited
            value = keys[key]
            first, count = (value, 1) if isinstance(value, int) else value
            if first + count - 1 <= last_seq:
                break
            if first <= last_seq:
                end = first + count - 1
                raise ValueError(f'truncating to seq {last_seq} would cut the batch "{key}" ({first}..{end})')
        while keys:
            key = next(reversed(keys))
            value = keys[key]
            if (value if isinstance(value, int) else value[0]) <= last_seq:
                break
            del keys[key]
        run_first, run_last = self._run_first, self._run_last
        while run_first and run_first[-1] > last_seq:
            run_first.pop()
            run_last.pop()
        if run_last and run_last[-1] > last_seq:
            run_last[-1] = last_seq
        self._last = last_seq
        self._more = False
        self._open = None


def find(
    index: IdIndex,
    key: str | None,
    *,
    batch: bool,
    texts: Sequence[str],
    text_at: Callable[[int], str],
    generated: Callable[[str], int | None],
) -> int | None:
    """What a write with id/key ``key`` and these texts is: a retry, a new write, or refused.

    Returns the first seq of the identical earlier write (a retry: 200), or None for a new write (the
    caller appends it). Raises IdConflict (409) when the key, or an id the write would store, is in use
    by something else (another kind, count or text; a batch entry's id), ReservedId (400) for an id of the
    form the log generates that names no retry (a generated id is retried as a single, same text).
    ``text_at(seq)`` reads the log's text at 1 <= seq <= last_seq; ``generated(id)`` is n if id is the
    generated id of seq n ("<prefix>-<n>"), else None.
    """
    if not texts:
        raise ValueError("a write has at least one text")
    if key is None:
        return None  # nothing to retry: the log generates the ids
    found = index.lookup(key)
    if found is not None:
        if (
            found.batch != batch
            or found.count != len(texts)
            or any(text_at(found.first + i) != text for i, text in enumerate(texts))
        ):
            raise IdConflict(f'the id "{key}" is already stored with different content')
        return found.first
    n = generated(key)
    if n is not None:
        reserved = f'ids of the form "{key.partition("-")[0]}-<seq>" are the ones this log generates'
        # A retry with the id the master generated for an earlier answer (say, a 504): a single write
        # whose text is the one stored at seq n, which must exist (n >= 1: defect 6) and carry no id.
        if batch or not 1 <= n <= index.last_seq or index.has_id(n):
            raise ReservedId(reserved)
        if text_at(n) != texts[0]:
            raise IdConflict(f'the id "{key}" is already stored with different content')
        return n
    held = index.batch_holding(key)
    if held is not None:
        raise IdConflict(f'the id "{key}" is taken by entry {held[1]} of the batch "{held[0]}"')
    if batch:
        for i in range(len(texts)):
            if index.taken(f"{key}:{i}"):
                raise IdConflict(f'the id "{key}:{i}" of this batch\'s entry {i} is taken')
    return None
