"""A text/event-stream reader: bytes in, (id, event, data) out. Pure: no I/O.

It follows the WHATWG rules a replog stream needs (fields id, event, data; comments; LF, CRLF or CR
line ends; several data lines joined by LF) and has a fast path for replog's own event layout.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_FAST = b"\nevent: message\ndata: "  # replog writes "id: N" then these two lines
_MESSAGE_DATA = re.compile(rb"\nevent: message\ndata: ([^\n]*)")


class Event(NamedTuple):
    id: bytes | None  # the id field, None when the event had none
    event: bytes  # its type, b"message" by default
    data: bytes  # the data lines, joined by LF


class EventParser:
    """Feed it the stream's bytes as they come; it returns the events completed so far."""

    def __init__(self) -> None:
        self._buf = b""  # bytes of the event not yet complete

    def feed(self, data: bytes) -> list[Event]:
        buf = self._buf + data if self._buf else data
        held = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # maybe the first half of a CRLF: decided by the next byte
                buf, held = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop() + held
        out: list[Event] = []
        for block in blocks:
            if block.startswith(b"id: "):
                head, sep, rest = block.partition(_FAST)
                if sep and b"\n" not in head and b"\n" not in rest:
                    out.append(Event(head[4:], b"message", rest))
                    continue
            event = _parse(block)
            if event is not None:
                out.append(event)
        return out

    def feed_messages(self, data: bytes) -> list[bytes]:
        """The data of the message events completed so far, in order; other events and comments skipped.

        The same as the data of feed()'s message events, found in one pass over the bytes when every
        event is laid out as replog writes it (one data line, after "event: message"), else by feed().
        """
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0 or b"\r" in buf:
            return [e.data for e in self.feed(data) if e.event == b"message"]
        complete = buf[: end + 2]
        fields = complete.count(b"\ndata:") + complete.startswith(b"data:")  # no JSON holds a raw LF
        found = _MESSAGE_DATA.findall(complete)
        if len(found) != fields:
            return [e.data for e in self.feed(data) if e.event == b"message"]
        self._buf = buf[end + 2 :]
        return found


def _parse(block: bytes) -> Event | None:
    id_: bytes | None = None
    kind = b"message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # a comment (the keep-alive) or an empty line
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            kind = value
        elif name == b"id":
            id_ = value
    if not data:
        return None
    return Event(id_, kind, b"\n".join(data))
