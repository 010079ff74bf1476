"""An in-memory failover cluster for the failover model test: nodes that an in-memory etcd makes master
or secondary, on one event loop with virtual time (cluster.VirtualClock), through in-memory links.

- LeaseService has etcd's semantics as the election uses them: one revision counter that every change
  moves on; leases with a TTL on the virtual clock, whose keys vanish when they expire; a create-if-absent
  transaction that answers the key's create_revision; keep-alive; a compare-and-delete (resign).
- FNode is one node: the node runtime's election rules (SPEC "Automatic failover (etcd)", replog.lease) in
  a loop like Patroni's (re-stating replog.node's rules), around the real Master and Secondary domain code. A node that wins the leader key
  builds a Master over its own log, recovers with the key's create-revision as its epoch
  (Master.recover(epoch=...)), checks its lease deadline before every answer (Master.lease_valid), steps
  down at its deadline or when the key is gone, and rejoins as a Secondary over the same log.
- A contradicting tail on a secondary (SPEC "Contradicting tails", under failover) is rolled back by the
  real code: the master's replicator sees the node diverge, Master._repair bisects for the last agreeing
  seq and asks Secondary.roll_back for the cut (MasterConfig.roll_back_diverged).

Faults: a node killed (its tasks stop, it answers nothing) and restarted empty (in memory, it forgot its
log and promises); a node paused (SIGSTOP: its tasks freeze at their next await, requests to it fail or
are kept for a late delivery; the clock runs on); links between two nodes cut or slow (replication
requests queue, are delivered out of order, answers lost or held), a node's link to the lease service cut
or slow (each way takes LEASE_DELAY), late deliveries of requests a master gave up on.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from unittest import mock

from replog import errors, jsoncodec
from replog.config import MasterConfig, SecondaryConfig
from replog.datadir import Opened
from replog.lease import Deferral, LeaseDeadline, epoch_of, should_defer
from replog.log import HashedItem, Log
from replog.master import EpochStale, Master
from replog.protocol import ApiError, Fence, parse_wire_entry
from replog.recovery import Position
from replog.secondary import Secondary
from replog.storage import Meta
from replog.transport import Refused, Reply, Stale, TransportError, Unavailable, parse_reply

try:
    from tests.model.cluster import Cluster, InlineExecutor, VirtualClock
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from model.cluster import Cluster, InlineExecutor, VirtualClock  # type: ignore[no-redef]

T = TypeVar("T")

TTL = 5.0  # the lease TTL (virtual seconds)
INTERVAL = 1.0  # the node loop's period: keep-alive, leader key, campaign
LEASE_DELAY = 2.0  # one way over a slow link to the lease service
LEADER = "/replog/model/leader"

# Deliberately broken rules, to show that the model catches them (REPLOG_FAILOVER_BROKEN):
#   ignore_deadline   a master never checks its lease deadline (nor steps down at it)
#   deadline_from_answer  the deadline counts from the keep-alive's answer, not from its send time
#   skip_recovery     a new master takes writes at once, without promises nor recovery
#   no_rollback       a master never has a diverged secondary roll its tail back
#   claim_epoch       a master that steps down during its recovery claims its epoch as its log epoch
BROKEN_RULES = ("ignore_deadline", "deadline_from_answer", "skip_recovery", "no_rollback", "claim_epoch")


@dataclass
class KV:
    value: str
    create_revision: int
    mod_revision: int
    lease: int


class LeaseService:
    """etcd's keys, revisions and leases as the election uses them, on the virtual clock.

    Expiry is applied before every operation (and by expire()), so what a client sees is what etcd would
    show at that instant."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.revision = 1  # etcd's store starts at revision 1
        self.expiry: dict[int, float] = {}  # lease id -> the time it expires unless kept alive
        self.ttl: dict[int, float] = {}
        self.keys: dict[str, KV] = {}
        self._ids = itertools.count(1)

    def expire(self) -> None:
        for lease, at in sorted(self.expiry.items()):
            if at <= self.clock.now:
                self._drop(lease)

    def _drop(self, lease: int) -> None:
        del self.expiry[lease], self.ttl[lease]
        gone = [k for k, kv in self.keys.items() if kv.lease == lease]
        if gone:
            self.revision += 1  # one transaction deletes every key of the lease
            for k in gone:
                del self.keys[k]

    def grant(self, ttl: float) -> int:
        self.expire()
        lease = next(self._ids)
        self.expiry[lease], self.ttl[lease] = self.clock.now + ttl, ttl
        return lease

    def keep_alive(self, lease: int) -> bool:
        """Refresh the lease from now (when the request reaches etcd); False if it is gone."""
        self.expire()
        if lease not in self.expiry:
            return False
        self.expiry[lease] = self.clock.now + self.ttl[lease]
        return True

    def get(self, key: str) -> KV | None:
        self.expire()
        return self.keys.get(key)

    def create(self, key: str, value: str, lease: int) -> KV | None:
        """Txn(compare create_revision(key) == 0, put key attached to lease, else get key): the key as it is
        after the transaction; None if the lease is gone (etcd answers 'requested lease not found')."""
        self.expire()
        kv = self.keys.get(key)
        if kv is None:
            if lease not in self.expiry:
                return None
            self.revision += 1
            kv = self.keys[key] = KV(value, self.revision, self.revision, lease)
        return kv

    def delete_if(self, key: str, create_revision: int) -> bool:
        """Txn(compare create_revision(key) == create_revision, delete key): resign only one's own key."""
        self.expire()
        kv = self.keys.get(key)
        if kv is None or kv.create_revision != create_revision:
            return False
        self.revision += 1
        del self.keys[key]
        return True


