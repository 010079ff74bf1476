"""replog.Client: appends, reads, follows and asks a replog cluster about its health.

One ClientSession per Client. Every write carries an id (the caller's, or one made here), so a retry
after a lost connection, a reset or a 503 never stores a message twice. Failed requests are retried
with capped, jittered backoff (replog.backoff) for retry_for seconds, moving on to the next URL when
one cannot be reached and to the master a not_master answer names.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from replog import jsoncodec
from replog.backoff import Backoff
from replog.client.errors import NotMaster, ReplogError, Unavailable, WriteConcernTimeout, from_answer, unreachable
from replog.client.sse import EventParser
from replog.client.types import Appended, AppendedBatch, Entry, Page

if TYPE_CHECKING:
    from replog.client.producer import Producer

W = int | str  # 1..N+1, "majority" or "all"

RETRY_BACKOFF = Backoff(0.05, 2.0)  # first retry after 25-50 ms, then doubling up to 1-2 s

# What a retry may get past: the connection failed, or the node could not take the request now.
NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def normalize_url(url: str) -> str:
    """A node's base URL: http:// when no scheme is given, no trailing slash. ValueError if it is none."""
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    try:
        parsed = URL(raw)
    except (ValueError, TypeError):
        raise ValueError(f"{url!r} is not a node URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not a node URL (expected http://host:port)")
    return str(parsed).rstrip("/")


def new_id() -> str:
    """A client-made id: random, and never of the form a log generates (<8 chars>-<seq>)."""
    return uuid.uuid4().hex


