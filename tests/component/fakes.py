"""Test doubles for component tests of the replicator: a scripted secondary and a recording sleep.

FakeSecondary stores what it is sent through the real ReorderBuffer and Log, so its acks are
honest (the gap-free seq), and can be scripted to fail, store-then-fail, hang, go down or
restart. Sleeper is the replicator's injected sleep: it records backoff delays without waiting
and holds the heartbeat loop between rounds until the test lets it run one more.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Callable

from replog import jsoncodec
from replog.client import Refused, Reply, TransportError
from replog.log import Log
from replog.reorder import Conflict, ReorderBuffer


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

    boot: str  # the fake's boot id when it arrived
    log: str  # the log identity the master sent
    seqs: tuple[int, ...]  # seqs of its entries, in the order sent
    acked_before: int  # highest seq this boot had reported in an answer that reached the master
    held_before: int  # the fake's gap-free seq when it arrived
    outcome: str  # what the script made of it: ok | fail | stored_fail | hang

    @property
    def first(self) -> int:
        return self.seqs[0]

    @property
    def last(self) -> int:
        return self.seqs[-1]


class FakeSecondary:
    """A scripted secondary speaking the Transport protocol (replicate, health)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []  # every replication request that reached the fake, in order
        self.replicate_calls = 0  # replicate() calls, including those refused by a down fake
        self.health_calls = 0
        self.down = False  # both replicate and health raise TransportError (unreachable)
        self.health_down = False  # only health raises: tells whether batches are sent without a beat
        self.health_override: Reply | None = None  # answer health with this instead of the truth
        self.cancelled = 0  # replicate calls cancelled while hanging
        self.max_pending = 0  # most entries the reorder buffer ever held behind a gap
        self._plan: deque[str] = deque()  # outcomes of the next replicate calls; "ok" when empty
        self._release = asyncio.Event()  # ends every hang
        self.hanging = 0  # replicate calls hanging now
        self.restart()

    # -- scripting -------------------------------------------------------------

    def plan(self, *outcomes: str) -> None:
        """Script the next replicate calls: "ok", "fail" (raise before storing), "stored_fail"
        (store, then raise, as a 500 after storing), "hang" (wait for release(), then "ok")."""
        for o in outcomes:
            assert o in ("ok", "fail", "stored_fail", "hang"), o
        self._plan.extend(outcomes)

    def release(self) -> None:
        """End every hanging call (they then store and answer)."""
        self._release.set()
        self._release = asyncio.Event()

    def restart(self, log_id: str | None = None, texts: list[str] | None = None) -> None:
        """A new process: new boot id; empty, or holding texts of another log log_id."""
        self.boot = uuid.uuid4().hex
        self.log = Log(log_id or uuid.uuid4().hex)
        self.adopted = log_id is not None
        if texts:
            self.log.extend([(None, t) for t in texts])
        self.buffer = ReorderBuffer(self.log)
        self.acked = 0

    # -- what the fake holds ------------------------------------------------------

    def texts(self) -> list[str]:
        return [self.log.text(s) for s in range(1, self.log.last_seq + 1)]

    @property
    def seq(self) -> int:
        return self.log.last_seq

    # -- the Transport protocol ----------------------------------------------------

    async def replicate(self, body: bytes) -> Reply:
        self.replicate_calls += 1
        if self.down:
            raise TransportError("connection refused (fake down)")
        data = jsoncodec.loads(body)
        entries = [(int(seq), id_, text) for seq, id_, text in data["entries"]]
        outcome = self._plan.popleft() if self._plan else "ok"
        self.batches.append(
            Batch(self.boot, data["log"], tuple(e[0] for e in entries), self.acked, self.log.last_seq, outcome)
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
        self._store(data["log"], entries)
        if outcome == "stored_fail":
            raise TransportError("HTTP 500 (fake failure after storing)")
        return self._answer(max((e[0] for e in entries), default=None))

    async def health(self, at: int | None = None) -> Reply:
        self.health_calls += 1
        if self.down or self.health_down:
            raise TransportError("connection refused (fake down)")
        if self.health_override is not None:
            return self.health_override
        return self._answer(at)

    def _store(self, log_id: str, entries: list[tuple[int, str | None, str]]) -> None:
        if log_id != self.log.log_id or not self.adopted:
            if self.adopted and self.log.last_seq > 0:
                raise Refused("log_mismatch", f"this secondary holds another log ({self.log.log_id})")
            self.log.adopt(log_id)
            self.buffer.reset()
            self.adopted = True
        try:
            self.buffer.check(entries)
        except Conflict as exc:
            raise Refused("entry_conflict", str(exc)) from None
        self.buffer.offer(entries)
        self.max_pending = max(self.max_pending, len(self.buffer.pending))

    def _answer(self, at: int | None = None) -> Reply:
        """Like the real secondary: its seq, and its checksum at min(seq, at)."""
        seq = self.log.last_seq
        self.acked = max(self.acked, seq)
        crc_seq = seq if at is None else min(seq, at)
        return Reply(self.boot, seq, self.log.log_id if self.adopted else None, crc_seq, self.log.crc(crc_seq))


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
            await eventually(lambda: self.rounds > n, what="a heartbeat round")
