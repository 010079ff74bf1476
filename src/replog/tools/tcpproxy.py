"""A TCP proxy whose link can be cut at run time: to cut one node off from etcd only, say.

A plain byte pump, so it carries any protocol (etcd's gRPC over HTTP/2, or HTTP/1.1). Modes:

- ``pass``: forward both ways;
- ``partition``: a black hole, as a real network partition: open connections stay open but nothing
  crosses either way, new ones are accepted and never forwarded. The peer learns of it only by its
  own timeouts. Healing lets what was sent meanwhile through, late.
- ``reset``: every open connection is reset (RST) and new ones are reset at once: a refusal.

It runs its own asyncio loop in a daemon thread so that synchronous code can drive it; every
public method is thread-safe and returns once the change is in effect. (tests/chaos/proxy.py is the
chaos suite's richer proxy, which also captures and replays replication requests.)
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any


class LinkMode(enum.StrEnum):
    PASS = "pass"
    PARTITION = "partition"
    RESET = "reset"


def _abort(writer: asyncio.StreamWriter | None, rst: bool) -> None:
    if writer is None:
        return
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()
    else:
        writer.close()


class TcpProxy:
    """Listens on host:port (free unless given) and forwards to upstream_host:upstream_port."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1", upstream_host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = LinkMode.PASS
        self.connections = 0  # accepted so far
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpProxy:
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

    def set_mode(self, mode: LinkMode | str) -> None:
        self._call(self._set_mode(LinkMode(mode)))

    def partition(self) -> None:
        self.set_mode(LinkMode.PARTITION)

    def reset(self) -> None:
        self.set_mode(LinkMode.RESET)

    def heal(self) -> None:
        self.set_mode(LinkMode.PASS)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- on the proxy's loop ----------------------------------------------------------

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
        self._cut(rst=False)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cut(self, rst: bool) -> None:
        pairs, self._pairs = self._pairs, set()
        for client, upstream in pairs:
            _abort(client, rst)
            _abort(upstream, rst)

    async def _set_mode(self, mode: LinkMode) -> None:
        assert self._flowing is not None
        self.mode = mode
        if mode is LinkMode.RESET:
            self._cut(rst=True)
        if mode is LinkMode.PARTITION:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections += 1
        if self.mode is LinkMode.RESET:
            _abort(writer, rst=True)
            return
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._pairs.add(pair)
        try:
            await self._flowing.wait()  # partitioned: accepted, never forwarded
            try:
                up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except OSError:
                _abort(writer, rst=True)  # upstream down: refuse, as without the proxy
                return
            if pair not in self._pairs:  # cut while connecting
                _abort(up_writer, rst=True)
                return
            self._pairs.discard(pair)
            pair = (writer, up_writer)
            self._pairs.add(pair)
            await asyncio.gather(self._pump(reader, up_writer, pair), self._pump(up_reader, writer, pair))
        finally:
            if pair in self._pairs:
                self._pairs.discard(pair)
                _abort(pair[0], rst=False)
                _abort(pair[1], rst=False)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None],
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not self._flowing.is_set():
                    await self._flowing.wait()
                if pair not in self._pairs:
                    return
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            if pair in self._pairs:
                self._pairs.discard(pair)
                _abort(pair[0], rst=False)
                _abort(pair[1], rst=False)
