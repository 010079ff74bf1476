"""Who may call what on a node: the cluster key guards the internal endpoints, client tokens the client API.

One middleware (Guard.middleware) decides for every node role, from one table of what each route needs:

- internal (POST /replicate, POST /promise, GET /entries, a failover node's POST /rollback, and a master's
  GET /health: with its fence headers or ?at=SEQ): the cluster key, when the node has one;
- write (POST /messages): a `write` token, when the node has a token file;
- read (every other route: GET /messages, /messages/stream, /health, /log, /metrics): a `read` or `write`
  token, when the node has a token file;
- open (GET /livez, /readyz, /openapi.json, and the dashboard's page and assets GET / and /ui/{name}): nobody
  is asked for anything (probes, client generators, and a browser, which cannot send a bearer token when it
  opens a page; the page holds no data and sends the token it is given with every request it makes).

The cluster key is accepted wherever a token is: whoever holds it can already do anything. Every secret is
compared with hmac.compare_digest, and none is ever logged, shown or put in an error message.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import ipaddress
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from replog.edge import heartbeat
from replog.http import Handler, error_response

MIN_KEY_LENGTH = 16  # characters of a cluster key at least: shorter ones can be guessed


class Need(enum.IntEnum):
    """What a route asks of its caller; a grant of a higher level includes the lower ones."""

    OPEN = 0
    READ = 1
    WRITE = 2
    INTERNAL = 3


# (method, route) -> what it needs; a route not named here needs READ (a new read endpoint is guarded
# by default). HEAD is treated as GET.
ROUTES: dict[tuple[str, str], Need] = {
    ("POST", "/replicate"): Need.INTERNAL,
    ("POST", "/promise"): Need.INTERNAL,
    ("GET", "/entries"): Need.INTERNAL,
    ("POST", "/rollback"): Need.INTERNAL,  # replog node only: a new master rolls back a contradicting tail
    ("POST", "/messages"): Need.WRITE,
    ("GET", "/livez"): Need.OPEN,
    ("GET", "/readyz"): Need.OPEN,
    ("GET", "/openapi.json"): Need.OPEN,
    ("GET", "/"): Need.OPEN,  # the dashboard: static files only; its reads of /health and /messages are guarded
    ("GET", "/ui/{name}"): Need.OPEN,
}

ROLES = {"read": Need.READ, "write": Need.WRITE}


class SecretError(ValueError):
    """A cluster key or token file that a node must not start with; the message is one line, naming no secret."""


def is_loopback(host: str) -> bool:
    """Whether listening on host is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name (or "" = every interface): it may resolve beyond loopback


def check_key(key: str, source: str) -> str:
    """The cluster key as given (surrounding whitespace, a file's final newline, dropped); SecretError if it
    is too short or holds characters an HTTP header cannot carry."""
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH:
        raise SecretError(f"the cluster key in {source} must be at least {MIN_KEY_LENGTH} characters long")
    if not all("!" <= c <= "~" for c in key):
        raise SecretError(f"the cluster key in {source} must be printable ASCII without spaces")
    return key


def read_key_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise SecretError(f"cannot read the cluster key file {path}: {reason}") from None
    return check_key(text, path)


def parse_tokens(text: str, source: str) -> dict[bytes, Need]:
    """Lines `<role> <token>` (role read or write); blank lines and # comments are skipped.
    SecretError names the first bad line (by number, never its token)."""
    tokens: dict[bytes, Need] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{source} line {number}"
        if len(fields) != 2:
            raise SecretError(f"{where}: expected `<role> <token>` (role read or write)")
        role, token = fields
        if role not in ROLES:
            raise SecretError(f"{where}: the role must be read or write, not {role[:20]!r}")
        if not all("!" <= c <= "~" for c in token):
            raise SecretError(f"{where}: a token must be printable ASCII")
        raw = token.encode()
        if tokens.get(raw, ROLES[role]) != ROLES[role]:
            raise SecretError(f"{where}: this token is given two roles")
        tokens[raw] = ROLES[role]
    if not tokens:
        raise SecretError(f"{source} holds no token: nobody could use the client API")
    return tokens


def read_token_file(path: str) -> dict[bytes, Need]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise SecretError(f"cannot read the token file {path}: {reason}") from None
    return parse_tokens(text, path)


