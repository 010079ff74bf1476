"""A node's network edge: TLS contexts, and the bounds every node puts on the connections it accepts.

- TLS: Python's ssl only. `server_context` serves HTTPS (and, with a client CA, asks callers for a
  certificate); `client_context` verifies the nodes this one calls, and presents this node's own
  certificate for mutual TLS.
- Connections: at most `max_connections` at once. At the cap a new connection displaces the one that
  has waited longest for a request (idle, or still sending its request head), as nginx reuses its idle
  connections; when every connection is busy with a request, the new one gets `503 overloaded` and is
  closed. A request head must arrive whole within `read_timeout` seconds of its first byte (of the
  connection's opening, for its first request), and a body may not stall for `read_timeout` seconds:
  `408 request_timeout`. The node raises its own descriptor limit to fit the cap plus a reserve for its
  own outbound connections and files, or lowers the cap to fit the limit: accept() never runs out.
- TLS under the gate: a node serving HTTPS counts a connection from its TCP accept, before its handshake
  (`Guarded` puts asyncio's TLS protocol under the connection itself, as loop.start_tls does, but at once in
  connection_made, so that no byte is read before it: uvloop starts reading right after connection_made), so
  connections still handshaking count against the cap, are displaced like idle ones, and are dropped when
  the handshake outlasts `read_timeout`.
- Room for replication: a connection that carried an accepted internal request (a master's) is never
  displaced, and client requests (streams, long polls, reads, writes) hold at most `client_cap` connections
  at once (90% of the cap): past it a client request gets `503 overloaded` and its connection closes.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import resource
import socket
import ssl
from collections import OrderedDict
from typing import Any

from aiohttp import web, web_protocol

from replog import jsoncodec
from replog.config import LISTEN_BACKLOG, Tls
from replog.protocol import EPOCH_HEADER, MASTER_HEADER, ApiError


class TlsConfigError(ValueError):
    """A TLS option names a file that is missing, unreadable or does not fit (a key not matching its cert)."""


class BodyTimeout(TimeoutError):
    """A request body stalled longer than the read timeout (a TimeoutError: aiohttp's lingering read expects one)."""


def load_chain(ctx: ssl.SSLContext, cert: str, key: str | None, flags: str = "--tls-cert/--tls-key") -> None:
    """Load a certificate and its key into ctx; TlsConfigError naming the flags (cert/key) otherwise."""
    cert_flag, key_flag = flags.split("/")
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TlsConfigError(f"{flags}: no such file: {exc.filename or cert}") from None
    except ssl.SSLError as exc:
        why = "the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(exc) else exc.reason or exc
        raise TlsConfigError(f"{cert_flag} {cert} / {key_flag} {key}: {why}") from None
    except OSError as exc:
        raise TlsConfigError(f"{flags}: cannot read {exc.filename or cert}: {exc.strerror}") from None


def load_ca(ctx: ssl.SSLContext, ca: str, flag: str) -> None:
    """Trust the CA certificates of the PEM file ca in ctx; TlsConfigError naming the flag otherwise."""
    try:
        ctx.load_verify_locations(cafile=ca)
    except FileNotFoundError:
        raise TlsConfigError(f"{flag}: no such file: {ca}") from None
    except ssl.SSLError as exc:
        raise TlsConfigError(f"{flag} {ca}: not a PEM CA certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsConfigError(f"{flag}: cannot read {ca}: {exc.strerror}") from None


def server_context(tls: Tls) -> ssl.SSLContext | None:
    """The context a node serves HTTPS with, or None for plain HTTP. TlsConfigError if a file is bad.

    With client_ca the node asks every caller for a certificate and verifies any it gets against
    client_ca (a bad one fails the handshake); callers without one still connect, and `requires_peer_cert`
    tells the internal endpoints apart (clients need no certificate to read or write).
    """
    if tls.cert is None and tls.key is None:
        if tls.client_ca is not None:
            raise TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS runs over HTTPS")
        return None
    if tls.cert is None:
        raise TlsConfigError("--tls-key needs --tls-cert")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_chain(ctx, tls.cert, tls.key)
    if tls.client_ca is not None:
        load_ca(ctx, tls.client_ca, "--tls-client-ca")
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(tls: Tls) -> ssl.SSLContext:
    """The context a node calls other nodes with: verifies them against tls.ca (the system's CAs without
    one), and presents this node's own certificate (for nodes that want mutual TLS)."""
    ctx = ssl.create_default_context()
    if tls.ca is not None:
        load_ca(ctx, tls.ca, "--tls-ca")
    if tls.cert is not None:
        load_chain(ctx, tls.cert, tls.key)
    return ctx


INTERNAL_PATHS = frozenset({"/replicate", "/promise", "/entries", "/rollback"})  # and /health when a master's heartbeat


def heartbeat(request: web.Request) -> bool:
    """Whether a GET /health is a master's call: a heartbeat (fenced) or a position read (?at=SEQ, fenced or not,
    at start-up). auth and the connection gate both ask this one function, so they never disagree."""
    return "at" in request.query or EPOCH_HEADER in request.headers or MASTER_HEADER in request.headers


def internal(request: web.Request) -> bool:
    """Whether request is a master's (an internal endpoint): replication, promises, recovery reads, heartbeats."""
    return request.path in INTERNAL_PATHS or (request.path == "/health" and heartbeat(request))


@web.middleware
async def internal_needs_peer_cert(request: web.Request, handler: Any) -> web.StreamResponse:
    """With --tls-client-ca: an internal request on a connection without a verified client certificate is
    403 client_certificate_required (the handshake already refused a certificate our CA did not sign)."""
    if internal(request):
        transport = request.transport
        if transport is None or not transport.get_extra_info("peercert"):
            raise ApiError(
                403, "client_certificate_required", "internal endpoints need a client certificate (mutual TLS)"
            )
    return await handler(request)


# -- descriptors --------------------------------------------------------------------------------------------


def fit_descriptors(max_connections: int, reserve: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to fit max_connections + reserve (as far as the hard limit
    allows); the connection cap that fits the limit then in force (max_connections, or less)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - reserve))


# -- listening ----------------------------------------------------------------------------------------------


class Listener(socket.socket):
    """A listening socket whose kernel queue is LISTEN_BACKLOG whatever backlog asyncio asks for: asyncio
    accepts as many connections in one loop pass as the backlog it was given, before any of them reaches the
    gate, so the node asks it for a small one (ACCEPT_BATCH) to keep the descriptors in flight few."""

    def listen(self, backlog: int = LISTEN_BACKLOG) -> None:
        super().listen(max(backlog, LISTEN_BACKLOG))


# -- the connection gate ------------------------------------------------------------------------------------


def _raw_json(status: int, reason: str, body: dict[str, str], extra: str = "") -> bytes:
    payload = jsoncodec.dumps(body)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode() + payload


OVERLOADED = _raw_json(
    503,
    "Service Unavailable",
    {"error": "overloaded", "detail": "this node holds as many connections as it accepts; try again shortly"},
    "Retry-After: 1\r\n",
)
LINGER_MAX = 32  # refused connections kept half-closed at once (the descriptor reserve covers them)
HEAD_TIMEOUT = _raw_json(
    408,
    "Request Timeout",
    {"error": "request_timeout", "detail": "the request head did not arrive in time; the connection is closed"},
)


class Gate:
    """The connections one node holds: admits up to max_connections, displaces the longest-waiting idle one
    at the cap, and drops connections whose request head or body stalls past read_timeout."""

    def __init__(self, max_connections: int, read_timeout: float) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        # Client requests in flight at once: the rest of the cap stays free for a master's connections.
        self.client_cap = max(1, max_connections - max(1, max_connections // 10))
        self.clients: set[Guarded] = set()  # connections handling a client (not internal) request now
        self.internal: set[Guarded] = set()  # connections that carried an accepted internal request
        self.live: set[Guarded] = set()  # admitted and not yet lost
        self.idle: OrderedDict[Guarded, None] = OrderedDict()  # live and not handling a request, longest-waiting first
        self.refused = 0  # connections answered 503 overloaded
        self.displaced = 0  # idle connections closed to make room
        self.timed_out = 0  # connections dropped for a stalled head or body
        self.lingering = 0  # refused connections half-closed, waiting for the caller to close
        self._sweeping: asyncio.TimerHandle | None = None

    def admit(self, conn: Guarded) -> bool:
        """Take conn in; False when at the cap with every connection busy (the caller refuses it)."""
        if len(self.live) >= self.max_connections:
            if not self.idle:
                self.refused += 1
                return False
            old, _ = self.idle.popitem(last=False)
            self.live.discard(old)
            self.displaced += 1
            old.force_close()
        self.live.add(conn)
        self.idle[conn] = None
        if self._sweeping is None:
            self._schedule(conn._loop)
        return True

    def busy(self, conn: Guarded) -> None:
        self.idle.pop(conn, None)

    def waiting(self, conn: Guarded) -> None:
        self.clients.discard(conn)
        if conn in self.live and conn not in self.internal:
            self.idle[conn] = None
            self.idle.move_to_end(conn)

    def client_request(self, conn: Guarded) -> bool:
        """Let conn handle a client request; False when client requests already hold client_cap connections."""
        if conn not in self.clients and len(self.clients) >= self.client_cap:
            self.refused += 1
            return False
        self.clients.add(conn)
        return True

    def carried_internal(self, conn: Guarded) -> None:
        """conn is a master's: never displaced, so a flood of clients cannot cut replication off."""
        if conn in self.live:
            self.internal.add(conn)
            self.idle.pop(conn, None)

    def lost(self, conn: Guarded) -> None:
        self.live.discard(conn)
        self.idle.pop(conn, None)
        self.clients.discard(conn)
        self.internal.discard(conn)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        tick = min(1.0, self.read_timeout / 4)
        self._sweeping = loop.call_later(tick, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop every connection whose head or body has stalled past the read timeout."""
        self._sweeping = None
        now = loop.time()
        limit = self.read_timeout
        for conn in list(self.live):
            if conn._stalled(now, limit):
                self.timed_out += 1
        if self.live:
            self._schedule(loop)


class Guarded(web_protocol.RequestHandler):
    """aiohttp's request handler under a Gate: `guarded(base, gate)` makes the class a server uses."""

    gate: Gate  # set on the class `guarded` makes
    tls: ssl.SSLContext | None = None  # serve HTTPS: the handshake runs under the gate (`_secure`)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._raw: Any = None  # with tls: the TCP transport, from accept on
        self._secured = False  # with tls: the handshake is done and aiohttp has the TLS transport
        self._handshake: asyncio.Task[None] | None = None
        self._early: list[bytes] = []  # with tls: request bytes that came with the handshake's end, before aiohttp
        now = self._loop.time()
        self._opened = now
        self._head_since: float | None = None  # first byte of a request head not yet whole
        self._last_data = now
        self._request: Any = None  # the request being handled
        self._served = 0  # requests handled on this connection
        self._refused = False  # over the cap: answered 503 and closing
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        if self.tls is not None:
            # The TCP connection: counted from now, so a handshake that never ends still takes a slot of the cap.
            self._raw = transport
            if not self.gate.admit(self):
                self._refused = True
                transport.abort()  # no HTTP can be spoken before the handshake: the caller sees a closed connection
                return
            # The TLS layer goes between the connection and us now, before a byte is read: what loop.start_tls
            # does, minus its trip through the loop (uvloop starts reading as soon as connection_made returns,
            # and the client's first handshake bytes came to us as request bytes: the handshake then waited for
            # them until the read timeout). asyncio's own SSLProtocol, on either loop.
            waiter: asyncio.Future[None] = self._loop.create_future()
            layer = asyncio.sslproto.SSLProtocol(
                self._loop,
                self,
                self.tls,
                waiter,
                server_side=True,
                call_connection_made=False,
                ssl_handshake_timeout=self.gate.read_timeout,
            )
            transport.set_protocol(layer)
            layer.connection_made(transport)
            self._handshake = self._loop.create_task(self._secure(layer, waiter))
            return
        if not self.gate.admit(self):
            self._refused = True
            self._refuse(transport)
            return
        super().connection_made(transport)

    async def _secure(self, layer: asyncio.sslproto.SSLProtocol, waiter: asyncio.Future[None]) -> None:
        """Wait for the TLS handshake (bounded by read_timeout), then hand aiohttp the TLS transport."""
        try:
            await waiter
            secured = layer._app_transport  # what loop.start_tls returns
        except (Exception, asyncio.CancelledError):
            secured = None  # a failed or timed-out handshake, or a connection displaced or lost meanwhile
        self._handshake = None
        raw = self._raw
        if secured is None or secured.is_closing() or self not in self.gate.live:
            self.gate.lost(self)
            raw.abort()
            return
        self._secured = True
        super().connection_made(secured)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def force_close(self) -> None:
        if self._raw is not None and not self._secured:
            self._raw.abort()  # still handshaking: aiohttp has no transport to close yet
            return
        super().force_close()

    def _refuse(self, transport: Any) -> None:
        """Answer 503 overloaded. Closing at once would reset the connection under the request the caller is
        sending, and it might never read the answer: a few refused connections (LINGER_MAX) stay half-closed
        until the caller closes, for a second at most; past those, they close at once."""
        gate = self.gate
        transport.write(OVERLOADED)
        if gate.lingering < LINGER_MAX and transport.can_write_eof():
            gate.lingering += 1
            self._linger = self._loop.call_later(1.0, transport.close)
            transport.write_eof()
        else:
            transport.close()

    def eof_received(self) -> None:
        if self._refused:
            return None  # the caller closed its side: the transport closes
        return super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            if self._linger is not None:
                self._linger.cancel()
                self.gate.lingering -= 1
            return
        self.gate.lost(self)
        if self._raw is not None and not self._secured:
            if self._handshake is not None:
                self._handshake.cancel()
            return  # lost before or during its handshake: aiohttp never had it
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._raw is not None and not self._secured:
            self._early.append(data)  # decrypted before `_secure` resumed: handed to aiohttp once it has the transport
            return
        now = self._loop.time()
        self._last_data = now
        if self._request is None and self._head_since is None:
            self._head_since = now
        super().data_received(data)
        if self._messages:
            self.gate.busy(self)  # a whole request waits to be handled: never displaced now

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        self.gate.busy(self)
        self._head_since = None
        self._request = request
        self._last_data = self._loop.time()
        master = internal(request)
        if not master and not self.gate.client_request(self):
            request_handler = _overloaded
        try:
            answer = await super()._handle_request(request, start_time, request_handler)
            if master and answer[0].status < 400:
                self.gate.carried_internal(self)  # an accepted internal call (a refused one proves nothing)
            return answer
        finally:
            self._request = None
            self._served += 1
            self.gate.waiting(self)

    def _stalled(self, now: float, limit: float) -> bool:
        """Drop this connection (or fail its body) if it stalled past limit seconds; True if it did."""
        if self._raw is not None and not self._secured:
            if now - self._opened <= limit:
                return False
            self._raw.abort()  # a handshake past the read timeout (start_tls bounds it too; this also under uvloop)
            return True
        request = self._request
        if request is not None:
            content = request.content
            if not content.is_eof() and now - self._last_data > limit and content.exception() is None:
                # The handler's body read raises BodyTimeout: it answers 408 and the connection closes.
                content.set_exception(BodyTimeout())
                self.close()
                return True
            return False
        started = self._head_since if self._head_since is not None else (self._opened if not self._served else None)
        if started is None or now - started <= limit or self.transport is None:
            return False
        self.transport.write(HEAD_TIMEOUT)
        self.force_close()
        return True


async def _overloaded(request: web.BaseRequest) -> web.StreamResponse:
    """The answer to a client request past the gate's client share (the connection closes after it)."""
    response = web.Response(
        status=503,
        body=OVERLOADED.split(b"\r\n\r\n", 1)[1],
        content_type="application/json",
        headers={"Retry-After": "1"},
    )
    response.force_close()
    return response


_serving: Gate | None = None  # the gate of this process's server (one per process: `replog` serves one node)


def serving_gate() -> Gate | None:
    """The gate of the server this process runs, for /metrics; None before `guarded` made one (in tests)."""
    return _serving


def guarded(
    base: type[web_protocol.RequestHandler], gate: Gate, tls: ssl.SSLContext | None = None
) -> type[web_protocol.RequestHandler]:
    """A request-handler class derived from base whose connections the gate bounds; with tls it serves HTTPS,
    running each handshake itself after the gate admitted the TCP connection (give the server no ssl context).
    The gate becomes this process's serving_gate()."""
    global _serving
    _serving = gate
    return type(f"Guarded{base.__name__}", (Guarded, base), {"gate": gate, "tls": tls})
