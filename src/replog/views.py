"""Bodies of GET /messages, from a cache of encoded chunks.

The log is append-only and an entry never changes, so a complete chunk of entries
encodes to the same bytes forever. Complete chunks are cached (least recently used
first out, within a byte budget) and a read of the whole log becomes a join of bytes.
"""

from __future__ import annotations

from collections import OrderedDict

from replog import jsoncodec
from replog.log import Log

CHUNK = 1024  # entries per cached chunk


class MessagesView:
    """Encodes {"messages": [...], "last_seq": N} for any since/limit window of one log."""

    def __init__(self, log: Log, budget: int = 32 << 20) -> None:
        self._log = log
        self._budget = budget  # bytes of encoded chunks kept at most
        self._chunks: OrderedDict[int, bytes] = OrderedDict()  # chunk index -> its entries' JSON, no brackets
        self._size = 0
        self._log_id = log.log_id  # generated ids depend on it: a new identity empties the cache
        self._events: tuple[str, int, int, bytes] | None = None  # the last stream chunk: (log id, first, last, bytes)

    def body(self, since: int = 0, limit: int | None = None, upto: int | None = None) -> bytes:
        """{"messages": the entries after since, at most limit of them, none past upto (default: the log's
        end), "last_seq": the highest seq shown (upto, or the log's end)}."""
        log = self._log
        first = max(since, 0) + 1
        shown = log.last_seq if upto is None else min(upto, log.last_seq)
        last = shown if limit is None else min(shown, first + limit - 1)
        return b'{"messages":[' + self.joined(first, last) + b'],"last_seq":%d}' % shown

    def joined(self, first: int, last: int) -> bytes:
        """The JSON objects of entries first..last (within the log), joined by commas."""
        log = self._log
        if log.log_id != self._log_id:
            self._chunks.clear()
            self._size = 0
            self._log_id = log.log_id
        last = min(last, log.last_seq)
        parts: list[bytes] = []
        seq = first
        while seq <= last:
            index = (seq - 1) // CHUNK
            start, end = index * CHUNK + 1, (index + 1) * CHUNK
            if seq == start and end <= last:
                parts.append(self._chunk(index, start, end))
                seq = end + 1
            else:
                stop = min(end, last)
                parts.append(self._encode(seq, stop))
                seq = stop + 1
        return b",".join(parts)

    def events(self, first: int, last: int) -> bytes:
        """Entries first..last as Server-Sent Events (id, event: message, data), encoded.

        The entries' JSON is joined() cut between objects at ',{"seq":', which no JSON string can
        hold (a quote inside a string is always escaped). The last answer is kept: every stream that
        follows the end of the log asks for the same new entries, and encodes them once between them.
        """
        memo = self._events
        if memo is not None and memo[:3] == (self._log.log_id, first, last):
            return memo[3]
        objects = self.joined(first, last).split(b',{"seq":')
        head = b"id: %d\nevent: message\ndata: %s\n\n" % (first, objects[0])
        data = head + b"".join(
            b'id: %d\nevent: message\ndata: {"seq":%s\n\n' % (seq, obj)
            for seq, obj in zip(range(first + 1, last + 1), objects[1:], strict=True)
        )
        self._events = (self._log.log_id, first, last, data)
        return data

    def _encode(self, first: int, last: int) -> bytes:
        return jsoncodec.dumps(self._log.dicts(first - 1, last - first + 1))[1:-1]

    def _chunk(self, index: int, start: int, end: int) -> bytes:
        data = self._chunks.get(index)
        if data is not None:
            self._chunks.move_to_end(index)
            return data
        data = self._encode(start, end)
        if len(data) <= self._budget:
            self._chunks[index] = data
            self._size += len(data)
            while self._size > self._budget:
                self._size -= len(self._chunks.popitem(last=False)[1])
        return data
