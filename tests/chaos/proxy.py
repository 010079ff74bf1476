"""A TCP proxy between the master and one secondary, whose network faults are switched at run time.

The master's `--secondary` URL points at the proxy, which forwards to the secondary. Modes:

- ``pass``: forward both ways;
- ``latency``: forward, each chunk delayed (order kept);
- ``drop``: existing connections are closed (FIN) and new ones are accepted then closed at once;
- ``reset``: the same with RST (SO_LINGER 0), as a peer that crashed or a firewall rejecting;
- ``partition``: a black hole: connections stay open, new ones are accepted, nothing is forwarded
  either way. Bytes already sent wait in the kernel and are delivered after the heal, late, as
  across a real partition (so the secondary may see stale replication requests after it).
- ``hold``: the master's requests are read to the end but neither forwarded nor answered, as
  packets delayed for longer than their sender lives; with capture on, they are kept for deliver().
  Entering and leaving it closes every connection, so no request is ever forwarded in part.

Besides, replay() delivers again replication requests the proxy forwarded earlier, on fresh
connections and in random order: the stale, duplicated and reordered deliveries of a network
(or a retrying middlebox) that the secondary must take without acking past a gap. And
start_capture() / stop_capture() keep every replication request the master sends meanwhile
(forwarded or held), byte for byte, for deliver() to hand to the secondary later: after the
master that sent them died and another took its place.

Cutting the connections that exist when a fault starts matters: the master keeps keep-alive
connections, which would otherwise carry on through a fault that only refuses new ones.

The proxy runs its own asyncio loop in a daemon thread so that a synchronous harness can drive it;
every public method is thread-safe and returns once the change is in effect.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import random
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Coroutine
from typing import Any


class Mode(enum.StrEnum):
    PASS = "pass"
    LATENCY = "latency"
    DROP = "drop"
    RESET = "reset"
    PARTITION = "partition"
    HOLD = "hold"

    def __str__(self) -> str:
        return self.value


CAPTURE_MAX = 512  # requests kept by one capture; later ones are not kept

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Conn:
    """One proxied connection: the master's side and, once connected, the secondary's side."""

    __slots__ = ("client", "upstream", "cut", "unframed")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.cut = False  # set when a fault closed it: the pumps stop forwarding
        self.unframed: bytearray | None = bytearray()  # master->secondary bytes not yet split into requests


def split_requests(buf: bytearray) -> list[bytes]:
    """Remove and return the complete HTTP requests (with a Content-Length body) at the front of buf."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        m = _CONTENT_LENGTH.search(bytes(buf[: end + 2]))
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(buf) < total:
            return out
        out.append(bytes(buf[:total]))
        del buf[:total]


def _abort(writer: asyncio.StreamWriter | None, rst: bool) -> None:
    """Close a connection now: with rst, as a reset (SO_LINGER 0) rather than an orderly FIN."""
    if writer is None or writer.transport.is_closing() and not rst:
        return
    sock = writer.get_extra_info("socket")
    if rst and sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    if rst:
        writer.transport.abort()
    else:
        writer.close()