@dataclass(frozen=True)
class RollbackRecord:
    """What one rollback removed, and the log before and after it (chain values), to check it against."""

    node: str
    epoch: int
    keep: int
    removed: tuple[HashedItem, ...]
    before: tuple[bytes, ...]
    after: tuple[bytes, ...]
    before_items: tuple[HashedItem, ...]


@dataclass(eq=False)
class FRequest:
    """A replication request as it left a master."""

    body: bytes
    fence: Fence | None
    src: int
    dst: int
    future: asyncio.Future[Reply] | None = None


def hashes_of(log: Log) -> tuple[bytes, ...]:
    return tuple(log.hash(s) for s in range(log.last_seq + 1))


def secondary_over(
    log: Log, *, adopted: bool, promised: int, promised_to: str | None, log_epoch: int, seed: int
) -> Secondary:
    """A Secondary holding log (the node's own, kept across a role change), its promise and log epoch."""
    meta = Meta(log.log_id if adopted else None, promised, promised_to, log_epoch)
    s = Secondary(SecondaryConfig(data_dir=None, seed=seed), opened=Opened(log, meta, None, adopted))
    s.logger = RecordingLogger(s.logger)
    return s


class FLink:
    """The Transport from the master on node src to the node dst (whatever process and role it has now)."""

    def __init__(self, cluster: FCluster, src: int, dst: int) -> None:
        self.cluster, self.src, self.dst = cluster, src, dst
        self.master: Master = None  # type: ignore[assignment]  # set once the Master it serves is built
        self.queue: list[FRequest] = []

    @property
    def sender(self) -> FNode:
        return self.cluster.nodes[self.src]

    async def _gate(self) -> None:
        await self.sender.running.wait()  # a paused sender sends nothing and reads no answer

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        await self._gate()
        if not self.cluster.reachable(self.src, self.dst):
            raise TransportError("model: unreachable")
        result = await fn()
        await self._gate()
        return result

    async def promise(self) -> Reply:
        fence = self.master.fence
        assert fence is not None, "a promise request without a fence"
        return await self._call(lambda: self.cluster.call(self.dst, fence, self.master, "promise"))

    async def health(self, at: int) -> Reply:
        fence = self.master.fence
        return await self._call(lambda: self.cluster.call(self.dst, fence, self.master, "health", at=at))

    async def entries(self, since: int, limit: int) -> tuple[Reply, list[Any]]:
        fence = self.master.fence
        assert fence is not None, "an entries request without a fence"
        got: list[Any] = []
        reply = await self._call(
            lambda: self.cluster.call(self.dst, fence, self.master, "entries", since=since, limit=limit, got=got)
        )
        return reply, [parse_wire_entry(item) for item in got[0]]

    async def roll_back(self, keep: int, keep_hash: bytes) -> Reply:
        fence = self.master.fence
        assert fence is not None, "a rollback request without a fence"
        return await self._call(
            lambda: self.cluster.call(self.dst, fence, self.master, "rollback", keep=keep, keep_hash=keep_hash)
        )

    async def replicate(self, body: bytes) -> Reply:
        await self._gate()
        m = self.master
        req = FRequest(body, m.fence, self.src, self.dst)
        c = self.cluster
        if not c.reachable(self.src, self.dst):
            c.keep_late(req)
            raise TransportError("model: unreachable")
        if c.mode(self.src, self.dst) == "slow":
            req.future = asyncio.get_running_loop().create_future()
            self.queue.append(req)
            try:
                reply = await req.future
            except asyncio.CancelledError:
                if req in self.queue:
                    self.queue.remove(req)
                    c.keep_late(req)
                raise
        else:
            reply = await c.deliver_request(req)
        await self._gate()
        return reply


