"""Test doubles for component tests of the replicator: a scripted secondary and a recording sleep.

FakeSecondary speaks the Transport protocol (promise, replicate, health, entries) in process. Behind
it is a real replog Secondary (in memory), so what it answers is what a secondary would answer: its
status fields (incarnation, promised, log_epoch, seq, hash, at, at_hash), its promise, its log epoch,
its reorder buffer's gap-free prefix. Its refusals become the exceptions the HTTP transport raises
(Stale, Refused, Unavailable, TransportError). On top of that it can be scripted to fail before or
after storing, hang, go down, restart (empty, or holding another log), promise a newer epoch to
another master, lose its disk, or have its answers tampered with. Sleeper is the replicator's
injected sleep: it records backoff delays without waiting and holds the heartbeat loop between
rounds until the test lets it run one more.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from replog import errors, jsoncodec
from replog.config import SecondaryConfig
from replog.protocol import ApiError, Fence, parse_wire_entry
from replog.secondary import Secondary
from replog.transport import Refused, Reply, Stale, TransportError, Unavailable, parse_reply

OUTCOMES = ("ok", "fail", "stored_fail", "hang")


async def eventually(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until cond() holds, polling; fail the test if it does not within timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(rounds: int = 200) -> None:
    """Let every runnable task run until it blocks: the fakes never wait on real time, so a few
    hundred loop iterations are enough for anything that *would* happen to have happened."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass(frozen=True)
class Batch:
    """One replication request as the fake secondary received it."""

    incarnation: str  # the fake's incarnation when it arrived
    log: str  # the log identity the master sent
    prev: int  # the seq of the request's "prev"
    seqs: tuple[int, ...]  # seqs of its entries, in the order sent
    acked_before: int  # highest seq this incarnation had reported in an answer when it arrived
    held_before: int  # the fake's gap-free seq when it arrived
    inflight: int  # requests in flight at the fake when it arrived, itself included
    outcome: str  # what the script made of it: ok | fail | stored_fail | hang

    @property
    def epoch_only(self) -> bool:
        """A request that carries no entries: only the master's epoch, at prev."""
        return not self.seqs

    @property
    def first(self) -> int:
        return self.seqs[0]

    @property
    def last(self) -> int:
        return self.seqs[-1]


async def _as_transport(call: Awaitable[dict[str, Any]]) -> Reply:
    """Run a call into the Secondary; its refusals as HttpTransport turns the HTTP answers into exceptions."""
    try:
        return parse_reply(await call)
    except errors.StaleEpoch as exc:
        raise Stale(exc.extra["epoch"]) from None
    except (errors.EntryConflict, errors.LogMismatch) as exc:
        raise Refused(exc.code, exc.detail) from None
    except (errors.DiskFailed, errors.Failed) as exc:
        raise Unavailable(f"HTTP 503: {exc.code}") from None
    except errors.Refusal as exc:
        raise TransportError(f"HTTP 500: {exc.code}") from None
    except ApiError as exc:
        raise TransportError(f"HTTP {exc.status}: {exc.code}") from None


