"""The master's side of the conversation with one secondary: promise, replicate, heartbeat, read entries.

Every request carries the master's fence (epoch and id); every answer carries the node's status.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from replog import jsoncodec
from replog.protocol import ApiError, Fence, parse_hash, parse_wire_entry


class TransportError(Exception):
    """The secondary could not be reached, timed out, or failed (5xx): try again later."""


class Malformed(TransportError):
    """The node answered something no correct node sends: never take data from it."""


class Unavailable(TransportError):
    """The secondary answered that it cannot do its job (its disk failed): count it out at once."""


class Refused(Exception):
    """The secondary refused the batch for good (its log contradicts ours)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class Stale(Exception):
    """The secondary has promised a newer epoch (or this one to another master): we are deposed,
    unless it holds another log altogether (a node of another cluster, which fences nothing of ours)."""

    def __init__(self, epoch: int, log: str | None = None, seq: int = 0) -> None:
        super().__init__(f"a node has promised epoch {epoch}")
        self.epoch = epoch
        self.log = log  # the log the node holds, as its answer says
        self.seq = seq

    def foreign(self, log_id: str) -> bool:
        """The node holds entries of another log: its promises belong to another cluster."""
        return self.log is not None and self.log != log_id and self.seq > 0


@dataclass(frozen=True)
class Reply:
    """What a secondary says of itself in every answer."""

    incarnation: str  # id of the secondary's process; a new one means it restarted
    log: str | None  # identity of the log it holds, None before its first batch
    promised: int  # highest epoch it has promised ...
    promised_to: str | None  # ... to this master
    log_epoch: int  # its whole log is a prefix of the log of this epoch's master
    seq: int  # highest seq it holds durably with no gap
    hash: bytes  # its chain value at seq
    at: int = 0  # min(seq, the seq the master asked about)
    at_hash: bytes = b""  # its chain value at `at`


def parse_reply(data: object) -> Reply:
    """A node's status from an answer; TransportError if it is malformed (a node we cannot trust)."""
    if not isinstance(data, dict):
        raise TransportError("answer is not a JSON object")
    inc, seq, log = data.get("incarnation"), data.get("seq"), data.get("log")
    promised, promised_to, log_epoch = data.get("promised"), data.get("promised_to"), data.get("log_epoch")
    at = data.get("at", seq)
    h, at_hash = parse_hash(data.get("hash")), parse_hash(data.get("at_hash"))

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(inc, str) or not count(seq) or not count(promised) or not count(log_epoch):
        raise TransportError("answer lacks incarnation, seq, promised or log_epoch")
    if not count(at) or at > seq or h is None or at_hash is None:
        raise TransportError("answer has a malformed chain value")
    return Reply(
        inc,
        log if isinstance(log, str) else None,
        promised,
        promised_to if isinstance(promised_to, str) else None,
        log_epoch,
        seq,
        h,
        at,
        at_hash,
    )


class Transport(Protocol):
    async def promise(self) -> Reply: ...

    async def replicate(self, body: bytes) -> Reply: ...

    async def health(self, at: int) -> Reply: ...

    async def entries(self, since: int, limit: int) -> tuple[Reply, list[tuple[int, str | None, str, int, bytes]]]: ...

    async def roll_back(self, keep: int, keep_hash: bytes) -> Reply: ...


class HttpTransport:
    """Talks to one secondary over the app's shared ClientSession."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        fence: Callable[[], Fence | None],
        *,
        replicate_timeout: float,
        health_timeout: float,
        cluster_key: str | None = None,
    ) -> None:
        self.url = url
        self._session = session
        self._fence = fence  # the master's current epoch and id, sent with every request once it has one
        self._replicate_timeout = aiohttp.ClientTimeout(total=replicate_timeout)
        self._health_timeout = aiohttp.ClientTimeout(total=health_timeout)
        # Every internal call proves the cluster key (SPEC "Security"); never logged nor put in an error.
        self._auth = {"Authorization": f"Bearer {cluster_key}"} if cluster_key is not None else {}

    async def _exchange(
        self, method: str, path: str, timeout: aiohttp.ClientTimeout, body: bytes | None = None
    ) -> tuple[int, Any]:
        """One request: (status, decoded JSON body). TransportError if unreachable or not JSON;
        Stale if the node has promised a newer epoch."""
        fence = self._fence()
        headers = {**self._auth, **(fence.headers() if fence is not None else {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, self.url + path, data=body, headers=headers, timeout=timeout
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            # Short: it goes into every status line of a secondary that is down.
            errno = exc.os_error.errno
            raise TransportError(f"cannot connect: {os.strerror(errno) if errno else exc.os_error}") from None
        except TimeoutError:
            raise TransportError(f"no answer within {timeout.total} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        try:
            data = jsoncodec.loads(payload)
        except jsoncodec.DecodeError:
            raise TransportError(f"HTTP {status} with a body that is not JSON") from None
        error = data.get("error") if isinstance(data, dict) else None
        if status == 409 and error == "stale_epoch":
            epoch, log, seq = data.get("epoch"), data.get("log"), data.get("seq")
            raise Stale(
                epoch if isinstance(epoch, int) else 0,
                log if isinstance(log, str) else None,
                seq if isinstance(seq, int) else 0,
            )
        if status == 503 and error in ("disk_failed", "node_failed"):
            raise Unavailable(f"HTTP 503: {error}")
        return status, data

    def _ok(self, status: int, data: Any) -> Reply:
        if status == 409 and isinstance(data, dict) and data.get("error") in ("entry_conflict", "log_mismatch"):
            raise Refused(str(data.get("error")), str(data.get("detail")))
        if status != 200:
            raise TransportError(f"HTTP {status}: {data.get('error') if isinstance(data, dict) else data}")
        return parse_reply(data)

    async def promise(self) -> Reply:
        """Ask the node to promise our epoch; its position, read after the promise is durable."""
        return self._ok(*await self._exchange("POST", "/promise", self._health_timeout, b""))

    async def replicate(self, body: bytes) -> Reply:
        return self._ok(*await self._exchange("POST", "/replicate", self._replicate_timeout, body))

    async def health(self, at: int) -> Reply:
        """The node's position, with its chain value at min(its seq, at)."""
        return self._ok(*await self._exchange("GET", f"/health?at={at}", self._health_timeout))

    async def roll_back(self, keep: int, keep_hash: bytes) -> Reply:
        """Under failover: ask the node to roll back its entries past keep, where its chain value must be
        keep_hash (the last seq where our logs agree); its position afterwards, as a new incarnation."""
        body = jsoncodec.dumps({"keep": keep, "hash": keep_hash.hex()})
        return self._ok(*await self._exchange("POST", "/rollback", self._replicate_timeout, body))

    async def entries(self, since: int, limit: int) -> tuple[Reply, list[tuple[int, str | None, str, int, bytes]]]:
        """Durable entries after since (at most about limit, whole client batches) and the node's status."""
        status, data = await self._exchange("GET", f"/entries?since={since}&limit={limit}", self._replicate_timeout)
        reply = self._ok(status, data)
        raw = data.get("entries")
        if not isinstance(raw, list):
            raise TransportError("entries answer lacks entries")
        try:
            return reply, [parse_wire_entry(item) for item in raw]
        except ApiError as exc:
            raise Malformed(f"the node sent a malformed entry: {exc.detail}") from None