class FNode:
    """One node's place: its current process (alive or not), its role, its lease and its loop."""

    def __init__(self, cluster: FCluster, slot: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self.name = f"n{slot + 1}"
        self.running = asyncio.Event()
        self.running.set()
        self.alive = False
        self.incarnation = 0  # processes started in this place
        self.amnesia = 0  # restarts that lost a log or a promise
        self.tasks: list[asyncio.Task[Any]] = []
        self.master: Master | None = None
        self.secondary: Secondary | None = None
        self.epoch = 0  # the leader key's create-revision while master
        self.no_quorum_since: float | None = None  # when the master last lost its promise majority
        self.resign: int | None = None  # a leader key of ours to delete once we are no longer master
        self.links: list[FLink] = []
        self.lease: int | None = None
        self.deadline = LeaseDeadline(TTL)
        self.deferral = Deferral(TTL, 1.0)
        self.had_history = False  # this process holds every entry and promise it ever took (not restarted empty)
        self.masters: list[Master] = []  # every Master this place ran, oldest first
        self.past: list[tuple[Log, int, int]] = []  # what each killed process held: log, durable seq, log epoch

    def held(self) -> tuple[Log, int, int] | None:
        """This process's log, how far it holds it, and its log epoch (a recovering master claims none)."""
        if not self.alive:
            return None
        if self.master is not None:
            m = self.master
            return (m.log, m.log.last_seq, m.epoch) if not m.recovering else None
        if self.secondary is not None:
            s = self.secondary
            return s.log, s.durable, s.log_epoch
        return None

    # -- processes ----------------------------------------------------------------

    def start(self) -> None:
        """A new process, empty (in memory): it serves nothing until it has read the leader key."""
        if self.incarnation and (self.secondary is not None or self.master is not None):
            self.amnesia += 1
        self.incarnation += 1
        self.alive = True
        self.running.set()
        self.master, self.secondary, self.epoch, self.resign = None, None, 0, None
        self.lease = None
        self.deadline = LeaseDeadline(TTL)
        self.deferral = Deferral(TTL, 1.0)
        self.had_history = self.incarnation == 1  # a first process lost nothing; a restarted one lost all
        self.own(self._loop(), "loop")

    def kill(self) -> None:
        held = self.held()
        if held is not None:
            self.past.append(held)  # frozen: what acks this process gave may still be counted
        self.alive = False
        for t in self.tasks:
            t.cancel()
        self.tasks = []
        if self.master is not None:
            self.master.depose("killed")  # its waiting writes die with it (the client sees the connection drop)
            self.master.close()
        self.cluster.drop_queues(self.slot)

    def own(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self.cluster.loop.create_task(coro, name=f"{self.name} {name}")

        def done(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.cluster.unexpected.append(f"{self.name}: task {name} died: {t.exception()!r}")

        task.add_done_callback(done)
        self.tasks.append(task)
        return task

    async def sleep(self, delay: float) -> None:
        await self.cluster.clock.sleep(delay)
        await self.running.wait()

    def now(self) -> float:
        return self.cluster.clock.now

    # -- the lease service, over this node's link to it ------------------------------

    async def etcd(self, fn: Callable[[], T]) -> T:
        c = self.cluster
        await self.running.wait()
        mode = c.lease_links[self.slot]
        if mode == "cut":
            await c.clock.sleep(INTERVAL)  # the client's timeout
            await self.running.wait()
            raise TransportError("model: the lease service is unreachable")
        if mode == "slow":
            await c.clock.sleep(LEASE_DELAY)
        result = fn()
        if mode == "slow":
            await c.clock.sleep(LEASE_DELAY)
        await self.running.wait()
        return result

    # -- the node loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._cycle()
            except TransportError:
                pass
            self._check_deadline()
            await self.sleep(INTERVAL / 2)

    def _check_deadline(self) -> None:
        if self.master is not None and not self.deadline.valid(self.now()) and "ignore_deadline" not in self.broken:
            self.step_down("lease_deadline")

    @property
    def broken(self) -> frozenset[str]:
        return self.cluster.broken

    async def _keep_lease(self) -> bool:
        svc = self.cluster.svc
        sent = self.now()
        if self.lease is None:
            self.lease = await self.etcd(lambda: svc.grant(TTL))
            self.deadline.lost()
            self.deadline.renewed(self.now() if "deadline_from_answer" in self.broken else sent)
            return True
        lease = self.lease
        if await self.etcd(lambda: svc.keep_alive(lease)):
            self.deadline.renewed(self.now() if "deadline_from_answer" in self.broken else sent)
            return True
        self.lease = None
        self.deadline.lost()
        return False

    async def _cycle(self) -> None:
        svc = self.cluster.svc
        if not await self._keep_lease():
            if self.master is not None:
                self.step_down("lease_lost")
            return
        kv = await self.etcd(lambda: svc.get(LEADER))
        if self.master is not None:
            if kv is None or kv.create_revision != self.epoch:
                self.step_down("leader_key_lost")
            elif self.master.recovering or not self.master.writable:
                # A master that cannot keep (or win) a promise majority for a few lease periods resigns, so
                # that a node that can takes over.
                self.no_quorum_since = self.now() if self.no_quorum_since is None else self.no_quorum_since
                if self.now() - self.no_quorum_since > 2 * TTL:
                    self.step_down("no_quorum")
            else:
                self.no_quorum_since = None
            return
        if kv is not None and self.resign is not None and kv.create_revision == self.resign:
            rev = self.resign
            await self.etcd(lambda: svc.delete_if(LEADER, rev))
            self.resign = None
            return
        if self.secondary is None:
            await self._boot(kv)
            return
        if kv is not None:
            self.deferral.reset()
            return
        await self._campaign()

    async def _boot(self, kv: KV | None) -> None:
        """A process restarted empty promises from the leader key before it serves (SPEC "What this
        promises"): a master it had promised before the restart cannot win it back."""
        s = secondary_over(
            Log(uuid.uuid4().hex), adopted=False, promised=0, promised_to=None, log_epoch=0, seed=self.slot
        )
        if kv is not None and kv.create_revision - 1 > s.promised:
            # As replog.node does: promised "just below" the current epoch, to nobody: every older master
            # is refused, the current one gets the promise when it asks.
            s.promised, s.promised_to = kv.create_revision - 1, None
        self.secondary = s

    def position(self) -> Position | None:
        m, s = self.master, self.secondary
        if m is not None:
            return Position(self.name, m.log.log_id, m.epoch or m._saved_epoch, m.log.last_seq)
        if s is not None:
            return Position(self.name, s.log.log_id if s.adopted else None, s.log_epoch, s.durable)
        return None

    async def _campaign(self) -> None:
        c = self.cluster
        s = self.secondary
        assert s is not None
        mine = self.position()
        assert mine is not None
        others = {}
        for n in c.nodes:
            if n is not self and c.reachable(self.slot, n.slot):
                p = n.position()
                if p is not None:
                    others[n.name] = p
        if should_defer(self.name, mine, others) and self.deferral.may_defer(self.now(), c.rng.random):
            return
        if not self.deadline.valid(self.now()) or self.lease is None:
            return
        master = self._new_master(s)
        lease = self.lease
        kv = await self.etcd(lambda: c.svc.create(LEADER, f"{self.name} {master.id}", lease))
        if kv is None or kv.value != f"{self.name} {master.id}":
            return
        self.deferral.reset()
        epoch = epoch_of(kv.create_revision, s.promised)
        if epoch is None:
            c.unexpected.append(f"{self.name}: leader key revision {kv.create_revision} not above its promise")
            self.resign = kv.create_revision
            return
        self._lead(master, epoch)

    def _new_master(self, s: Secondary) -> Master:
        c = self.cluster
        others = tuple(n.name for n in c.nodes if n is not self)
        config = MasterConfig(
            secondaries=others,
            heartbeat_interval=1.0,
            batch_max_count=c.batch_max_count,
            replication_window=c.window,
            roll_back_diverged="no_rollback" not in self.broken,
        )
        meta = Meta(s.log.log_id if s.adopted else None, s.promised, s.promised_to, s.log_epoch)
        # A process that was never restarted empty holds every entry and promise it took: its own vote
        # counts, as a node's on its data dir does (in memory, "durable" is "held by this process").
        had = self.had_history and (s.adopted or s.promised > 0 or s.log.last_seq > 0)
        opened = Opened(s.log, meta, None, had)
        links = [FLink(c, self.slot, n.slot) for n in c.nodes if n is not self]
        master = FMaster(
            config, list(links), opened, sleep=self.sleep, rand=lambda: 0.5, clock=c.clock.time, cluster=c, node=self
        )
        for link in links:
            link.master = master
        return master

    def _lead(self, master: Master, epoch: int) -> None:
        """Won the leader key at epoch: stop serving as a secondary; fence and recover before any write."""
        c = self.cluster
        self.secondary = None
        self.master, self.epoch = master, epoch
        self.no_quorum_since = None
        self.masters.append(master)
        c.master_of[master.id] = self
        if "ignore_deadline" not in self.broken:
            master.lease_valid = lambda: self.deadline.valid(self.now())
        self.own(self._recover(master, epoch), f"master {epoch}")

    async def _recover(self, master: Master, epoch: int) -> None:
        c = self.cluster
        if "skip_recovery" in self.broken:
            master.fence = Fence(epoch, master.id)
            master.epoch, master.recovering, master._saved_epoch = epoch, False, epoch
            master.start_end = master.log.last_seq
            master._on_progress(0)
        else:
            try:
                await master.recover(epoch)
            except EpochStale:
                if self.master is master:
                    self.step_down("outdated_epoch")
                return
        c.recovered(self, master)
        for r in master.replicators:
            self.own(r.run(), f"replicator {epoch} {r.url}")

    def step_down(self, reason: str) -> None:
        """Stop taking writes at once and rejoin as a secondary over the same log (its promise and log
        epoch kept); the leader key, if still ours, is resigned by the loop."""
        m = self.master
        if m is None:
            return
        m.depose(reason)
        m.close()
        me = asyncio.current_task()
        for t in [
            t for t in self.tasks if t.get_name().startswith(f"{self.name} master") or " replicator " in t.get_name()
        ]:
            if t is not me:
                t.cancel()
        self.tasks = [t for t in self.tasks if not t.done() and not t.cancelled()]
        self.cluster.drop_queues(self.slot, sender_only=True)
        promised = max(m.fence.epoch if m.fence else 0, m._saved_promise)
        # A master deposed before its recovery finished never took its epoch as its log epoch: it keeps the
        # one its log had (what a data dir's meta says then, even if recovery already cut or copied part of
        # the log).
        log_epoch = m.epoch if not m.recovering else m._saved_epoch
        if "claim_epoch" in self.broken:
            log_epoch = promised = self.epoch  # as replog.node does in memory
        self.secondary = secondary_over(
            m.log,
            adopted=m.log.last_seq > 0 or m._saved_epoch > 0 or not m.recovering,
            promised=promised,
            promised_to=m.id if m.fence and m.fence.epoch == promised else m._saved_promise_to,
            log_epoch=log_epoch,
            seed=self.slot,
        )
        self.master = None
        self.resign = self.epoch
        self.epoch = 0
        self.cluster.stepped_down.append((self.name, reason))


class FMaster(Master):
    """The real Master, with its rollbacks recorded for the rollback-record invariant."""

    def __init__(self, *args: Any, cluster: FCluster, node: FNode, **kw: Any) -> None:
        opened: Opened = args[2]
        super().__init__(*args, **kw)
        self._cluster = cluster
        self._node = node
        self._saved_promise_to = opened.meta.promised_to
        self.logger = RecordingLogger(self.logger)

    async def _roll_back(self, keep: int, epoch: int) -> None:
        log = self.log
        before, items = hashes_of(log), tuple(log.hashed(1, log.last_seq))
        mark = len(self.logger.events)
        await super()._roll_back(keep, epoch)
        self._cluster.record_rollback(self._node.name, epoch, keep, self.logger, mark, before, items, log)


class RecordingLogger:
    """Wraps a structlog logger: keeps the events of interest (the entries a rollback logs), passes all on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., Any]:
        method = getattr(self.inner, level)

        def log(event: str, **kw: Any) -> Any:
            if event == "rolled_back_entry":
                self.events.append((event, kw))
            return method(event, **kw)

        return log


class FCluster:
    """N failover nodes, the lease service and the wire between them, on one loop with virtual time."""

    run = Cluster.run
    settle = Cluster.settle
    _answer = Cluster._answer
    release_answer = Cluster.release_answer

    def __init__(
        self, nodes: int, *, batch_max_count: int, window: int, seed: int = 0, broken: frozenset[str] = frozenset()
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(InlineExecutor(max_workers=1))
        self.clock = VirtualClock()
        self.rng = random.Random(seed)
        self._uuid = mock.patch.object(uuid, "uuid4", self.uuid4)
        self._uuid.start()
        self.broken = broken
        self.batch_max_count, self.window = batch_max_count, window
        self.svc = LeaseService(self.clock)
        self.links: dict[frozenset[int], str] = {}  # node pair -> "cut" or "slow" (absent: up)
        self.lease_links = ["up"] * nodes
        self.late: list[FRequest] = []
        self.answers: list[tuple[asyncio.Future[Reply], Reply | BaseException]] = []
        self.events = itertools.count(1)
        self.unexpected: list[str] = []
        self.violations: list[str] = []
        self.rollbacks: list[RollbackRecord] = []
        self.stepped_down: list[tuple[str, str]] = []
        self.master_of: dict[str, FNode] = {}  # master id -> its node
        self.on_recovered: list[Callable[[FNode, Master], None]] = []
        self.late_delivered = 0
        self.nodes = [FNode(self, i) for i in range(nodes)]
        for n in self.nodes:
            n.start()
        self.run()

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

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
        finally:
            self.loop.close()
            self._uuid.stop()

    def recovered(self, node: FNode, master: Master) -> None:
        for hook in self.on_recovered:
            hook(node, master)

    # -- the wire ------------------------------------------------------------------------

    def mode(self, a: int, b: int) -> str:
        return self.links.get(frozenset((a, b)), "up")

    def reachable(self, src: int, dst: int) -> bool:
        n = self.nodes[dst]
        return self.mode(src, dst) != "cut" and n.alive and n.running.is_set()

    def keep_late(self, req: FRequest) -> None:
        req.future = None
        self.late.append(req)
        del self.late[:-24]

    def queues(self) -> list[tuple[FLink, FRequest]]:
        return [
            (link, req)
            for n in self.nodes
            if n.master is not None
            for link in n.master._transports  # type: ignore[attr-defined]
            for req in link.queue
        ]

    def drop_queues(self, slot: int, *, sender_only: bool = False) -> None:
        """The connections of a process that died (or of a master that stepped down) break."""
        for n in self.nodes:
            for m in n.masters:
                for link in m._transports:  # type: ignore[attr-defined]
                    if link.src == slot or (not sender_only and link.dst == slot):
                        for req in link.queue:
                            if req.future is not None and not req.future.done():
                                req.future.set_exception(TransportError("model: connection reset"))
                        link.queue.clear()

    async def call(self, dst: int, fence: Fence | None, sender: Master, kind: str, **kw: Any) -> Reply:
        """Handle one request at the node dst as its HTTP handler would; map answers as HttpTransport does."""
        node = self.nodes[dst]
        if not node.alive or not node.running.is_set():
            raise TransportError("model: unreachable")
        m = node.master
        if m is not None:
            if fence is None:
                raise TransportError("model: a master answers no position read")
            own = max(m.fence.epoch if m.fence else 0, node.epoch)
            if fence.epoch <= own:
                raise Stale(own, m.log.log_id, m.log.last_seq)
            node.step_down("newer_epoch")  # a newer master: rejoin as its secondary, then answer
        s = node.secondary
        if s is None:
            raise TransportError("model: the node has not started serving")
        try:
            if kind == "promise":
                s.check_disk()
                await s.fence(fence, promise=True)  # type: ignore[arg-type]
                data = s.status()
            elif kind == "health":
                if fence is not None:
                    await s.fence(fence, promise=False)
                data = {**s.status(kw["at"]), "status": "ok"}
            elif kind == "entries":
                await s.fence(fence, promise=False)  # type: ignore[arg-type]
                kw["got"].append(jsoncodec.loads(jsoncodec.dumps(s.entries(kw["since"], kw["limit"]))))
                data = s.status()
            elif kind == "rollback":
                log = s.log
                before, items = hashes_of(log), tuple(log.hashed(1, log.last_seq))
                mark = len(s.logger.events)
                data = await s.roll_back(fence, kw["keep"], kw["keep_hash"])  # type: ignore[arg-type]
                self.record_rollback(node.name, fence.epoch, kw["keep"], s.logger, mark, before, items, log)  # type: ignore[union-attr]
            else:
                data = await s.replicate(kw["req"].body, fence)  # type: ignore[arg-type]
        except errors.StaleEpoch as exc:
            raise Stale(exc.extra["epoch"], exc.extra.get("log"), exc.extra.get("seq", 0)) from None
        except (errors.EntryConflict, errors.LogMismatch) as exc:
            raise Refused(exc.code, exc.detail) from None
        except errors.DiskFailed as exc:
            raise Unavailable(f"HTTP 503: {exc.code}") from None
        except ApiError as exc:
            self.unexpected.append(f"{node.name} answered 400 {exc.code}: {exc.detail}")
            raise TransportError(f"HTTP 400: {exc.code}") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.unexpected.append(f"{node.name} raised {exc!r}")
            raise TransportError("HTTP 500") from None
        return parse_reply(jsoncodec.loads(jsoncodec.dumps(data)))

    def record_rollback(
        self,
        node: str,
        epoch: int,
        keep: int,
        logger: RecordingLogger,
        mark: int,
        before: tuple[bytes, ...],
        items: tuple[HashedItem, ...],
        log: Log,
    ) -> None:
        """Keep what a rollback logged as removed (rolled_back_entry, without a data dir), with the log before
        and after it, for the rollback-record invariant."""
        removed = tuple(
            (kw["id"], kw["text"], kw["flags"], bytes.fromhex(kw["hash"]))
            for name, kw in logger.events[mark:]
            if name == "rolled_back_entry"
        )
        if removed or len(before) != log.last_seq + 1:
            self.rollbacks.append(RollbackRecord(node, epoch, keep, removed, before, hashes_of(log), items))

    async def deliver_request(self, req: FRequest) -> Reply:
        src = self.nodes[req.src]
        sender = next((m for m in src.masters if req.fence is not None and m.id == req.fence.master), None)
        if sender is None or req.fence is None:
            raise TransportError("model: a request of an unknown sender")
        return await self.call(req.dst, req.fence, sender, "replicate", req=req)

    async def deliver(self, req: FRequest, *, answer: str = "now") -> None:
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

    async def deliver_late(self, req: FRequest) -> None:
        if not self.reachable(req.src, req.dst):
            return
        try:
            await self.deliver_request(req)
            self.late_delivered += 1
        except (TransportError, Stale, Refused):
            pass