def _bearer(header: str | None) -> bytes | None:
    """The credential of `Authorization: Bearer <credential>` (scheme case-insensitive, RFC 6750); None if
    the header is absent or of another form."""
    if header is None:
        return None
    scheme, sep, credential = header.partition(" ")
    if not sep or scheme.lower() != "bearer" or not credential:
        return None
    try:
        return credential.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None  # no secret holds such characters


@dataclass
class Guard:
    """The secrets one node checks: its cluster key (None: internal endpoints are open) and its client
    tokens (None: the client API is open). reload() re-reads the token file."""

    cluster_key: str | None = None
    token_file: str | None = None

    def __post_init__(self) -> None:
        self._key = self.cluster_key.encode() if self.cluster_key is not None else None
        self.tokens = read_token_file(self.token_file) if self.token_file is not None else None
        self.logger = structlog.get_logger()

    def __repr__(self) -> str:  # never the key
        return f"Guard(cluster_key={'set' if self._key else None}, token_file={self.token_file!r})"

    def reload(self) -> bool:
        """Re-read the token file (SIGHUP); a bad new file keeps the tokens in force and logs why."""
        if self.token_file is None:
            return False
        try:
            tokens = read_token_file(self.token_file)
        except SecretError as exc:
            self.logger.error("tokens_not_reloaded", error=str(exc), detail="the previous tokens stay in force")
            return False
        self.tokens = tokens
        self.logger.info("tokens_reloaded", tokens=len(tokens))
        return True

    def grant(self, header: str | None) -> Need | None:
        """What the Authorization header proves: INTERNAL for the cluster key, a token's role, or None.
        Every known secret is compared (constant time each), so timing tells nothing of which matched."""
        credential = _bearer(header)
        if credential is None:
            return None
        granted: Need | None = None
        if self._key is not None and hmac.compare_digest(credential, self._key):
            granted = Need.INTERNAL
        for token, role in (self.tokens or {}).items():
            if hmac.compare_digest(credential, token) and granted is None:
                granted = role
        return granted

    def need(self, request: web.Request) -> Need:
        """What this request must prove, as far as this node's secrets go (OPEN where it has none)."""
        route = request.match_info.route
        resource = route.resource
        if request.match_info.http_exception is not None or resource is None:
            return Need.OPEN  # no such route: the 404/405 tells nothing
        method = "GET" if request.method == "HEAD" else request.method
        need = ROUTES.get((method, resource.canonical), Need.READ)
        if need is Need.READ and resource.canonical == "/health" and heartbeat(request):
            need = Need.INTERNAL
        if need is Need.INTERNAL:
            return need if self._key is not None else Need.OPEN
        if need is not Need.OPEN and self.tokens is None:
            return Need.OPEN
        return need

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse before the handler runs: a refused request reads no body and changes nothing."""
        need = self.need(request)
        if need is Need.OPEN:
            return await handler(request)
        granted = self.grant(request.headers.get("Authorization"))
        # A client token on an internal endpoint is just another key (SPEC): 401, like no key at all.
        if granted is None or (need is Need.INTERNAL and granted < need):
            what = "the cluster key" if need is Need.INTERNAL else "a token"
            resp = error_response(401, "unauthorized", f"this endpoint needs {what} as Authorization: Bearer")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="replog"'
            return resp
        if granted < need:
            return error_response(403, "forbidden", "a read token cannot append; this needs a write token")
        return await handler(request)

    def install(self, app: web.Application) -> None:
        """Guard app's routes, and reload the token file on SIGHUP while it serves."""
        app.middlewares.append(self.middleware)
        if self.token_file is not None:
            app.on_startup.append(self._watch_sighup)
            app.on_cleanup.append(self._unwatch_sighup)

    async def _watch_sighup(self, app: web.Application) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (ValueError, RuntimeError, NotImplementedError):
            self.logger.warning("sighup_not_watched", detail="the token file reloads only on a restart")

    async def _unwatch_sighup(self, app: web.Application) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (ValueError, RuntimeError, NotImplementedError):
            pass


def bearer_headers(secret: str | None) -> dict[str, str]:
    """The header that presents secret (a cluster key or a token), or none."""
    return {"Authorization": f"Bearer {secret}"} if secret is not None else {}
