"""GET /messages/stream: a node's visible entries as Server-Sent Events, from a seq on, then live.

One event per entry, ``id: <seq>``, ``event: message``, ``data: {"seq", "id", "text"}``; a reconnect
with ``Last-Event-ID: <seq>`` resumes after that seq. A comment line every keep-alive interval keeps an
idle stream open through proxies. The stream reads the log by position, a bounded chunk at a time,
and awaits the socket's drain after each: a consumer that cannot keep up is paced by its socket, and
the node never holds more than about two chunks for it, however far behind it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from replog.http import Handler
from replog.protocol import bad, parse_query_int

CHUNK_BYTES = 64 << 10  # encoded events written at once, at most (one entry larger than this goes alone)
CHUNK_ENTRIES = 1024  # entries encoded at once, at most
ENTRY_OVERHEAD = 64  # bytes an event adds to its text, about: id, event and data fields, JSON keys
HELLO = b"retry: 1000\n\n"  # sent first: the headers go out at once, and browsers reconnect after 1 s
KEEPALIVE = b": keep-alive\n\n"


def start_seq(request: web.Request) -> int:
    """The seq the stream resumes after: Last-Event-ID (a reconnect) over ?since=, else 0."""
    last = request.headers.get("Last-Event-ID")
    if last is not None and last.strip():
        last = last.strip()
        if not last.isascii() or not last.isdigit() or len(last) > 18:
            raise bad("invalid_last_event_id", "Last-Event-ID must be a non-negative integer, the last seq received")
        return int(last)
    return parse_query_int(request.query, "since") or 0


def chunk_end(log: Any, first: int, end: int) -> int:
    """The last seq of the chunk that starts at first: within CHUNK_BYTES and CHUNK_ENTRIES, at least first."""
    last = min(end, first + CHUNK_ENTRIES - 1)
    size = 0
    for seq in range(first, last + 1):
        size += len(log.text(seq)) + ENTRY_OVERHEAD
        if size > CHUNK_BYTES and seq > first:
            return seq - 1
    return last


def stream_handler(source: Callable[[web.Application], Any]) -> Handler:
    """GET /messages/stream[?since=SEQ] of a node, whichever its role.

    source(app) is the node: its .log is read by position up to its .durable seq (what its reads
    show), its .tail wakes the stream when that grows and closes it at shutdown, and its
    .config.stream_keepalive is the keep-alive interval.
    """

    async def get_stream(request: web.Request) -> web.StreamResponse:
        pos = start_seq(request)
        node = source(request.app)
        tail = node.tail
        keepalive = node.config.stream_keepalive
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        tail.streams += 1
        try:
            await resp.write(HELLO)
            while not tail.closed:
                end = node.durable
                if end > pos:
                    log = node.log
                    last = chunk_end(log, pos + 1, end)
                    data = node.view.events(pos + 1, last)
                    pos = last
                    await resp.write(data)  # waits while the socket's buffer is full: the consumer's pace
                elif not await tail.wait_past(pos, keepalive) and not tail.closed:
                    await resp.write(KEEPALIVE)
            await resp.write_eof()
        except ConnectionError:
            pass  # the consumer went away; it resumes with Last-Event-ID
        finally:
            tail.streams -= 1
        return resp

    return get_stream