class Client:
    """An asyncio client of a replog cluster; use it as ``async with replog.Client(urls) as log:``.

    urls: one base URL or several (the master's, a secondary's; "host:port" means http://). Writes go
    to the master (the first URL that takes them); reads and follow() go to the first URL that answers.
    token is sent as ``Authorization: Bearer``; ca is a CA file to verify https:// nodes with.
    retry_for: seconds a request keeps retrying failures that a retry may get past (None: no limit).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str | None = None,
        ca: str | None = None,
        *,
        retry_for: float | None = 30.0,
        backoff: Backoff = RETRY_BACKOFF,
        connect_timeout: float = 5.0,
        stream_timeout: float = 45.0,
    ) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise ValueError("a Client needs at least one node URL")
        self.urls = [normalize_url(u) for u in listed]
        self.retry_for = retry_for
        self.backoff = backoff
        self.stream_timeout = stream_timeout  # seconds without a byte (an event or a keep-alive) before reconnecting
        self._headers = {"Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=ca) if ca is not None else None
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._master = self.urls[0]  # where writes go: learnt from answers
        self._reader = self.urls[0]  # where reads go: the first URL that answered

    async def __aenter__(self) -> Client:
        self.session  # noqa: B018 - created now, inside the loop that will use it
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self._session

    @property
    def master(self) -> str:
        """The URL writes go to now."""
        return self._master

    # -- writes ----------------------------------------------------------------------------

    async def append(
        self, text: str, *, w: W | None = None, id: str | None = None, timeout: float | None = None
    ) -> Appended:
        """Append one message and return its entry once w nodes hold it (w None: the master's default).

        Raises WriteConcernTimeout (stored, w not met in time), Rejected (4xx), NoQuorum, NotMaster or
        Unavailable once retry_for has passed.
        """
        body = _write_body({"message": text}, w, id if id is not None else new_id(), timeout)
        status, data = await self.post_messages(body)
        return Appended(data["seq"], data["id"], data["text"], data["w"], data["acks"], status == 201)

    async def append_batch(
        self, texts: Sequence[str], *, w: W | None = None, id: str | None = None, timeout: float | None = None
    ) -> AppendedBatch:
        """Append texts as one batch, consecutive seqs, all or nothing; entry i gets the id <id>:<i>."""
        body = _write_body({"messages": list(texts)}, w, id if id is not None else new_id(), timeout)
        status, data = await self.post_messages(body)
        return AppendedBatch([Entry.of(e) for e in data["entries"]], data["w"], data["acks"], status == 201)

    async def post_messages(
        self, body: dict[str, Any], on_retry: Callable[[ReplogError, float], Awaitable[None] | None] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST /messages to the master, retrying what a retry may get past; (status, body) of a 2xx.

        body must carry an id when it may be retried: the master then stores it once, however many
        attempts reach it. on_retry(error, delay) is told of each failure that will be retried.
        """
        raw = jsoncodec.dumps(body)
        deadline = None if self.retry_for is None else time.monotonic() + self.retry_for
        failures = 0
        redirects = 0  # not_master answers that named another node: followed at once, a few times in a row
        secondaries: set[str] = set()  # URLs that said they are secondaries and named no master
        while True:
            url = self._master
            try:
                async with self.session.post(url + "/messages", data=raw) as resp:
                    status, data = resp.status, await _json(resp)
            except NETWORK_ERRORS as exc:
                error: ReplogError = unreachable(url, exc)
                self._master = self._next(url)
            else:
                if status < 300 and isinstance(data, dict):
                    return status, data
                error = from_answer(status, data)
                if isinstance(error, NotMaster):
                    if error.master is None and error.body.get("role") == "secondary":
                        secondaries.add(url)
                        if secondaries >= set(self.urls):
                            raise error  # no URL given is the master's: waiting will not make one
                    self._master = normalize_url(error.master) if error.master else self._next(url)
                    if error.master and self._master != url and redirects < 3:
                        redirects += 1
                        continue  # the node named the master: go there now, a redirect is no failure
                elif not isinstance(error, Unavailable) or isinstance(error, WriteConcernTimeout):
                    raise error  # a 4xx or a 504: a retry would get the same answer
            redirects = 0
            failures += 1
            delay = self.backoff.delay(failures)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise error
            if on_retry is not None:
                note = on_retry(error, delay)
                if note is not None:
                    await note
            await asyncio.sleep(delay)

    def producer(
        self, *, w: W | None = None, linger: float = 0.002, max_batch: int = 1000, timeout: float | None = None
    ) -> Producer:
        """A Producer that coalesces concurrent append()s into batch writes: ``async with log.producer() as p:``."""
        from replog.client.producer import Producer

        return Producer(self, w=w, linger=linger, max_batch=max_batch, timeout=timeout)

    # -- reads -----------------------------------------------------------------------------

    async def read(self, since: int = 0, limit: int | None = None, *, wait: float | None = None) -> Page:
        """The entries after since (at most limit) that a node shows, as a list whose last_seq is the
        highest seq the node shows; with wait (0 < wait <= 60), a long-poll: when none is there yet,
        wait up to that many seconds for one."""
        params = {"since": str(since)}
        if limit is not None:
            params["limit"] = str(limit)
        if wait is not None:
            params["wait"] = str(wait)
        data = await self._get("/messages", params)
        return Page((Entry.of(m) for m in data["messages"]), data.get("last_seq", 0))

    async def health(self) -> dict[str, Any]:
        """The master's GET /health (the node writes go to)."""
        return await self._get("/health", {}, url=self._master)

    async def _get(self, path: str, params: dict[str, str], url: str | None = None) -> Any:
        deadline = None if self.retry_for is None else time.monotonic() + self.retry_for
        failures = 0
        fixed = url is not None
        while True:
            base = url if url is not None else self._reader
            try:
                async with self.session.get(base + path, params=params) as resp:
                    status, data = resp.status, await _json(resp)
            except NETWORK_ERRORS as exc:
                error: ReplogError = unreachable(base, exc)
                if not fixed:
                    self._reader = self._next(base)
            else:
                if status == 200 and isinstance(data, dict):
                    return data
                error = from_answer(status, data)
                if not isinstance(error, Unavailable):
                    raise error
            failures += 1
            delay = self.backoff.delay(failures)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise error
            await asyncio.sleep(delay)

    async def follow(self, since: int = 0) -> AsyncIterator[Entry]:
        """Every entry after since, in order, then each new one as it becomes visible, forever.

        Reads GET /messages/stream; when the connection drops (a node restart, a network failure, no
        byte for stream_timeout seconds) it reconnects, to the next URL if the node is unreachable,
        and resumes after the last entry it yielded: none is skipped, none repeated. Close it with
        ``aclose()`` (or break out of the loop and let it go).
        """
        async for entries in self.follow_chunks(since):
            for entry in entries:
                yield entry

    async def follow_chunks(
        self, since: int = 0, on_error: Callable[[BaseException, float], None] | None = None
    ) -> AsyncIterator[list[Entry]]:
        """follow(), an arrival at a time: each list holds the entries that came in one read from the
        network (never empty). on_error(error, delay) hears of each lost or refused connection."""
        pos = since
        failures = 0
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.sock_connect, sock_read=self.stream_timeout
        )
        while True:
            base = self._reader
            error: BaseException | None = None
            try:
                async with self.session.get(
                    base + "/messages/stream",
                    params={"since": str(pos)},
                    headers={"Last-Event-ID": str(pos), "Accept": "text/event-stream"},
                    timeout=timeout,
                ) as resp:
                    if resp.status != 200:
                        error = from_answer(resp.status, await _json(resp))
                        if not isinstance(error, Unavailable):
                            raise error
                    else:
                        failures = 0
                        parser = EventParser()
                        async for chunk in resp.content.iter_any():
                            found = parser.feed_messages(chunk)
                            if not found:
                                continue
                            # One decode for the whole arrival: much cheaper than one per event.
                            decoded = jsoncodec.loads(b"[" + b",".join(found) + b"]")
                            entries = []
                            for d in decoded:
                                seq = d["seq"]
                                if seq > pos:  # never an entry twice, whatever a node sends
                                    pos = seq
                                    entries.append(Entry(seq, d["id"], d["text"]))
                            if entries:
                                yield entries
                        error = Unavailable(f"{base} ended the stream", code="stream_ended")  # it shuts down
            except NETWORK_ERRORS as exc:
                error = exc
                if isinstance(exc, OSError):  # refused, unreachable: try the next URL
                    self._reader = self._next(base)
            failures += 1
            delay = self.backoff.delay(failures)
            if on_error is not None and error is not None:
                on_error(error, delay)
            await asyncio.sleep(delay)

    def _next(self, url: str) -> str:
        """The URL after url in the list (url itself if it is the only one, or not listed: the first)."""
        try:
            return self.urls[(self.urls.index(url) + 1) % len(self.urls)]
        except ValueError:
            return self.urls[0]


def _write_body(body: dict[str, Any], w: W | None, id_: str, timeout: float | None) -> dict[str, Any]:
    body["id"] = id_
    if w is not None:
        body["w"] = w
    if timeout is not None:
        body["timeout"] = timeout
    return body


async def _json(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    try:
        return jsoncodec.loads(raw)
    except jsoncodec.DecodeError:
        return None