class Proxy:
    """Forwards 127.0.0.1:port to upstream_host:upstream_port, with faults switched by set_mode()."""

    def __init__(
        self,
        upstream_port: int | None = None,
        *,
        host: str = "127.0.0.1",
        upstream_host: str = "127.0.0.1",
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = 0  # the listening port, known once started
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port  # may be set after construction, before the first connection
        self.stats: Counter[str] = Counter()  # connections, dropped, reset, cut, ...
        self._mode = Mode.PASS
        self._latency = 0.0  # seconds added to each forwarded chunk in LATENCY mode
        self._jitter = 0.0  # plus up to this much, drawn per chunk
        self._rng = random.Random(seed)
        self._conns: set[_Conn] = set()
        self._recorded: collections.deque[bytes] = collections.deque(maxlen=32)  # recent POST /replicate requests
        self._captured: list[bytes] | None = None  # while capturing: every POST /replicate read from the master
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None  # cleared while partitioned

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    # -- life cycle (called from the harness's thread) ---------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ------------------------------------------------------------------

    def set_mode(self, mode: Mode | str, *, latency: float = 0.0, jitter: float = 0.0) -> None:
        """Switch mode; drop and reset cut every existing connection, partition freezes them."""
        self._call(self._set_mode(Mode(mode), latency, jitter))

    def heal(self) -> None:
        """Back to plain forwarding; connections frozen by a partition resume."""
        self.set_mode(Mode.PASS)

    def cut(self, *, rst: bool = False) -> None:
        """Close every existing connection (a network blip) without changing the mode."""
        self._call(self._cut(rst))

    def replay(self, count: int) -> int:
        """Deliver again up to count replication requests forwarded earlier, at once, in random order,
        whatever the mode (they were already past the fault). Returns how many were delivered."""
        return self._call(self._replay(count), timeout=30.0)

    def forget(self) -> None:
        """Drop the recorded requests (the master restarted: its old requests are not to be replayed)."""
        self._loop.call_soon_threadsafe(self._recorded.clear)

    def start_capture(self) -> None:
        """From now on keep every replication request the master sends through the proxy (up to CAPTURE_MAX),
        whether it is forwarded or held; replay()'s recording is not affected."""
        self._call(self._set_capture([]))

    def stop_capture(self) -> list[bytes]:
        """Stop capturing; the requests captured, each exactly as the master sent it, in the order read."""
        return self._call(self._set_capture(None)) or []

    def deliver(self, requests: list[bytes]) -> int:
        """Send each request to the secondary on a fresh connection of its own, all at once, whatever
        the mode; wait for the answers (thrown away). Returns how many were answered."""
        return self._call(self._deliver_all(requests), timeout=30.0)

    # -- internals (on the proxy's loop) --------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut(rst=False)
        # Every connection handler is ours: cancel and await them, so none outlives the loop.
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _set_mode(self, mode: Mode, latency: float, jitter: float) -> None:
        assert self._flowing is not None
        before, self._mode = self._mode, mode
        self._latency = latency if mode is Mode.LATENCY else 0.0
        self._jitter = jitter if mode is Mode.LATENCY else 0.0
        if mode in (Mode.DROP, Mode.RESET):
            await self._cut(rst=mode is Mode.RESET)
        elif (mode is Mode.HOLD) != (before is Mode.HOLD):
            # Into HOLD: no connection may carry on forwarding. Out of it: a held connection lost its requests.
            await self._cut(rst=False)
        if mode is Mode.PARTITION:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _replay(self, count: int) -> int:
        picked = self._rng.sample(list(self._recorded), min(count, len(self._recorded)))
        done = await self._deliver_all(picked)
        self.stats["replayed"] += done
        return done

    async def _set_capture(self, captured: list[bytes] | None) -> list[bytes] | None:
        before, self._captured = self._captured, captured
        return before

    async def _deliver_all(self, requests: list[bytes]) -> int:
        done = await asyncio.gather(*(self._deliver(request) for request in requests))
        self.stats["delivered"] += sum(done)
        return sum(done)

    async def _deliver(self, request: bytes) -> bool:
        try:
            reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            return False
        try:
            writer.write(request)
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)  # the answer goes nowhere
            return True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return False
        finally:
            _abort(writer, rst=False)

    def _record(self, conn: _Conn, data: bytes, *, forwarded: bool = True) -> None:
        if conn.unframed is None:
            return
        conn.unframed += data
        for request in split_requests(conn.unframed):
            if request.startswith(b"POST /replicate "):
                if forwarded:
                    self._recorded.append(request)
                if self._captured is not None and len(self._captured) < CAPTURE_MAX:
                    self._captured.append(request)
                    self.stats["captured"] += 1
        if len(conn.unframed) > 64 << 20:
            conn.unframed = None  # not HTTP as we know it: stop recording this connection

    async def _sink(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        """HOLD: read the master's requests (capturing them) and send nothing anywhere, until EOF or a cut."""
        try:
            while not conn.cut:
                data = await reader.read(65536)
                if not data or conn.cut:
                    return
                self._record(conn, data, forwarded=False)
        except (ConnectionError, OSError):
            return  # the master went away (or was cut): what it sent in full is captured

    async def _cut(self, rst: bool) -> None:
        conns, self._conns = self._conns, set()
        for conn in conns:
            conn.cut = True
            _abort(conn.client, rst)
            _abort(conn.upstream, rst)
        self.stats["cut"] += len(conns)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.stats["connections"] += 1
        if self._mode is Mode.DROP:
            self.stats["dropped"] += 1
            _abort(writer, rst=False)
            return
        if self._mode is Mode.RESET:
            self.stats["reset"] += 1
            _abort(writer, rst=True)
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if self._mode is Mode.HOLD:
                await self._sink(reader, conn)
                return
            await self._flowing.wait()  # partitioned: accepted, never answered
            if conn.cut:
                return
            try:
                up_reader, conn.upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except OSError:
                # The secondary is down: the master should see a refusal, as without the proxy.
                self.stats["upstream_refused"] += 1
                _abort(writer, rst=True)
                return
            if conn.cut:  # a fault came while connecting
                _abort(conn.upstream, rst=self._mode is Mode.RESET)
                return
            await asyncio.gather(
                self._pump(reader, conn.upstream, conn, record=True), self._pump(up_reader, writer, conn)
            )
        finally:
            self._conns.discard(conn)
            if not conn.cut:
                _abort(writer, rst=False)
                _abort(conn.upstream, rst=False)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn, record: bool = False
    ) -> None:
        """Copy one direction until EOF; a failure on either side closes both."""
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not self._flowing.is_set():
                    await self._flowing.wait()
                if conn.cut:
                    return
                delay = self._latency + (self._rng.uniform(0, self._jitter) if self._jitter else 0.0)
                if delay > 0:
                    await asyncio.sleep(delay)
                    if conn.cut:
                        return
                writer.write(data)
                await writer.drain()
                if record:
                    self._record(conn, data)
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            # RuntimeError: asyncio refuses to write to a transport closed under us by a cut.
            if not conn.cut:
                _abort(conn.client, rst=False)
                _abort(conn.upstream, rst=False)
