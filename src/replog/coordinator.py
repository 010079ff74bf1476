"""What a failover node asks of etcd: a lease, its membership, the leader key, and nothing more.

It talks to etcd's JSON gateway (the gRPC API as JSON over HTTP, keys and values base64) through
aiohttp, which every node already uses; see docs/failover.md for why not a gRPC client. Every call
tries the given endpoints in turn and raises EtcdUnavailable when none answers.

Keys, under ``/replog/<cluster>/``:
- ``members/<name>``: ``{"name", "url"}``, attached to the node's lease (gone when the node is).
- ``leader``: ``{"name", "url"}``, attached to the leader's lease and created only if absent (a
  create-revision transaction). Its create-revision is the leader's epoch: every later leader key is
  created at a higher revision, so epochs only grow -- as long as etcd keeps its revisions.

With a user and password (etcd's authentication), the coordinator gets a token from /v3/auth/authenticate
before its first call and sends it, bare, as the Authorization header (what etcd's gateway reads). When etcd
says the token is invalid (it expired, or etcd restarted: simple tokens live in its memory) or older than
its auth store, it authenticates again once and repeats the call. TLS is the session's business (its
connector's SSL context: replog.etcd_access).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from replog import jsoncodec
from replog.lease import boottime


class EtcdError(Exception):
    """etcd answered with an error, or something that is not its JSON."""


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered in time."""


class EtcdTlsError(EtcdUnavailable):
    """No etcd endpoint answered, and one of them because its TLS handshake failed (a certificate that does
    not verify, a client certificate refused, plain HTTP where https:// was asked): a configuration error."""


class EtcdAuthError(EtcdError):
    """etcd refused the credentials, asks for credentials the node lacks, or denies the user our keys."""


class _TokenRejected(EtcdAuthError):
    """etcd no longer accepts the token (expired, etcd restarted, or its auth store changed since)."""


# etcd's words (its gateway's "message") for a token to get again, and for credentials that will not do.
_TOKEN_STALE = ("invalid auth token", "auth store is old")
_REFUSED = ("authentication failed", "user name is empty", "permission denied", "authentication is not enabled")


class LeaseLost(EtcdError):
    """The lease expired (or etcd no longer knows it): every key attached to it is gone."""


@dataclass(frozen=True)
class Leader:
    """Who holds the leader key, and its epoch (the key's create-revision)."""

    name: str
    url: str | None
    epoch: int


@dataclass(frozen=True)
class Member:
    name: str
    url: str


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(value: str) -> str:
    return base64.b64decode(value).decode()


