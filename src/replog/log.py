"""The ordered log of one node: entries seq 1..last, with no gaps, chained by a cryptographic hash.

Pure data: no asyncio, no I/O. The master appends to it; a secondary extends it
with the gap-free prefix its reorder buffer releases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from replog.ids import BATCH, BATCH_MORE

__all__ = ["BATCH", "BATCH_MORE", "GENESIS", "HASH_SIZE", "HashedItem", "Item", "Log", "chain"]

HASH_SIZE = 16
GENESIS = bytes(HASH_SIZE)  # the chain value before seq 1

# Entry flags BATCH and BATCH_MORE are defined with the idempotency index, which reads client batches
# from them: a client batch is one unit everywhere, its entries carry BATCH, and every one but the last
# carries BATCH_MORE, so any reader can tell where a batch ends without guessing from ids.


def chain(prev: bytes, id_: str | None, text: str, flags: int) -> bytes:
    """The chain value after one more entry: BLAKE2b-128 over the previous value and the entry.

    Equal values at a seq mean equal logs up to that seq, so one value compares two whole
    prefixes, as Raft's (index, term) pair does; unlike a CRC, no client can choose a text that
    collides with another log's.
    """
    if id_ is None:
        head = bytes((flags, 0, 0, 0, 0))
        data = prev + head + text.encode()
    else:
        raw = id_.encode()
        data = prev + bytes((flags,)) + (len(raw) + 1).to_bytes(4, "little") + raw + text.encode()
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


# An entry as the log holds it, without its seq: (id or None, text, flags). id None means
# "generated": the id is derived from the log identity and the seq (see Log.id_of), which costs
# no memory per message and is the same on every node of the log.
Item = tuple[str | None, str, int]
# The same with its chain value, as it travels between nodes and lies on disk.
HashedItem = tuple[str | None, str, int, bytes]


class Log:
    """Entries seq 1..last_seq of one log identity. Invariant: no gaps, seqs start at 1,
    hash(seq) == chain(hash(seq - 1), *item(seq))."""

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id  # identity shared by every node holding this log
        self._prefix = log_id[:8]  # prefix of generated ids
        self._ids: list[str | None] = []  # ids[seq-1]: the client's id, or None if generated
        self._texts: list[str] = []  # texts[seq-1]
        self._flags = bytearray()  # flags[seq-1]: BATCH / BATCH_MORE
        self._hashes = bytearray(GENESIS)  # hashes[16*seq : 16*seq+16]: the chain value after seq (seq 0: GENESIS)

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def last_seq(self) -> int:
        return len(self._texts)

    def adopt(self, log_id: str) -> None:
        """Take another log identity; only an empty log may do so."""
        if self._texts:
            raise ValueError("a non-empty log cannot change identity")
        self.log_id = log_id
        self._prefix = log_id[:8]

    # -- writing -------------------------------------------------------------------

    def append(self, text: str, id: str | None = None, flags: int = 0) -> int:
        """Append one entry and return its seq."""
        return self.extend([(id, text, flags)])

    def extend(self, items: Sequence[Item]) -> int:
        """Append items as consecutive seqs, chaining their hashes; return the first seq."""
        first = len(self._texts) + 1
        h = self.hash(first - 1)
        hashes, ids, texts, flags = self._hashes, self._ids, self._texts, self._flags
        for id_, text, fl in items:
            h = chain(h, id_, text, fl)
            hashes += h
            ids.append(id_)
            texts.append(text)
            flags.append(fl)
        return first

    def extend_hashed(self, items: Sequence[HashedItem]) -> int:
        """Append items whose chain values the caller has verified (or read from its own disk)."""
        first = len(self._texts) + 1
        for id_, text, fl, h in items:
            self._hashes += h
            self._ids.append(id_)
            self._texts.append(text)
            self._flags.append(fl)
        return first

    def truncate(self, last_seq: int) -> None:
        """Drop every entry after last_seq (a rollback of a contradicting tail)."""
        if not 0 <= last_seq <= self.last_seq:
            raise ValueError(f"cannot truncate a log of {self.last_seq} entries to {last_seq}")
        del self._ids[last_seq:]
        del self._texts[last_seq:]
        del self._flags[last_seq:]
        del self._hashes[HASH_SIZE * (last_seq + 1) :]

    # -- reading -------------------------------------------------------------------

    def hash(self, seq: int) -> bytes:
        """The chain value after seq (GENESIS for seq 0)."""
        return bytes(self._hashes[HASH_SIZE * seq : HASH_SIZE * (seq + 1)])

    def id_of(self, seq: int) -> str:
        id_ = self._ids[seq - 1]
        return id_ if id_ is not None else f"{self._prefix}-{seq}"

    def generated_seq(self, id_: str) -> int | None:
        """The seq whose generated id id_ is (or would be), or None if id_ is not of that form."""
        prefix, _, tail = id_.partition("-")
        if prefix != self._prefix or not tail.isascii() or not tail.isdigit() or len(tail) > 18:
            return None
        if tail != "0" and tail.startswith("0"):
            return None  # "<prefix>-05" is not how seq 5's id is written: an ordinary client id
        return int(tail)

    def raw_id(self, seq: int) -> str | None:
        return self._ids[seq - 1]

    def text(self, seq: int) -> str:
        return self._texts[seq - 1]

    def flags(self, seq: int) -> int:
        return self._flags[seq - 1]

    def item(self, seq: int) -> Item:
        return self._ids[seq - 1], self._texts[seq - 1], self._flags[seq - 1]

    def hashed(self, first: int, last: int) -> list[HashedItem]:
        """Entries first..last with their chain values (for the disk, a rollback file, a recovery)."""
        return [(*self.item(seq), self.hash(seq)) for seq in range(first, last + 1)]

    def whole_end(self, seq: int) -> int:
        """The end of the client batch that holds seq (seq itself for a single write)."""
        flags, last = self._flags, self.last_seq
        while seq < last and flags[seq - 1] & BATCH_MORE:
            seq += 1
        return seq

    def dicts(self, since: int = 0, limit: int | None = None) -> list[dict[str, object]]:
        """Entries as JSON-ready dicts; the hot path of GET /messages."""
        first = max(since, 0) + 1
        last = self.last_seq if limit is None else min(self.last_seq, first + limit - 1)
        prefix = self._prefix
        return [
            {"seq": seq, "id": id_ if id_ is not None else f"{prefix}-{seq}", "text": text}
            for seq, id_, text in zip(
                range(first, last + 1), self._ids[first - 1 : last], self._texts[first - 1 : last], strict=False
            )
        ]

    def batch_end(self, first: int, max_count: int, max_bytes: int) -> int:
        """The last seq of the replication batch that starts at first, capped in count and size.

        A batch holds at least one entry when first <= last_seq, whatever its size, and never
        ends inside a client batch (so a client batch is replicated whole, however large).
        Sizes are counted in characters plus a fixed overhead: a cap, not an exact measure.
        """
        last = min(self.last_seq, first + max_count - 1)
        if last < first:
            return first - 1
        size = 0
        texts = self._texts
        for seq in range(first, last + 1):
            size += len(texts[seq - 1]) + 64
            if size > max_bytes and seq > first:
                last = seq - 1
                break
        return self.whole_end(last)

    def wire(self, first: int, last: int) -> list[list[object]]:
        """Wire-ready entries [seq, raw id, text, flags, hash hex] for seqs first..last."""
        hashes = self._hashes
        return [
            [seq, id_, text, fl, hashes[HASH_SIZE * seq : HASH_SIZE * (seq + 1)].hex()]
            for seq, id_, text, fl in zip(
                range(first, last + 1),
                self._ids[first - 1 : last],
                self._texts[first - 1 : last],
                self._flags[first - 1 : last],
                strict=False,
            )
        ]
