"""The master's side of the conversation with one secondary: replicate a batch, ask its health."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from replog import jsoncodec


class TransportError(Exception):
    """The secondary could not be reached, timed out, or failed (5xx): try again later."""


class Refused(Exception):
    """The secondary refused the batch for good (its log contradicts ours)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class Reply:
    """What a secondary says of itself in every answer."""

    boot: str  # id of the secondary's process; a new one means it restarted
    seq: int  # highest seq it holds with no gap
    log: str | None  # identity of the log it holds
    crc_seq: int = 0  # the seq its checksum below is for: min(seq, the seq the master asked about)
    crc: int = 0  # its log's running checksum at crc_seq


class Transport(Protocol):
    async def replicate(self, body: bytes) -> Reply: ...

    async def health(self, at: int) -> Reply: ...

    async def entries(self, since: int, limit: int) -> tuple[str | None, list[list[object]]]: ...


def _reply(data: object) -> Reply:
    if not isinstance(data, dict):
        raise TransportError("answer is not a JSON object")
    boot, seq, log = data.get("boot"), data.get("seq"), data.get("log")
    crc_seq, crc = data.get("crc_seq", 0), data.get("crc", 0)
    if not isinstance(boot, str) or isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise TransportError("answer lacks boot and seq")
    if not isinstance(crc_seq, int) or not isinstance(crc, int) or not 0 <= crc_seq <= seq:
        raise TransportError("answer has a malformed checksum")
    return Reply(boot, seq, log if isinstance(log, str) else None, crc_seq, crc)


class HttpTransport:
    """Talks to one secondary over the app's shared ClientSession."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, replicate_timeout: float, health_timeout: float):
        self.url = url
        self._session = session
        self._replicate_timeout = aiohttp.ClientTimeout(total=replicate_timeout)
        self._health_timeout = aiohttp.ClientTimeout(total=health_timeout)

    async def _exchange(self, method: str, path: str, timeout: aiohttp.ClientTimeout, body: bytes | None = None) -> tuple[int, Any]:
        """One request: (status, decoded JSON body). TransportError if unreachable or not JSON."""
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self._session.request(method, self.url + path, data=body, headers=headers, timeout=timeout) as resp:
                payload = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        try:
            return status, jsoncodec.loads(payload)
        except jsoncodec.DecodeError:
            raise TransportError(f"HTTP {status} with a body that is not JSON") from None

    async def replicate(self, body: bytes) -> Reply:
        status, data = await self._exchange("POST", "/replicate", self._replicate_timeout, body)
        if status == 409 and isinstance(data, dict):
            raise Refused(str(data.get("error")), str(data.get("detail")))
        if status != 200:
            raise TransportError(f"HTTP {status}: {data.get('error') if isinstance(data, dict) else data}")
        return _reply(data)

    async def health(self, at: int) -> Reply:
        """The secondary's position, with its log's checksum at min(its seq, at)."""
        status, data = await self._exchange("GET", f"/health?at={at}", self._health_timeout)
        if status != 200:
            raise TransportError(f"HTTP {status}")
        return _reply(data)

    async def entries(self, since: int, limit: int) -> tuple[str | None, list[list[object]]]:
        """Raw entries after since (at most limit) of the secondary's durable log: (log id, [[seq, id, text]])."""
        status, data = await self._exchange("GET", f"/entries?since={since}&limit={limit}", self._replicate_timeout)
        if status != 200:
            raise TransportError(f"HTTP {status}")
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise TransportError("entries answer lacks entries")
        log = data.get("log")
        return (log if isinstance(log, str) else None), data["entries"]
