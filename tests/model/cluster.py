"""An in-memory cluster of real Master and Secondary objects on one event loop, for the model test.

No HTTP and no wall time: every master reaches every secondary through a Link, an in-memory
Transport that calls the Secondary's methods directly and maps its domain errors to what the
HTTP client would raise. Time is virtual (VirtualClock): heartbeats, backoffs and recovery rounds
sleep on it, and only advance() moves it. The loop is driven to idleness between steps
(Cluster.settle), so a run is a pure function of the steps taken: hypothesis can replay and shrink it.

Faults a step can inject: a link cut (every call raises TransportError, replication requests are
kept for a late delivery), a link made slow (replication requests queue until delivered, out of
order, with the answer lost or held on the wire), a paused secondary (all its links behave as cut),
a crashed master or secondary (a new process: empty in memory; with disks, on its data dir or having
lost it; a master maybe on an older copy of its data dir), and a late delivery of a kept request to
whatever process holds the secondary's place by then.

With disks, every node has a data dir in a temporary directory, written through the real DiskLog and
GroupCommit; asyncio.to_thread runs inline (InlineExecutor), so a disk write happens at a known point
of the run and the run stays replayable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import heapq
import itertools
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from replog import errors, jsoncodec
from replog.config import MasterConfig, SecondaryConfig
from replog.datadir import Opened, open_log
from replog.durable import GroupCommit
from replog.log import Log
from replog.master import Master
from replog.protocol import ApiError, Fence, parse_wire_entry
from replog.secondary import Secondary
from replog.storage import Meta
from replog.transport import Refused, Reply, Stale, TransportError, Unavailable, parse_reply

WireEntry = tuple[int, str | None, str, int, bytes]


class Livelock(AssertionError):
    """The loop never went idle: some task keeps itself busy without virtual time passing."""


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs what asyncio.to_thread hands it at once, in the loop's thread: a disk write finishes
    before the loop goes on, so a data dir changes at known points and a run stays replayable."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            fut.set_exception(exc)
        return fut


class VirtualClock:
    """Time that moves only when advance() is called; sleep() waits for it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + delay, next(self._order), fut))
        await fut

    def advance(self) -> bool:
        """Move to the earliest pending timer and fire every timer due by then; False if none is pending."""
        timers = self._timers
        while timers and timers[0][2].done():  # cancelled sleepers
            heapq.heappop(timers)
        if not timers:
            return False
        self.now = max(self.now, timers[0][0])
        while timers and timers[0][0] <= self.now:
            fut = heapq.heappop(timers)[2]
            if not fut.done():
                fut.set_result(None)
        return True


@dataclass(eq=False)
class Request:
    """One replication request as it left a master: kept for a slow link's delivery or a late one."""

    body: bytes
    fence: Fence | None
    slot: int  # the secondary's place (0-based) it was sent to
    master: int  # the index of the master process that sent it
    future: asyncio.Future[Reply] | None = None  # the sender waits on it (a slow link's queue)


@dataclass(eq=False)
class Node:
    """One secondary's place in the cluster: its current process and what earlier processes promised."""

    slot: int
    secondary: Secondary
    paused: bool = False
    # What each earlier process in this place had promised when it died, (epoch, master id, masters
    # started by then). A process restarted empty forgot it: see Cluster.window_guard.
    forgotten: list[tuple[int, str | None, int]] = field(default_factory=list)
    past: list[Secondary] = field(default_factory=list)  # earlier processes, frozen at their crash
    amnesia: int = 0  # restarts that lost the node's log and promises

    def by_incarnation(self, incarnation: str | None) -> Secondary | None:
        for s in [self.secondary, *self.past]:
            if s.incarnation == incarnation:
                return s
        return None


@dataclass(eq=False)
class MasterProc:
    """One master process: the real Master, its links, its tasks, and when it finished recovery."""

    index: int
    master: Master
    links: list[Link]
    data_dir: str | None = None  # the master's data dir, None in memory
    alive: bool = True
    recovered_at: int | None = None  # the cluster's event counter when recover() returned
    crashed_at: int | None = None  # the cluster's event counter when it was killed
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    writes: list[asyncio.Task[Any]] = field(default_factory=list)


