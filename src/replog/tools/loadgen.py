"""The load generator of `replog bench`: a minimal HTTP/1.1 keep-alive client in its own process.

Why not aiohttp: an aiohttp client (ClientSession, uvloop, 32 concurrent requests) spends
170-250 µs of CPU per request even against a trivial server, about what the whole replog master
spends per write; on a small machine the generator shares the cores with the cluster, so it would
measure itself. Each client here is one keep-alive connection driven entirely from its protocol
callbacks (uvloop when importable): when an answer is complete, `data_received` records it and
writes the next pre-formatted request at once, so a request costs no task, no future and no
coroutine switch. It parses the status code, Content-Length and `Connection: close`, nothing
else: no header objects, no JSON decoding of answers.

`replog bench` reports the CPU this process used (getrusage, user + system) beside the
master's (/proc/PID/stat) over the same window, so the claim is checked on every run. Measured
on a 2-core AMD EPYC shared with other test runs: against a trivial uvloop HTTP server this
client costs 21-25 µs of CPU per request (about half of it system time: loopback TCP) and drives
up to 40,000 requests/s from one process; the same client on asyncio streams (readuntil and
readexactly in a coroutine per client) cost 28-31 µs. Against the replog master (w=1, 32
clients) it costs 40-50 µs per request, as each answer then arrives on a loop wake-up of its own,
while the master spends 200-250 µs per request and is the process at the limit.

One process runs one scenario: `python -m replog.tools.loadgen SPEC_JSON`. It talks to its parent in
JSON lines on stdout:

    {"ready": true}          every connection is open; the parent snapshots CPU counters, then
                             writes one line to our stdin to start the clock
    {"done": N}              progress, five times a second
    {"result": {...}}        counts, latency percentiles, elapsed time and our CPU time

SPEC_JSON: {"host", "port", "method", "path", "body" (a latin-1 str template with %(n)d-style
placeholders for the request number, or null), "count", "clients", "loop" ("auto", "uvloop" or
"asyncio"), "stall_timeout" (seconds without a single answer before giving up)}.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

PROGRESS_INTERVAL = 0.2
RECONNECT_DELAY = 0.05  # after a failed connection, so that a refusing server is not a hot loop


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event loop to run on, and its name for the report."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
    return asyncio.new_event_loop, "asyncio"


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, body size, whether the server closes the connection) of an answer's head."""
    if not head.startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP answer: {head[:40]!r}")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        # aiohttp's web.Response always sends Content-Length; chunked answers are not needed here.
        raise ProtocolError("an answer without Content-Length")
    end = lower.index(b"\r\n", at + 2)
    return status, int(lower[at + 17 : end]), b"\r\nconnection: close" in lower