def _prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with prefix (etcd's "prefix" range)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _int(value: Any) -> int:
    """etcd's JSON gateway sends int64 fields as strings, and leaves out zero values."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise EtcdError(f"etcd sent {value!r} where a number belongs") from None


class Coordinator:
    """One node's conversation with etcd: its lease, its member key, the leader key.

    Call grant() first; keep_alive() then every third of the TTL or so. Not safe for concurrent
    grant() calls; everything else may run concurrently.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Sequence[str],
        cluster: str,
        *,
        timeout: float = 1.0,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if (user is None) != (password is None):
            raise ValueError("an etcd user needs a password, and a password a user")
        self._user = user
        self._password = password
        self._token: str | None = None  # etcd's auth token, while it accepts it
        self._auth_lock = asyncio.Lock()  # one authentication at a time: concurrent calls share its token
        self.authentications = 0  # tokens obtained so far (the first, then one per expiry or etcd restart)
        self._session = session
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0  # the endpoint that answered last: asked first
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.prefix = f"/replog/{cluster}/"
        self.leader_key = self.prefix + "leader"
        self.lease: int | None = None
        self.ttl = 0
        self.revision = 0  # the highest etcd revision seen in any answer (how far etcd's history goes)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one gateway call (with the token, if the coordinator has a user), authenticating first when
        it has no token yet, and once more when etcd no longer accepts the one it has."""
        if self._user is None:
            return await self._post(path, body, None)
        token = self._token or await self._authenticated(None)
        try:
            return await self._post(path, body, token)
        except _TokenRejected:
            return await self._post(path, body, await self._authenticated(token))

    async def _authenticated(self, stale: str | None) -> str:
        """A token etcd accepts: the current one, unless it is stale (the one a call was just refused with)."""
        async with self._auth_lock:
            if self._token is None or self._token == stale:
                self._token = None
                data = await self._post("/v3/auth/authenticate", {"name": self._user, "password": self._password}, None)
                token = data.get("token")
                if not isinstance(token, str) or not token:
                    raise EtcdAuthError("etcd sent no token for the user (is its authentication enabled?)")
                self._token = token
                self.authentications += 1
                # Once at start, then once per expiry or etcd restart: a stream of these is a token etcd keeps
                # forgetting (an --auth-token-ttl shorter than the node's pauses between calls).
                structlog.get_logger().info("etcd_authenticated", user=self._user, times=self.authentications)
            return self._token

    async def check_access(self) -> None:
        """Authenticate (with a user) and read the cluster's members once: EtcdAuthError if etcd refuses the
        credentials or the keys, EtcdTlsError if no endpoint passes the TLS handshake, EtcdUnavailable if none
        answers. What a node asks before it starts, so that a wrong password is an error, not a silent retry."""
        if self._user is not None:
            try:
                await self._authenticated(None)
            except EtcdAuthError as exc:
                if "not enabled" in str(exc):
                    raise EtcdAuthError(
                        "etcd's authentication is not enabled, so the user would protect nothing (etcdctl auth enable)"
                    ) from None
                raise
        await self.members()

    async def _post(self, path: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        """POST one gateway call, to each endpoint in turn from the last one that answered.

        Every endpoint gets two tries: a pooled connection to an etcd that restarted fails once."""
        errors = []
        tls_failed = False
        raw = jsoncodec.dumps(body)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = token  # bare: etcd's gateway takes the header's value as the token
        for i in range(2 * len(self._endpoints)):
            index = (self._current + i) % len(self._endpoints)
            url = self._endpoints[index] + path
            try:
                async with self._session.post(url, data=raw, headers=headers, timeout=self._timeout) as resp:
                    payload = await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                tls_failed = tls_failed or _is_tls_failure(exc)
                errors.append(f"{self._endpoints[index]}: {type(exc).__name__} {exc}")
                continue
            self._current = index
            try:
                data = jsoncodec.loads(payload)
            except jsoncodec.DecodeError:
                raise EtcdError(f"etcd answered HTTP {status} with a body that is not JSON") from None
            if status != 200 or not isinstance(data, dict):
                message = data.get("message") if isinstance(data, dict) else data
                # Only etcd's own word: a bare 404 (a proxy, a wrong --etcd URL) says nothing about our lease,
                # and taking it for a lost lease would have the node grant again at once, forever.
                if isinstance(message, str) and "lease not found" in message:
                    raise LeaseLost(f"etcd: {message}")
                if isinstance(message, str) and any(m in message for m in _TOKEN_STALE):
                    raise _TokenRejected(f"etcd: {message}")
                if isinstance(message, str) and any(m in message for m in _REFUSED):
                    raise EtcdAuthError(f"etcd: {message}")
                if status >= 500 or status == 503:
                    errors.append(f"{self._endpoints[index]}: HTTP {status} {message}")
                    continue
                raise EtcdError(f"etcd answered HTTP {status}: {message}")
            header = data.get("header") or (data.get("result") or {}).get("header") or {}
            self.revision = max(self.revision, _int(header.get("revision")))
            return data
        why = "; ".join(dict.fromkeys(errors))  # each endpoint's second try tends to fail as its first did
        if tls_failed:
            raise EtcdTlsError("no etcd endpoint passed the TLS handshake: " + why)
        raise EtcdUnavailable("no etcd endpoint answered: " + why)

    # -- the lease -------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        """A new lease of ttl seconds; it becomes this coordinator's lease (for register and campaign)."""
        data = await self._call("/v3/lease/grant", {"TTL": ttl})
        if data.get("error"):
            raise EtcdError(f"etcd refused a lease: {data['error']}")
        self.lease = _int(data.get("ID"))
        self.ttl = _int(data.get("TTL")) or ttl
        return self.lease

    async def keep_alive(self) -> float:
        """Renew the lease once; return the time (lease.boottime()) the request was sent, which is
        what a LeaseDeadline counts from. LeaseLost if etcd no longer holds the lease."""
        if self.lease is None:
            raise LeaseLost("no lease granted yet")
        sent_at = boottime()
        data = await self._call("/v3/lease/keepalive", {"ID": str(self.lease)})
        result = data.get("result") or {}
        if _int(result.get("TTL")) <= 0:  # an expired or unknown lease comes back without a TTL
            raise LeaseLost(f"etcd no longer holds lease {self.lease}")
        return sent_at

    async def revoke(self) -> None:
        """Give the lease up: every key attached to it goes at once (a clean shutdown)."""
        if self.lease is not None:
            lease, self.lease = self.lease, None
            try:
                await self._call("/v3/lease/revoke", {"ID": str(lease)})
            except LeaseLost:
                pass

    # -- membership ----------------------------------------------------------------

    async def register(self, name: str, url: str) -> None:
        """Put members/<name> = {"name", "url"} under our lease."""
        value = jsoncodec.dumps({"name": name, "url": url}).decode()
        await self._call(
            "/v3/kv/put", {"key": _b64(self.prefix + "members/" + name), "value": _b64(value), "lease": str(self.lease)}
        )

    async def members(self) -> dict[str, Member]:
        """Every registered member, by name."""
        prefix = self.prefix + "members/"
        data = await self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        found = {}
        for kv in data.get("kvs") or []:
            value = _decode(kv.get("value"))
            name, url = value.get("name"), value.get("url")
            if isinstance(name, str) and isinstance(url, str):
                found[name] = Member(name, url)
        return found

    # -- the leader key ----------------------------------------------------------------

    async def leader(self) -> Leader | None:
        """Who holds the leader key now (None: nobody)."""
        return (await self.read_leader())[0]

    async def read_leader(self) -> tuple[Leader | None, int]:
        """Who holds the leader key now (None: nobody), and etcd's revision as of that read: every leader
        key created before it has a create-revision at or below it, every one created later one above."""
        data = await self._call("/v3/kv/range", {"key": _b64(self.leader_key)})
        kvs = data.get("kvs") or []
        revision = _int((data.get("header") or {}).get("revision"))
        return (_leader(kvs[0]) if kvs else None), revision

    async def campaign(self, name: str, url: str) -> tuple[bool, Leader | None]:
        """Create the leader key under our lease if nobody holds it: (won, the leader now).

        One etcd transaction: put if the key's create-revision is 0 (it does not exist), else read it.
        Having won, the epoch is the transaction's revision, which is the key's create-revision."""
        value = jsoncodec.dumps({"name": name, "url": url}).decode()
        key = _b64(self.leader_key)
        data = await self._call(
            "/v3/kv/txn",
            {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": _b64(value), "lease": str(self.lease)}}],
                "failure": [{"request_range": {"key": key}}],
            },
        )
        if data.get("succeeded"):
            return True, Leader(name, url, _int((data.get("header") or {}).get("revision")))
        responses = data.get("responses") or [{}]
        kvs = (responses[0].get("response_range") or {}).get("kvs") or []
        return False, _leader(kvs[0]) if kvs else None

    async def resign(self, epoch: int) -> bool:
        """Delete the leader key if it is still the one created at epoch (ours); True if it was."""
        key = _b64(self.leader_key)
        data = await self._call(
            "/v3/kv/txn",
            {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": str(epoch)}],
                "success": [{"request_delete_range": {"key": key}}],
                "failure": [],
            },
        )
        return bool(data.get("succeeded"))


def _is_tls_failure(exc: BaseException) -> bool:
    """Whether a failed request failed in TLS: a certificate that does not verify, an alert from etcd (say,
    a client certificate it wants and did not get), or a handshake with something that does not speak TLS."""
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return True
    return isinstance(exc.__cause__, ssl.SSLError) or isinstance(getattr(exc, "os_error", None), ssl.SSLError)


def _decode(value: Any) -> dict[str, Any]:
    try:
        data = jsoncodec.loads(_unb64(value)) if isinstance(value, str) else None
    except (ValueError, jsoncodec.DecodeError):
        data = None
    return data if isinstance(data, dict) else {}


def _leader(kv: dict[str, Any]) -> Leader:
    value = _decode(kv.get("value"))
    name = value.get("name")
    url = value.get("url")
    return Leader(
        name if isinstance(name, str) else "?", url if isinstance(url, str) else None, _int(kv.get("create_revision"))
    )