class Link:
    """The Transport from one master process to one secondary place.

    mode "up" delivers at once; "slow" queues replication requests until Cluster.deliver;
    "cut" raises TransportError (a replication request is kept for a late delivery).
    """

    def __init__(self, cluster: Cluster, master: int, slot: int) -> None:
        self.cluster = cluster
        self.master = master
        self.slot = slot
        self.mode = "up"
        self.queue: list[Request] = []

    def _fence(self) -> Fence | None:
        return self.cluster.masters[self.master].master.fence

    def _reachable(self) -> bool:
        return self.mode != "cut" and not self.cluster.nodes[self.slot].paused

    async def promise(self) -> Reply:
        fence = self._fence()
        if not self._reachable():
            raise TransportError("model: unreachable")
        assert fence is not None, "a promise request without a fence"

        async def call(s: Secondary) -> dict[str, Any]:
            s.check_disk()
            await s.fence(fence, promise=True)
            return s.status()

        return await self.cluster.call(self.slot, fence, call, may_promise=True)

    async def replicate(self, body: bytes) -> Reply:
        req = Request(body, self._fence(), self.slot, self.master)
        if not self._reachable():
            self.cluster.keep_late(req)
            raise TransportError("model: unreachable")
        if self.mode == "slow":
            req.future = asyncio.get_running_loop().create_future()
            self.queue.append(req)
            try:
                return await req.future
            except asyncio.CancelledError:
                # The sender gave up on it (kicked, or its process died): the request is still on the wire.
                if req in self.queue:
                    self.queue.remove(req)
                    self.cluster.keep_late(req)
                raise
        return await self.cluster.deliver_request(req)

    async def health(self, at: int) -> Reply:
        fence = self._fence()
        if not self._reachable():
            raise TransportError("model: unreachable")

        async def call(s: Secondary) -> dict[str, Any]:
            if fence is not None:
                await s.fence(fence, promise=False)
                s.check_disk()
            return {**s.status(at), "status": "ok" if s.failed is None else "disk_failed"}

        return await self.cluster.call(self.slot, fence, call, may_promise=False)

    async def entries(self, since: int, limit: int) -> tuple[Reply, list[WireEntry]]:
        fence = self._fence()
        if not self._reachable():
            raise TransportError("model: unreachable")
        assert fence is not None, "an entries request without a fence"
        limit = max(1, min(limit, 10_000))
        got: list[Any] = []

        async def call(s: Secondary) -> dict[str, Any]:
            await s.fence(fence, promise=False)
            got.append(jsoncodec.loads(jsoncodec.dumps(s.entries(since, limit))))
            return s.status()

        reply = await self.cluster.call(self.slot, fence, call, may_promise=False)
        try:
            return reply, [parse_wire_entry(item) for item in got[0]]
        except ApiError as exc:
            self.cluster.unexpected.append(f"secondary {self.slot + 1} sent a malformed entry: {exc.detail}")
            raise TransportError("malformed entry") from None