class Run:
    """One scenario: a fixed number of requests shared by closed-loop clients; counts and latencies."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        # HTTPS, verified with this CA file (spec["ca"]); None: plain HTTP.
        self.ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=spec["ca"]) if spec.get("ca") else None
        self.count: int = spec["count"]
        self.clients: int = min(spec["clients"], self.count)
        self.stall_timeout: float = spec.get("stall_timeout", 60.0)
        method, path = spec["method"], spec["path"]
        body = spec.get("body")
        self.template = None if body is None else body.encode("latin-1")
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        self.fixed: bytes | None = None
        if self.template is None:
            self.fixed = (head + "\r\n").encode()
        else:
            self.head = (
                head.replace("%", "%%") + "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            ).encode()
        self.issued = 0  # requests handed to a client
        self.done = 0  # requests answered or failed
        self.errors = 0
        self.statuses: dict[int, int] = {}  # non-2xx status -> count
        self.error_sample: str | None = None  # the first failure, for the report
        self.latencies: list[float] = []  # seconds, 2xx answers only
        self.bytes_in = 0
        self.last_answer = 0.0  # time.perf_counter() of the last completion
        self.stopping = False
        self.clients_open: set[Client] = set()
        self.connecting: set[asyncio.Task[None]] = set()  # reconnections in progress, owned here
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def next_request(self) -> bytes | None:
        """The next request's bytes, or None when every request has been handed out."""
        if self.stopping or self.issued >= self.count:
            return None
        n = self.issued
        self.issued += 1
        if self.fixed is not None:
            return self.fixed
        body = self.template % {b"n": n}  # type: ignore[operator]
        return self.head % len(body) + body

    def answered(self, status: int, size: int, latency: float) -> None:
        self.bytes_in += size
        if 200 <= status < 300:
            self.latencies.append(latency)
        else:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self._error(f"HTTP {status}")
        self._one_done()

    def failed(self, what: str) -> None:
        """A request handed out got no answer."""
        self._error(what)
        self._one_done()

    def _error(self, what: str) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = what

    def _one_done(self) -> None:
        self.done += 1
        self.last_answer = time.perf_counter()
        if self.done >= self.count and not self.finished.done():
            self.finished.set_result(None)

    async def connect(self) -> Client:
        _, client = await asyncio.get_running_loop().create_connection(
            lambda: Client(self), self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
        )
        return client

    def reconnect(self, delay: float = 0.0) -> None:
        """Replace a lost client with a new connection, in a task this run owns."""
        if self.stopping or self.issued >= self.count:
            return
        task = asyncio.ensure_future(self._reconnect(delay))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _reconnect(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            client = await self.connect()
        except OSError as exc:
            if self.next_request() is not None:  # the request this client would have sent fails
                self.failed(f"connect: {exc}")
            self.reconnect(RECONNECT_DELAY)
            return
        client.send_next()

    def stop(self) -> None:
        self.stopping = True
        for client in list(self.clients_open):
            client.close()
        for task in self.connecting:
            task.cancel()


class Client(asyncio.Protocol):
    """One closed-loop client: one connection, at most one request outstanding; each answer
    triggers the next request from inside data_received."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: tuple[int, int, bool, int] | None = None  # status, body size, close, head length
        self.started: float | None = None  # perf_counter() when the outstanding request was sent
        self.retry_delay = 0.0  # before the replacement connection: longer after a failure

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.clients_open.add(self)

    def send_next(self) -> None:
        data = self.run.next_request()
        if data is None:
            self.close()
            return
        self.started = time.perf_counter()
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self.head = (*parse_head(bytes(buf[: end + 4])), end + 4)
            except (ProtocolError, ValueError) as exc:
                self._lose(f"{type(exc).__name__}: {exc}")
                return
        status, size, close, head_len = self.head
        if len(buf) < head_len + size:
            return
        now = time.perf_counter()
        del buf[: head_len + size]
        self.head = None
        started, self.started = self.started, None
        if started is None:
            self._lose("an answer to no request")
            return
        self.run.answered(status, size, now - started)
        if close:
            self.close()  # connection_lost opens the replacement
        else:
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.clients_open.discard(self)
        if self.run.stopping:
            return
        if self.started is not None:
            self.started = None
            self.run.failed(f"connection lost: {exc or 'closed by the server'}")
            self.retry_delay = RECONNECT_DELAY
        self.run.reconnect(self.retry_delay)

    def _lose(self, what: str) -> None:
        """An answer this client cannot read: fail its request and drop the connection."""
        if self.started is not None:
            self.started = None
            self.run.failed(what)
        self.retry_delay = RECONNECT_DELAY
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run(spec: dict[str, Any], loop_name: str) -> dict[str, Any]:
    state = Run(spec)
    loop = asyncio.get_running_loop()
    clients: list[Client | None] = []
    for result in await asyncio.gather(*(state.connect() for _ in range(state.clients)), return_exceptions=True):
        clients.append(None if isinstance(result, BaseException) else result)
    emit({"ready": True})
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent's "go"

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    state.last_answer = t0
    for client in clients:
        if client is None:
            state.reconnect()
        else:
            client.send_next()
    stalled = False
    while not state.finished.done():
        await asyncio.wait({state.finished}, timeout=PROGRESS_INTERVAL)
        emit({"done": state.done})
        if not state.finished.done() and time.perf_counter() - state.last_answer > state.stall_timeout:
            stalled = True
            break
    elapsed = state.last_answer - t0
    cpu1 = cpu_seconds()
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    state.stop()
    await asyncio.gather(*state.connecting, return_exceptions=True)
    if stalled:
        # Requests in flight or never sent count as errors.
        state._error(f"no answer for {state.stall_timeout:.0f}s")
        state.errors += state.count - state.done - 1

    lat = sorted(state.latencies)
    ms = 1000.0
    return {
        "count": state.count,
        "ok": len(lat),
        "errors": state.errors,
        "statuses": {str(k): v for k, v in state.statuses.items()},
        "error_sample": state.error_sample,
        "stalled": stalled,
        "elapsed_s": elapsed,
        "cpu_s": user + system,
        "cpu_user_s": user,
        "cpu_sys_s": system,
        "p50_ms": percentile(lat, 50) * ms,
        "p99_ms": percentile(lat, 99) * ms,
        "max_ms": (lat[-1] if lat else 0.0) * ms,
        "mean_ms": (sum(lat) / len(lat) if lat else 0.0) * ms,
        "bytes_in": state.bytes_in,
        "loop": loop_name,
    }


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    factory, name = loop_factory(spec.get("loop", "auto"))
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(spec, name))
    emit({"result": result})


if __name__ == "__main__":
    main(sys.argv[1:])
