"""Producer: many coroutines append, one sender writes their messages as batches.

Callers put (text, future) on a queue; the sender takes what has gathered, writes it as one batch
POST, and resolves each caller's future with that caller's own entry. A batch waits for company
only while more keep coming: it goes once the burst of concurrent appends is over (every coroutine
that was ready has added its message), max_batch is reached, or its first message has waited
linger seconds. One batch is in flight at a time, so messages are stored in the order append() was
called, and a batch that fails is retried whole, under the same id, before any later one: the
master stores it once, however many attempts reach it.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter, deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

from replog.client.errors import Rejected, ReplogError, WriteConcernTimeout
from replog.client.types import Appended

if TYPE_CHECKING:
    from replog.client.api import Client, W

Pending = tuple[str, "asyncio.Future[Appended]"]


class Producer:
    """Coalesces concurrent append()s into batch writes; use it as ``async with log.producer() as p:``."""

    def __init__(
        self, client: Client, *, w: W | None = None, linger: float = 0.002, max_batch: int = 1000, timeout: float | None
    ) -> None:
        if max_batch < 1 or linger < 0:
            raise ValueError("max_batch must be at least 1 and linger not negative")
        self._client = client
        self._w = w
        self._linger = linger
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: deque[Pending] = deque()  # appended, not yet taken into a batch
        self._wake = asyncio.Event()  # set by append() and close()
        self._task: asyncio.Task[None] | None = None  # the sender
        self._closing = False
        self._key = uuid.uuid4().hex  # this producer's batches are <key>.<n>, entry i of one <key>.<n>:<i>
        self._numbers = itertools.count()
        self.batches = 0  # batch writes answered, for the curious and the tests
        self.appended = 0  # messages stored through this producer
        self.retried: Counter[str] = Counter()  # failed attempts that were retried, by error code

    async def __aenter__(self) -> Producer:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="replog producer")
            self._task.add_done_callback(self._on_done)

    async def close(self) -> None:
        """Write every message appended so far (each caller gets its answer), then stop the sender."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait((self._task,))

    async def append(self, text: str) -> Appended:
        """Append one message; return its own entry once the batch that carried it is stored at w.

        Raises what Client.append raises, for this message alone: WriteConcernTimeout (with its seq),
        Rejected (this message was refused; the others of its batch are written), NoQuorum, NotMaster,
        Unavailable.
        """
        if not isinstance(text, str):
            raise TypeError(f"a message is a str, not {type(text).__name__}")
        text.encode()  # a lone surrogate fails here, in the caller, not in the sender
        if self._task is None or self._task.done() or self._closing:
            raise RuntimeError("the producer is not running (use it as `async with log.producer() as p:`)")
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.append((text, fut))
        self._wake.set()
        return await fut

    # -- the sender ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            await self._gather(loop.time() + self._linger)
            batch = self._take()
            if batch:
                await self._send(batch, f"{self._key}.{next(self._numbers)}")

    async def _gather(self, deadline: float) -> None:
        """Let concurrent appends join: until a turn of the loop adds nothing, max_batch, or the deadline."""
        loop = asyncio.get_running_loop()
        while len(self._queue) < self._max_batch:
            before = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == before or loop.time() >= deadline:
                return

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        while self._queue and len(batch) < self._max_batch:
            text, fut = self._queue.popleft()
            if not fut.done():  # a caller cancelled before its message was taken: it is not sent
                batch.append((text, fut))
        return batch

    async def _send(self, batch: list[Pending], key: str) -> None:
        body: dict[str, Any] = {"messages": [text for text, _ in batch], "id": key}
        if self._w is not None:
            body["w"] = self._w
        if self._timeout is not None:
            body["timeout"] = self._timeout
        try:
            status, data = await self._client.post_messages(body, on_retry=self._on_retry)
        except Rejected as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # A refused batch appended nothing: halve it to find the message refused, and write the others.
            half = len(batch) // 2
            await self._send(batch[:half], key + "a")
            await self._send(batch[half:], key + "b")
            return
        except WriteConcernTimeout as exc:
            self.batches += 1
            self.appended += len(batch)
            for (text, fut), entry in zip(batch, exc.entries or [], strict=False):
                own = {**exc.body, "seq": entry["seq"], "id": entry["id"], "text": text}
                own.pop("entries", None)
                _settle(fut, exception=WriteConcernTimeout(exc.detail, code=exc.code, status=exc.status, body=own))
            return
        except ReplogError as exc:
            _fail(batch, exc)
            return
        except Exception as exc:  # a bug must not leave callers waiting for ever
            _fail(batch, exc)
            raise
        self.batches += 1
        self.appended += len(batch)
        created = status == 201
        w, acks = data["w"], data["acks"]
        for (_, fut), e in zip(batch, data["entries"], strict=True):
            _settle(fut, result=Appended(e["seq"], e["id"], e["text"], w, acks, created))

    def _on_retry(self, error: ReplogError, delay: float) -> None:
        self.retried[error.code] += 1

    def _on_done(self, task: asyncio.Task[None]) -> None:
        """The sender ended: whatever is still queued will not be sent; say so to its callers."""
        exc = None if task.cancelled() else task.exception()
        error = RuntimeError(f"the producer stopped: {exc!r}" if exc else "the producer stopped")
        while self._queue:
            _settle(self._queue.popleft()[1], exception=error)


def _settle(
    fut: asyncio.Future[Appended], *, result: Appended | None = None, exception: BaseException | None = None
) -> None:
    if fut.done():
        return
    if exception is not None:
        fut.set_exception(exception)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


def _fail(batch: list[Pending], exc: BaseException) -> None:
    for _, fut in batch:
        _settle(fut, exception=exc)