class FakeSecondary:
    """A scripted secondary speaking the Transport protocol, with a real in-memory Secondary inside.

    fence() gives the master's epoch and id, as HttpTransport sends them with every request
    (None before the master has one: a replication request without it is a 400).
    """

    def __init__(self, fence: Callable[[], Fence | None]) -> None:
        self._fence = fence
        self.batches: list[Batch] = []  # every replication request that reached the fake, in order
        self.replicate_calls = 0  # replicate() calls, including those refused by a down fake
        self.health_calls = 0
        self.promise_calls = 0
        self.down = False  # every call raises TransportError (unreachable)
        self.health_down = False  # only health raises: tells whether batches are sent without a beat
        self.tamper: Callable[[Reply], Reply] | None = None  # rewrites every answer (a lying or late one)
        self.cancelled = 0  # replicate calls cancelled while hanging
        self.max_pending = 0  # most entries the reorder buffer ever held behind a gap
        self.inflight = 0  # replicate calls running now
        self.max_inflight = 0  # most replicate calls ever running at once
        self.hanging = 0  # replicate calls hanging now
        self._plan: deque[str] = deque()  # outcomes of the next replicate calls; "ok" when empty
        self._release = asyncio.Event()  # ends every hang
        self.restart()

    # -- scripting -------------------------------------------------------------

    def plan(self, *outcomes: str) -> None:
        """Script the next replicate calls: "ok", "fail" (raise before storing), "stored_fail"
        (store, then raise, as a 500 after storing), "hang" (wait for release(), then "ok")."""
        for o in outcomes:
            assert o in OUTCOMES, o
        self._plan.extend(outcomes)

    def release(self) -> None:
        """End every hanging call (they then store and answer)."""
        self._release.set()
        self._release = asyncio.Event()

    def restart(self, log_id: str | None = None, texts: list[str] | None = None, *, log_epoch: int = 0) -> None:
        """A new process: a new incarnation; empty, or holding texts (single writes) of log log_id,
        as a secondary restarted on a data dir of that log would, with that log epoch and no promise."""
        node = Secondary(SecondaryConfig())
        if log_id is not None:
            node.log.adopt(log_id)
            node.adopted = True
            node.log.extend([(None, t, 0) for t in texts or []])
            node.log_epoch = log_epoch
        self.node = node
        self.acked = 0

    async def promise_elsewhere(self, epoch: int, master: str = "another-master") -> None:
        """Another master promised epoch (newer than ours): from now on we are refused as stale."""
        await self.node.fence(Fence(epoch, master), promise=True)

    def fail_disk(self) -> None:
        """Its disk fails: it answers 503 disk_failed to the master from now on."""
        self.node._disk_failed(OSError(28, "No space left on device"))

    # -- what the fake holds ------------------------------------------------------

    @property
    def incarnation(self) -> str:
        return self.node.incarnation

    @property
    def seq(self) -> int:
        return self.node.durable

    def texts(self) -> list[str]:
        log = self.node.log
        return [log.text(s) for s in range(1, self.seq + 1)]

    # -- the Transport protocol ----------------------------------------------------

    async def replicate(self, body: bytes) -> Reply:
        self.replicate_calls += 1
        if self.down:
            raise TransportError("connection refused (fake down)")
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._replicate(body)
        finally:
            self.inflight -= 1

    async def _replicate(self, body: bytes) -> Reply:
        data = jsoncodec.loads(body)
        outcome = self._plan.popleft() if self._plan else "ok"
        seqs = tuple(int(e[0]) for e in data["entries"])
        node = self.node
        self.batches.append(
            Batch(node.incarnation, data["log"], data["prev"][0], seqs, self.acked, self.seq, self.inflight, outcome)
        )
        if outcome == "fail":
            raise TransportError("HTTP 503 (fake failure before storing)")
        if outcome == "hang":
            self.hanging += 1
            try:
                await self._release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.hanging -= 1
        fence = self._fence()
        if fence is None:
            raise TransportError("HTTP 400: invalid_epoch")
        if node is not self.node:
            raise TransportError("connection reset (the fake restarted)")
        reply = await _as_transport(node.replicate(body, fence))
        self.max_pending = max(self.max_pending, len(node.buffer.pending))
        if outcome == "stored_fail":
            raise TransportError("HTTP 500 (fake failure after storing)")
        return self._answer(reply)

    async def health(self, at: int) -> Reply:
        self.health_calls += 1
        if self.down or self.health_down:
            raise TransportError("connection refused (fake down)")
        node, fence = self.node, self._fence()

        async def status() -> dict[str, Any]:
            if fence is not None:  # the master's heartbeat: a stale master learns it at once
                await node.fence(fence, promise=False)
                node.check_disk()
            return node.status(at)

        return self._answer(await _as_transport(status()))

    async def promise(self) -> Reply:
        self.promise_calls += 1
        if self.down:
            raise TransportError("connection refused (fake down)")
        node, fence = self.node, self._fence()
        assert fence is not None, "a promise is asked for with the master's epoch"

        async def promised() -> dict[str, Any]:
            node.check_disk()
            await node.fence(fence, promise=True)
            return node.status()

        return self._answer(await _as_transport(promised()))

    async def entries(self, since: int, limit: int) -> tuple[Reply, list[tuple[int, str | None, str, int, bytes]]]:
        if self.down:
            raise TransportError("connection refused (fake down)")
        node, fence = self.node, self._fence()
        assert fence is not None
        items: list[list[object]] = []

        async def read() -> dict[str, Any]:
            await node.fence(fence, promise=False)
            items.extend(node.entries(since, limit))
            return node.status()

        reply = self._answer(await _as_transport(read()))
        return reply, [parse_wire_entry(item) for item in items]

    def _answer(self, reply: Reply) -> Reply:
        if self.tamper is not None:
            reply = self.tamper(reply)
        if reply.incarnation == self.node.incarnation:
            self.acked = max(self.acked, reply.seq)
        return reply


class Sleeper:
    """The replicator's injected sleep, for both of its loops.

    The test's clock stands still, so the heartbeat loop always asks for exactly
    heartbeat_interval; those waits block until the test calls beat(). Every other wait is a
    backoff: its delay is recorded, then it yields once and returns (or, with block_backoff,
    waits until cancelled, as a long backoff would).
    """

    def __init__(self, heartbeat_interval: float) -> None:
        self.interval = heartbeat_interval
        self.delays: list[float] = []  # backoff delays asked for, in order
        self.rounds = 0  # heartbeat rounds finished (the heartbeat loop reached its sleep)
        self.block_backoff = False
        self.backoff_waiting = 0  # backoff sleeps blocked now
        self.backoff_cancelled = 0  # backoff sleeps cut short by cancellation
        self._permits = asyncio.Semaphore(0)

    async def __call__(self, delay: float) -> None:
        if delay == self.interval:
            self.rounds += 1
            await self._permits.acquire()
            return
        self.delays.append(delay)
        if not self.block_backoff:
            await asyncio.sleep(0)
            return
        self.backoff_waiting += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.backoff_cancelled += 1
            raise
        finally:
            self.backoff_waiting -= 1

    async def beat(self, times: int = 1) -> None:
        """Let the heartbeat loop run `times` more rounds, and wait until it has."""
        for _ in range(times):
            n = self.rounds
            self._permits.release()
            await eventually(lambda n=n: self.rounds > n, what="a heartbeat round")