class Cluster:
    """Secondaries and master processes on one event loop, with virtual time."""

    def __init__(
        self, secondaries: int, *, batch_max_count: int, window: int, disks: bool = False, seed: int = 0
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(InlineExecutor(max_workers=1))
        # With disks, every node keeps its log in its own data dir (fsync off: a process crash keeps
        # what it wrote, as the page cache does); the master's place has one, and a copy of it can be kept.
        self._tmp = tempfile.TemporaryDirectory(prefix="replog-model-") if disks else None
        self.disks = disks
        self.master_copy: str | None = None  # an older copy of the master's data dir, to restart on
        self.master_amnesia = 0  # times the master's data dir was lost
        self.disk_tasks: dict[int, asyncio.Task[Any]] = {}  # each secondary place's group commit
        self.clock = VirtualClock()
        self._rng = random.Random(seed)  # every uuid4 the code draws comes from here: replayable runs
        self._uuid = mock.patch.object(uuid, "uuid4", self.uuid4)
        self._uuid.start()
        self.config = MasterConfig(
            secondaries=tuple(f"s{i + 1}" for i in range(secondaries)),
            heartbeat_interval=1.0,
            batch_max_count=batch_max_count,
            replication_window=window,
        )
        self.nodes: list[Node] = []
        self.master_index: dict[str, int] = {}  # master id -> index of its process
        self.masters: list[MasterProc] = []
        self.late: list[Request] = []  # replication requests still on the wire, oldest first
        self.answers: list[tuple[asyncio.Future[Reply], Reply | BaseException]] = []  # answers held on the wire
        self.events = itertools.count(1)  # orders recoveries and answers
        self.on_recovered: list[Callable[[MasterProc], None]] = []  # called as a master finishes recovery
        self.unexpected: list[str] = []  # what no correct node does: a task died, a 500, a 400
        self.window_blocked = 0  # requests the window guard kept from a secondary that forgot its promise
        self.late_delivered = 0  # late requests a secondary took
        self.guarded: set[int] = set()  # masters (indexes) the window guard held back at least once
        self.window_open = False  # whether to let them through (the documented window of static roles)
        for slot in range(secondaries):
            self.nodes.append(Node(slot, self._new_secondary(slot)))

    # -- running the loop ------------------------------------------------------------

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def run(self, coro: Coroutine[Any, Any, Any] | None = None) -> Any:
        """Run coro (if any), then let every task run until the loop is idle."""

        async def main() -> Any:
            result = await coro if coro is not None else None
            await self.settle()
            return result

        return self.loop.run_until_complete(main())

    async def settle(self, budget: int = 20_000) -> None:
        """Return once no callback is ready to run: every task waits on virtual time or a future."""
        ready = self.loop._ready  # type: ignore[attr-defined]  # idle == nothing ready but us
        quiet = 0
        for _ in range(budget):
            await asyncio.sleep(0)
            quiet = quiet + 1 if not ready else 0
            if quiet >= 3:
                return
        busy = []
        for handle in list(ready):
            task = getattr(handle._callback, "__self__", None)
            if isinstance(task, asyncio.Task):
                frames = task.get_stack()
                where = f"{frames[-1].f_code.co_name}:{frames[-1].f_lineno}" if frames else "?"
                busy.append(f"{task.get_name()} at {where}")
        raise Livelock(f"the loop was still busy after {budget} rounds without virtual time passing: {busy}")

    def tick(self) -> None:
        if self.clock.advance():
            self.run()

    def close(self) -> None:
        async def stop() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.loop.run_until_complete(stop())
            for node in self.nodes:
                if node.secondary.disk is not None:
                    node.secondary.disk.close()
            for proc in self.masters:
                if proc.master.disk is not None:
                    proc.master.disk.close()
        finally:
            self.loop.close()
            self._uuid.stop()
            if self._tmp is not None:
                self._tmp.cleanup()

    # -- processes -----------------------------------------------------------------

    def _dir(self, name: str) -> str | None:
        return None if self._tmp is None else os.path.join(self._tmp.name, name)

    def _new_secondary(self, slot: int) -> Secondary:
        s = Secondary(SecondaryConfig(data_dir=self._dir(f"s{slot + 1}"), fsync=False))
        if s.commit is not None:
            task = self.loop.create_task(s.commit.run(), name=f"s{slot + 1} group commit")
            task.add_done_callback(self._secondary_died(slot))
            self.disk_tasks[slot] = task
        return s

    def _secondary_died(self, slot: int) -> Callable[[asyncio.Task[Any]], None]:
        def done(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.unexpected.append(f"secondary {slot + 1}: its group commit died: {t.exception()!r}")

        return done

    def master_dir_free(self) -> bool:
        """The master's place has a data dir and no live master process holds it."""
        return self.disks and not any(p.alive and p.data_dir is not None for p in self.masters)

    def start_master(self, *, on_disk: bool = True, old_copy: bool = False, new_cluster: bool = False) -> MasterProc:
        """A new master process. With disks it opens the master's data dir if no live master holds it
        (restored from the kept older copy first, with old_copy), else it runs in memory. new_cluster:
        started with --new-cluster, as an operator starts a brand-new cluster's first master."""
        index = len(self.masters)
        links = [Link(self, index, slot) for slot in range(len(self.nodes))]
        data_dir = self._dir("master") if on_disk and self.master_dir_free() else None
        if data_dir is not None and old_copy and self.master_copy is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.copytree(self.master_copy, data_dir)
        if data_dir is None:
            opened = Opened(Log(uuid.uuid4().hex), Meta(), None, False)  # in memory: no log, no promise
        else:
            opened = open_log(data_dir, fsync=False)
        config = dataclasses.replace(self.config, new_cluster=new_cluster)
        master = Master(config, list(links), opened, sleep=self.clock.sleep, rand=lambda: 0.5, clock=self.clock.time)
        proc = MasterProc(index, master, links, data_dir)
        self.master_index[master.id] = index
        self.masters.append(proc)
        if opened.disk is not None:
            master.attach_disk(GroupCommit(opened.disk, on_durable=master.durable_to, on_failed=master._on_disk_failed))
            self.own(proc, master.commit.run(), "group commit")  # type: ignore[union-attr]
        self.own(proc, self._run_master(proc), "recovery")
        self.run()
        return proc

    def keep_master_copy(self) -> None:
        """Copy the master's data dir as it is now (an operator's backup, restored later by mistake)."""
        src = self._dir("master")
        if src is None or not os.path.exists(src):
            return
        dst = self._dir("master-copy")
        assert dst is not None
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))
        self.master_copy = dst

    async def _run_master(self, proc: MasterProc) -> None:
        await proc.master.recover()
        proc.recovered_at = next(self.events)
        for hook in self.on_recovered:
            hook(proc)
        for r in proc.master.replicators:
            self.own(proc, r.run(), f"replicator {r.url}")

    def own(self, proc: MasterProc, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = self.loop.create_task(coro, name=f"m{proc.index + 1} {name}")

        def done(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.unexpected.append(f"master {proc.index + 1}: task {name} died: {t.exception()!r}")

        task.add_done_callback(done)
        proc.tasks.append(task)

    def crash_master(self, proc: MasterProc, *, lose_disk: bool = False) -> None:
        """SIGKILL: its tasks stop where they are; its in-memory log is gone (kept here, frozen, for
        checks). Its data dir, if any, stays as it is, or is lost with lose_disk."""
        proc.alive = False
        proc.crashed_at = next(self.events)
        for t in [*proc.tasks, *proc.writes]:
            t.cancel()
        self.run()
        if proc.master.disk is not None:
            proc.master.disk.close()  # the process is gone: its lock goes with it
            if lose_disk and proc.data_dir is not None:
                shutil.rmtree(proc.data_dir)
                self.master_amnesia += 1

    def crash_secondary(self, slot: int, *, lose_disk: bool = True) -> None:
        """SIGKILL and restart: a new process in the same place, on its data dir, or empty (in memory, or
        with lose_disk), and then it forgot every promise."""
        node = self.nodes[slot]
        old = node.secondary
        node.past.append(old)
        task = self.disk_tasks.pop(slot, None)
        if task is not None:
            task.cancel()
            self.run()
        if old.disk is not None:
            old.disk.close()
            if lose_disk:
                shutil.rmtree(old.config.data_dir)  # type: ignore[arg-type]
        if lose_disk or old.disk is None:
            node.amnesia += 1
            if old.promised:
                node.forgotten.append((old.promised, old.promised_to, len(self.masters)))
        node.secondary = self._new_secondary(slot)
        node.paused = False
        for proc in self.masters:
            link = proc.links[slot]
            for req in link.queue:  # the connections to the dead process break
                if req.future is not None and not req.future.done():
                    req.future.set_exception(TransportError("model: connection reset"))
            link.queue.clear()
        self.run()

    # -- the wire --------------------------------------------------------------------

    def keep_late(self, req: Request) -> None:
        req.future = None
        self.late.append(req)
        del self.late[:-24]  # a bounded wire: the oldest requests are lost for good

    def window_guard(self, slot: int, fence: Fence | None) -> bool:
        """True if an earlier process in this place had promised away fence's epoch, to a master that
        already ran when that process died, and this process (restarted empty, so it forgot) would
        accept it: the window static roles leave open (SPEC, "What this promises"). The model keeps such
        requests from the node unless window_open. A master started after the restart is not held
        back: it chose its epoch from what the nodes it reached remember, as a real one would."""
        if fence is None:
            return False
        node = self.nodes[slot]
        s = node.secondary
        if fence.epoch < s.promised or (fence.epoch == s.promised and fence.master != s.promised_to):
            return False  # this process refuses it by itself
        sender = self.master_index.get(fence.master, len(self.masters))
        for epoch, master, started in node.forgotten:
            if sender < started and (fence.epoch < epoch or (fence.epoch == epoch and fence.master != master)):
                self.guarded.add(sender)
                return True
        return False

    async def call(
        self,
        slot: int,
        fence: Fence | None,
        fn: Callable[[Secondary], Awaitable[dict[str, Any]]],
        *,
        may_promise: bool,
    ) -> Reply:
        """Call the secondary in place slot as its HTTP handler would, mapping answers as HttpTransport does."""
        if may_promise and self.window_guard(slot, fence):
            self.window_blocked += 1
            if not self.window_open:
                raise TransportError("model: a request the restarted secondary's earlier process had fenced")
        s = self.nodes[slot].secondary
        try:
            data = await fn(s)
        except errors.StaleEpoch as exc:
            raise Stale(exc.extra["epoch"], exc.extra.get("log"), exc.extra.get("seq", 0)) from None
        except (errors.EntryConflict, errors.LogMismatch) as exc:
            raise Refused(exc.code, exc.detail) from None
        except errors.DiskFailed as exc:
            raise Unavailable(f"HTTP 503: {exc.code}") from None
        except (errors.InjectedFailure, errors.Failed) as exc:
            raise TransportError(f"HTTP 500: {exc.code}") from None
        except ApiError as exc:
            self.unexpected.append(f"secondary {slot + 1} answered 400 {exc.code}: {exc.detail}")
            raise TransportError(f"HTTP 400: {exc.code}") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.unexpected.append(f"secondary {slot + 1} raised {exc!r}")
            raise TransportError("HTTP 500") from None
        return parse_reply(jsoncodec.loads(jsoncodec.dumps(data)))

    async def deliver_request(self, req: Request) -> Reply:
        """Hand one replication request to the process now in its place."""
        fence = req.fence
        if fence is None:
            self.unexpected.append(f"master {req.master + 1} sent a replication request without a fence")
            raise TransportError("HTTP 400: no fence")

        async def call(s: Secondary) -> dict[str, Any]:
            return await s.replicate(req.body, fence)

        return await self.call(req.slot, fence, call, may_promise=True)

    async def deliver(self, req: Request, *, answer: str = "now") -> None:
        """Deliver a queued request of a slow link. Its answer goes back now, is lost (the sender sees a
        broken connection), or is held on the wire until release_answer."""
        fut = req.future
        assert fut is not None
        outcome: Reply | BaseException
        try:
            outcome = await self.deliver_request(req)
        except (TransportError, Stale, Refused) as exc:
            outcome = exc
        if answer == "lost":
            outcome = TransportError("model: the answer was lost")
        if answer == "held":
            self.answers.append((fut, outcome))
        else:
            self._answer(fut, outcome)

    def _answer(self, fut: asyncio.Future[Reply], outcome: Reply | BaseException) -> None:
        if fut.done():
            return  # the sender gave up on it
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    def release_answer(self, index: int) -> None:
        """An answer held on the wire reaches its sender (out of order, maybe after the secondary restarted)."""
        fut, outcome = self.answers.pop(index)
        self._answer(fut, outcome)
        self.run()

    async def deliver_late(self, req: Request) -> None:
        """A request its sender gave up on reaches the secondary; nobody reads the answer."""
        try:
            await self.deliver_request(req)
            self.late_delivered += 1
        except (TransportError, Stale, Refused):
            pass
