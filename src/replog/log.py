"""The ordered log of one node: entries seq 1..last, with no gaps.

Pure data: no asyncio, no I/O. The master appends to it; a secondary extends it
with the gap-free prefix its reorder buffer releases.
"""

from __future__ import annotations

import zlib
from array import array
from dataclasses import dataclass
from typing import Iterator, Sequence

def chain(prev: int, id_: str | None, text: str) -> int:
    """The log's running checksum after one more entry: CRC-32 of the entry, seeded with prev.

    Equal checksums at a seq mean (but for a 2**-32 accident) equal logs up to that seq,
    so one number compares two whole prefixes, as Raft's (index, term) pair does.
    """
    if id_ is None:
        data = b"\x00" + text.encode()
    else:
        raw = id_.encode()
        data = b"\x01" + len(raw).to_bytes(4, "little") + raw + text.encode()
    return zlib.crc32(data, prev)


# An entry as it travels: (seq, id or None, text). id None means "generated":
# the id is derived from the log identity and the seq (see Log.id_of), which
# costs no memory per message and is the same on every node of the log.
Item = tuple[str | None, str]


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    id: str
    text: str

    def as_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "id": self.id, "text": self.text}


class Log:
    """Entries seq 1..last_seq of one log identity. Invariant: no gaps, seqs start at 1."""

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id  # identity shared by every node holding this log
        self._prefix = log_id[:8]  # prefix of generated ids
        self._ids: list[str | None] = []  # ids[seq-1]: the client's id, or None if generated
        self._texts: list[str] = []  # texts[seq-1]
        self._crcs = array("I")  # crcs[seq-1]: the running checksum of entries 1..seq (see chain)

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

    def append(self, text: str, id: str | None = None) -> int:
        """Append one entry and return its seq."""
        self._crcs.append(chain(self._crcs[-1] if self._crcs else 0, id, text))
        self._ids.append(id)
        self._texts.append(text)
        return len(self._texts)

    def extend(self, items: Sequence[Item]) -> int:
        """Append items as consecutive seqs; return the first seq."""
        first = len(self._texts) + 1
        crc = self._crcs[-1] if self._crcs else 0
        crcs = self._crcs
        for id_, text in items:
            crc = chain(crc, id_, text)
            crcs.append(crc)
            self._ids.append(id_)
            self._texts.append(text)
        return first

    def crc(self, seq: int) -> int:
        """The running checksum of entries 1..seq (0 for seq 0)."""
        return self._crcs[seq - 1] if seq > 0 else 0

    def id_of(self, seq: int) -> str:
        id_ = self._ids[seq - 1]
        return id_ if id_ is not None else f"{self._prefix}-{seq}"

    def generated_seq(self, id_: str) -> int | None:
        """The seq whose generated id id_ is (or would be), or None if id_ is not of that form."""
        prefix, _, tail = id_.partition("-")
        if prefix != self._prefix or not tail.isascii() or not tail.isdigit() or len(tail) > 18:
            return None
        return int(tail)

    def raw_id(self, seq: int) -> str | None:
        return self._ids[seq - 1]

    def text(self, seq: int) -> str:
        return self._texts[seq - 1]

    def item(self, seq: int) -> Item:
        return self._ids[seq - 1], self._texts[seq - 1]

    def entry(self, seq: int) -> Entry:
        return Entry(seq, self.id_of(seq), self._texts[seq - 1])

    def entries(self, since: int = 0, limit: int | None = None) -> Iterator[Entry]:
        """Entries with seq > since, at most limit of them, in seq order."""
        first = max(since, 0) + 1
        last = self.last_seq if limit is None else min(self.last_seq, first + limit - 1)
        for seq in range(first, last + 1):
            yield self.entry(seq)

    def dicts(self, since: int = 0, limit: int | None = None) -> list[dict[str, object]]:
        """Entries as JSON-ready dicts; the hot path of GET /messages."""
        first = max(since, 0) + 1
        last = self.last_seq if limit is None else min(self.last_seq, first + limit - 1)
        prefix = self._prefix
        return [
            {"seq": seq, "id": id_ if id_ is not None else f"{prefix}-{seq}", "text": text}
            for seq, id_, text in zip(range(first, last + 1), self._ids[first - 1 : last], self._texts[first - 1 : last])
        ]

    def batch_end(self, first: int, max_count: int, max_bytes: int) -> int:
        """The last seq of the batch that starts at first, capped in count and size.

        A batch holds at least one entry when first <= last_seq, whatever its size.
        Sizes are counted in characters plus a fixed overhead: a cap, not an exact measure.
        """
        last = min(self.last_seq, first + max_count - 1)
        if last < first:
            return first - 1
        size = 0
        texts = self._texts
        for seq in range(first, last + 1):
            size += len(texts[seq - 1]) + 32
            if size > max_bytes and seq > first:
                return seq - 1
        return last

    def batch(self, first: int, max_count: int, max_bytes: int) -> list[list[object]]:
        """Wire-ready entries [seq, raw id, text] of the batch that starts at first (see batch_end)."""
        return self.wire(first, self.batch_end(first, max_count, max_bytes))

    def wire(self, first: int, last: int) -> list[list[object]]:
        """Wire-ready entries [seq, raw id, text] for seqs first..last."""
        return [[seq, id_, text] for seq, id_, text in zip(range(first, last + 1), self._ids[first - 1 : last], self._texts[first - 1 : last])]
