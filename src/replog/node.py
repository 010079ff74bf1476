"""`replog node`: one process that etcd makes master or secondary (SPEC "Automatic failover (etcd)").

A node starts as a secondary: it holds an etcd lease, registers itself under the cluster's members, and
watches the leader key. When nobody holds the key it campaigns (after deferring, for a bounded time, to a
reachable member whose log is more up to date); the winner's epoch is its key's create-revision. Having
won, it closes its secondary, opens the same log as a replog.master.Master with that epoch, fences and
recovers exactly as a static master does, and takes writes. It steps down -- every waiting write answers
503 not_master, the key is resigned, the same log is reopened as a secondary -- when its lease is lost,
its own lease deadline passes, the key is gone or another's, a node reports a newer epoch, or it cannot
keep a promise majority for a few lease periods. The new master rolls back any tail of it that the new
log contradicts (into DATA_DIR/rollback/).

Safety for w >= a majority comes from the promises (replog.master), never from etcd's timing; the lease
only bounds how long a cut-off master answers w=1 writes (replog.lease.LeaseDeadline).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from replog import __version__, errors, etcd_access
from replog.auth import Guard, bearer_headers
from replog.backoff import Backoff
from replog.config import MasterConfig, SecondaryConfig, Tls
from replog.coordinator import Coordinator, EtcdAuthError, EtcdError, Leader, LeaseLost
from replog.dashboard import add_dashboard_routes
from replog.datadir import Opened, open_log
from replog.durable import GroupCommit
from replog.edge import client_context
from replog.etcd_access import EtcdAccess
from replog.http import (
    expect_handler,
    json_errors,
    json_response,
    livez,
    log_handler,
    messages_handler,
    openapi,
    read_body,
)
from replog.lease import Deferral, LeaseDeadline, boottime, should_defer
from replog.log import Log
from replog.master import EpochStale, Master
from replog.metrics import CONTENT_TYPE, GateCollector, NotReady, short_url
from replog.protocol import Fence, parse_fence, parse_hash, parse_query_int, parse_write
from replog.recovery import Position
from replog.replicator import Replicator, supervise
from replog.secondary import Secondary
from replog.storage import Meta
from replog.stream import stream_handler
from replog.tail import Tail
from replog.transport import HttpTransport, Transport, TransportError, parse_reply


@dataclass(frozen=True)
class NodeConfig:
    name: str
    advertise: str  # the base URL other nodes and clients reach this node at
    etcd: tuple[str, ...]  # etcd client URLs
    nodes: int  # the cluster's size N: a majority is N // 2 + 1, whoever is registered now
    cluster: str = "replog"  # keys live under /replog/<cluster>/
    lease_ttl: int = 5  # seconds
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str | None = None
    fsync: bool = True
    max_body_bytes: int = 64 << 20
    default_w: int | str = "majority"
    w_timeout: float | None = None
    heartbeat_interval: float = 0.5  # the master's heartbeats and promise rounds
    resign_after: float = 3.0  # lease periods without a promise majority before a master resigns
    master_kw: dict[str, Any] = field(default_factory=dict)  # further MasterConfig fields
    # Security, as for the static roles (SPEC "Security"): the key guards this node's internal endpoints and
    # goes with every call it makes to another node; tls.ca / tls.cert verify those nodes and identify it.
    cluster_key: str | None = field(default=None, repr=False)
    token_file: str | None = None
    tls: Tls = Tls()
    # How etcd is reached: its CA and this node's client certificate (https:// etcd URLs), its user and password.
    etcd_access: EtcdAccess = EtcdAccess()

    @property
    def poll(self) -> float:
        """Seconds between two looks at the leader key."""
        return min(0.25, self.lease_ttl / 10)


class Node:
    """The node's roles, one at a time, around one log; and its conversation with etcd."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.logger = structlog.get_logger().bind(node=config.name)
        self.secondary_config = SecondaryConfig(
            host=config.host,
            port=config.port,
            data_dir=config.data_dir,
            fsync=config.fsync,
            max_body_bytes=config.max_body_bytes,
        )
        # Opened here, before the node listens: a locked or corrupt data dir stops it at once.
        self.secondary: Secondary | None = Secondary(self.secondary_config)
        self.master: Master | None = None
        self.epoch = 0  # the epoch this node holds the leader key at (0: it is no master)
        self.leader: Leader | None = None  # who holds the leader key, as last read
        self.deadline = LeaseDeadline(config.lease_ttl)
        self.deferral = Deferral(config.lease_ttl, jitter=1.0)
        self.coordinator: Coordinator | None = None
        self._session: aiohttp.ClientSession | None = None  # calls to other nodes
        self._etcd_session: aiohttp.ClientSession | None = None
        self._role_tasks: list[asyncio.Task[Any]] = []  # the current role's tasks (group commit, replicators)
        # The current master's secondaries are keyed by member name, one slot each: the name's node index,
        # and the replicator running in each slot with the task that runs it (moved with the member's URL).
        self._slots: dict[str, int] = {}
        self._running: dict[int, tuple[Replicator, asyncio.Task[Any]]] = {}
        self._member_refused: set[tuple[str, str, str]] = set()  # (reason, name, url) already logged
        self._switch = asyncio.Lock()  # one role change at a time
        self._stepping_down: asyncio.Task[None] | None = None
        self._closing = False  # shutting down: a step-down then neither rejoins nor resigns, nor is started
        self._no_majority_since: float | None = None
        self._refused_epochs: set[int] = set()  # stale leader epochs already logged
        self._rand = random.Random()
        self._handed_over = Meta()  # in memory: the secondary's promise and log epoch when it became master
        self._campaign_after = 0.0  # boottime() before which this node does not campaign (after a refusal)
        # A node without a data dir (or with an empty or lost one) remembers no promise: it serves no master
        # before it has read the leader key and taken its create-revision as its promise (SPEC "What this
        # promises"), so that a master older than the current one cannot count it.
        self.fenced = self.secondary is not None and self.secondary.promised > 0

    # -- what handlers see ---------------------------------------------------------

    @property
    def role(self) -> str:
        if self.master is not None:
            return "master"
        return "secondary" if self.secondary is not None else "switching"

    def reader(self) -> Master | Secondary:
        """The role that serves reads now."""
        current = self.master or self.secondary
        if current is None:
            raise errors.Switching("this node is changing roles; retry in a moment")
        return current

    def master_url(self) -> str | None:
        """The master's URL as etcd says, for a not_master answer (None: none now, or the key is this
        node's own, which is answering not_master because it is not -- or no longer -- taking writes)."""
        leader = self.leader
        if leader is None or leader.name == self.config.name:
            return None
        return leader.url

    def not_master(self, detail: str) -> errors.NotMaster:
        """503 not_master naming the master; without one (an election is under way) the role is "candidate",
        so that a client keeps retrying rather than conclude that no URL it knows will ever take writes."""
        url = self.master_url()
        return errors.NotMaster(detail, master=url, role=self.role if url is not None else "candidate")

    def info(self) -> dict[str, Any]:
        """What /health adds under failover: name, role, leader, lease."""
        now = boottime()
        leader = self.leader
        return {
            "name": self.config.name,
            "role": self.role,
            "cluster": self.config.cluster,
            "nodes": self.config.nodes,
            "leader": None if leader is None else {"name": leader.name, "url": leader.url, "epoch": leader.epoch},
            "lease_remaining": round(max(0.0, self.deadline.remaining(now)), 3) if self.deadline.valid(now) else 0,
        }

    def master_health(self, master: Master) -> dict[str, Any]:
        """The master's /health, each secondary with the member name whose slot it is (null: none known)."""
        body = master.health()
        names = {i: n for n, i in self._slots.items()} if master is self.master else {}
        for i, secondary in enumerate(body["secondaries"], start=1):
            secondary["member"] = names.get(i)
        return {**body, "failover": self.info()}

    # -- roles -----------------------------------------------------------------------

    def _start_secondary_commit(self) -> None:
        """The secondary's group-commit writer, once a loop runs (the first secondary is made before)."""
        secondary = self.secondary
        if secondary is not None and secondary.commit is not None and not self._role_tasks:
            self._role_tasks = [asyncio.create_task(secondary.commit.run(), name="group commit")]

    async def _close_secondary(self) -> Opened:
        """Close the secondary and hand its log over (reopened from disk with a data dir)."""
        secondary, self.secondary = self.secondary, None
        assert secondary is not None
        secondary.tail.close()
        await self._cancel_role_tasks(secondary.commit)
        if self.config.data_dir is not None:
            return await self._open_disk()
        meta = Meta(
            log_id=secondary.log.log_id if secondary.adopted else None,
            promised=secondary.promised,
            promised_to=secondary.promised_to,
            log_epoch=secondary.log_epoch,
        )
        self._handed_over = meta
        return Opened(secondary.log, meta, None, False)  # no disk: its own vote never counts

    async def _open_disk(self) -> Opened:
        """Lock and load the data dir again, in a thread: a long log must not stall the event loop."""
        return await asyncio.to_thread(open_log, self.config.data_dir, fsync=self.config.fsync)

    async def _cancel_role_tasks(self, commit: GroupCommit | None) -> None:
        tasks, self._role_tasks = self._role_tasks, []
        for t in reversed(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if commit is not None:
            await commit.close()  # waits until no worker thread uses the disk, then closes it (and its lock)

    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._role_tasks.append(task)
        task.add_done_callback(self._role_task_done(name))
        return task

    def _role_task_done(self, name: str) -> Callable[[asyncio.Task[Any]], None]:
        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            exc = task.exception()
            if isinstance(exc, EpochStale):
                self._refused(exc.epoch, exc.seen)
                self._campaign_after = boottime() + self.config.lease_ttl
                self._step_down_soon("epoch_stale")
            elif self.master is not None:
                self.master.task_died(name, exc)  # type: ignore[arg-type]
                self._step_down_soon("task_died")

        return done

    async def _become_master(self, leader: Leader) -> None:
        """We hold the leader key at leader.epoch: open our log as a master of that epoch and recover."""
        secondary = self.secondary
        if secondary is None or self.master is not None:
            return
        known = max(secondary.promised, secondary.log_epoch)
        if leader.epoch <= known:
            self._refused(leader.epoch, known)
            await self._resign(leader.epoch)
            self._campaign_after = boottime() + self.config.lease_ttl  # no storm of refused campaigns
            return
        assert self.coordinator is not None and self._session is not None
        async with self._switch:
            opened = await self._close_secondary()
            config = MasterConfig(
                host=self.config.host,
                port=self.config.port,
                secondaries=(),
                size=self.config.nodes,
                roll_back_diverged=True,
                default_w=self.config.default_w,
                w_timeout=self.config.w_timeout,
                heartbeat_interval=self.config.heartbeat_interval,
                max_body_bytes=self.config.max_body_bytes,
                data_dir=self.config.data_dir,
                fsync=self.config.fsync,
                **self.config.master_kw,
            )
            master = Master(config, [], opened)
            lease = self.coordinator.lease  # the lease our key lives on: a later one keeps no key of ours
            master.lease_valid = lambda: self.deadline.valid(boottime()) and self.coordinator.lease == lease  # type: ignore[union-attr]
            master.on_deposed = self._step_down_soon
            if opened.disk is not None:
                master.attach_disk(
                    GroupCommit(
                        opened.disk,
                        on_durable=master.durable_to,
                        on_failed=master._on_disk_failed,
                        on_sync=master.metrics.fsynced,
                    )
                )
                self._own(master.commit.run(), "group commit")  # type: ignore[union-attr]
            self.master = master
            self.epoch = leader.epoch
            self._slots, self._running, self._member_refused = {}, {}, set()
            self._no_majority_since = boottime()
            self.logger.warning("elected", epoch=leader.epoch, seq=master.log.last_seq)
            try:
                await self._sync_members()
            except EtcdError as exc:
                self.logger.warning("etcd_unavailable", error=str(exc))
            self._own(self._recover(master, leader.epoch), "recovery")

    async def _recover(self, master: Master, epoch: int) -> None:
        await master.recover(epoch)
        self.logger.warning("taking_writes", epoch=epoch, seq=master.log.last_seq)
        for r in master.replicators:
            self._run_replicator(r)

    def _run_replicator(self, replicator: Replicator) -> None:
        """Run a replicator of the current master in its slot (once: a second call for it does nothing)."""
        running = self._running.get(replicator.index)
        if running is not None and running[0] is replicator:
            return
        task = self._own(supervise(replicator), f"replicator {replicator.url}")
        self._running[replicator.index] = (replicator, task)

    async def _stop_replicator(self, node: int) -> None:
        """Stop the replicator running in slot node (its requests in flight are abandoned), and wait for it."""
        running = self._running.pop(node, None)
        if running is None:
            return
        task = running[1]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if task in self._role_tasks:
            self._role_tasks.remove(task)

    def _transport(self, url: str) -> Transport:
        assert self._session is not None
        return HttpTransport(
            self._session,
            url,
            lambda: self.master.fence if self.master is not None else None,
            replicate_timeout=30.0,
            health_timeout=max(self.config.heartbeat_interval, 0.5),
            cluster_key=self.config.cluster_key,
        )

    async def _sync_members(self) -> None:
        """The master replicates to every other registered member (up to N - 1 of them), one slot per member
        name: a member registered under a new URL (its --advertise changed at a restart) keeps its slot, which
        follows it there, so that one process is never counted twice. A member whose key is gone keeps its
        slot (cut off from etcd, it may still hold and take copies)."""
        master = self.master
        assert self.coordinator is not None
        if master is None:
            return
        members = await self.coordinator.members()
        for member in sorted(members.values(), key=lambda m: m.name):
            if self.master is not master:
                return  # the role changed meanwhile (a move awaits its old replicator)
            if member.name == self.config.name or member.url == self.config.advertise:
                continue
            slot = self._slots.get(member.name)
            if slot is not None and master.replicators[slot - 1].url == member.url:
                continue
            holder = next((r for r in master.replicators if r.url == member.url), None)
            if holder is not None:
                owner = next((n for n, i in self._slots.items() if i == holder.index), None)
                if owner is None or owner not in members or members[owner].url == member.url:
                    # Another member's slot reaches this URL and keeps it (a stale key of a renamed node, say):
                    # a second slot would count the process behind it twice.
                    self._refuse_member("member_url_taken", member.name, member.url, slot=holder.index)
                    continue
                # Its owner moves away from this URL in this same pass (two members swapped URLs); meanwhile
                # the one process behind both slots is counted once (Master._on_progress).
            if slot is None:
                self._add_member(master, member.name, member.url)
            else:
                await self._move_member(master, slot, member.name, member.url)

    def _add_member(self, master: Master, name: str, url: str) -> None:
        try:
            replicator = master.add_secondary(url, self._transport(url))
        except ValueError:
            self._refuse_member("too_many_members", name, url, nodes=self.config.nodes)
            return
        self._slots[name] = replicator.index
        self._member_refused = {r for r in self._member_refused if r[1] != name}  # a later refusal is news
        self.logger.info("member_added", member=name, url=url, slot=replicator.index)
        if not master.recovering:
            self._run_replicator(replicator)

    async def _move_member(self, master: Master, slot: int, name: str, url: str) -> None:
        """The member in slot moved to url: its new replicator replaces the old one, which is stopped first."""
        before = master.replicators[slot - 1].url
        self.logger.warning("member_moved", member=name, old=short_url(before), new=short_url(url), slot=slot)
        master.move_secondary(slot, url, self._transport(url))
        self._member_refused = {r for r in self._member_refused if r[1] != name}
        await self._stop_replicator(slot)
        if self.master is master and not master.recovering:
            self._run_replicator(master.replicators[slot - 1])

    def _refuse_member(self, reason: str, name: str, url: str, **kw: Any) -> None:
        """Log once per master why a registered member gets no slot."""
        if (reason, name, url) not in self._member_refused:
            self._member_refused.add((reason, name, url))
            self.logger.error(reason, member=name, url=url, **kw)

    def _step_down_soon(self, reason: str) -> None:
        """Stop taking writes now (synchronously), and change roles as soon as the switch is free."""
        if self.master is not None:
            self.master.depose(reason)
        if self._closing:
            return  # _shutdown steps down itself
        if self._stepping_down is None or self._stepping_down.done():
            self._stepping_down = asyncio.ensure_future(self._step_down(reason))
            self._stepping_down.add_done_callback(self._step_down_done)

    def _step_down_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Its log could not be reopened (a disk error): it serves nothing, and says why.
            self.logger.critical("step_down_failed", error=repr(task.exception()))

    async def _step_down(self, reason: str, *, rejoin: bool = True) -> None:
        """Stop being the master (if we are) and rejoin as a secondary of whoever wins next (rejoin)."""
        async with self._switch:
            master = self.master
            if master is None:
                return
            rejoin = rejoin and not self._closing  # nothing is reopened by a node on its way out
            master.depose(reason)  # at once: every waiting write answers 503 not_master
            epoch, self.epoch = self.epoch, 0
            self.master = None
            master.tail.close()
            master.close()
            await self._cancel_role_tasks(master.commit)
            if rejoin:
                if self.config.data_dir is not None:
                    self.secondary = Secondary(self.secondary_config, opened=await self._open_disk())
                else:
                    meta = self._meta_after(master)
                    opened = Opened(master.log, meta, None, meta.log_id is not None)
                    self.secondary = Secondary(self.secondary_config, opened=opened)
                self._start_secondary_commit()
                self.logger.warning(
                    "rejoined_as_secondary", epoch=epoch, reason=reason, seq=self.secondary.log.last_seq
                )
        # Outside the switch: with etcd unreachable this waits for its timeouts, and the node serves meanwhile.
        # (Not when closing: revoking the lease takes the key too.)
        if not self._closing:
            await self._resign(epoch)

    def _meta_after(self, master: Master) -> Meta:
        """In memory: what a deposed master's log stands for, as its data dir's meta would say. Its log epoch
        is its own epoch only if its recovery finished; deposed before that, its log (even partly cut or
        copied) is still the log of the epoch it had, and claiming more could lose a majority write."""
        before = self._handed_over
        if master.fence is not None and master.fence.epoch >= before.promised:
            promised, promised_to = master.fence.epoch, master.id
        else:
            promised, promised_to = before.promised, before.promised_to
        # Its log identity is the cluster's if it holds entries, a log epoch, or recovered (an empty log
        # that never recovered has an identity of its own making, which no one must adopt).
        known = master.log.last_seq > 0 or master.log_epoch > 0 or not master.recovering
        return Meta(
            log_id=master.log.log_id if known else None,
            promised=promised,
            promised_to=promised_to,
            log_epoch=master.log_epoch,
        )

    async def _resign(self, epoch: int) -> None:
        if self.coordinator is None or epoch == 0:
            return
        try:
            if await self.coordinator.resign(epoch):
                self.logger.info("resigned", epoch=epoch)
        except EtcdError as exc:
            self.logger.warning("resign_failed", epoch=epoch, error=str(exc))

    def _refused(self, epoch: int, known: int) -> None:
        """etcd handed out an epoch at or below one this node knows: its revisions went back (wiped or
        restored). Never accepted; logged once per epoch with the way out (docs/failover.md)."""
        if epoch in self._refused_epochs:
            return
        self._refused_epochs.add(epoch)
        self.logger.error(
            "etcd_epoch_stale",
            epoch=epoch,
            known=known,
            detail="etcd's revision is below an epoch this cluster already used: etcd was wiped or restored. "
            "Restore etcd from a snapshot, or raise its revision past the known epoch (docs/failover.md)",
        )

    # -- the loops -------------------------------------------------------------------

    async def run(self) -> None:
        """The node's life: a lease kept alive, and the leader key watched. Runs until cancelled."""
        self._start_secondary_commit()
        # Two sessions: calls to other nodes verify them with --tls-ca (and present --tls-cert), as the static
        # master's do; etcd is reached as its URLs say, verified with --etcd-ca (or the system's CAs: its CA is
        # not the nodes'), presenting --etcd-cert, authenticated as --etcd-user (replog.etcd_access).
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=self._node_ssl()))
        access = self.config.etcd_access
        self._etcd_session = etcd_access.session(access)
        timeout = max(0.5, min(2.0, self.config.lease_ttl / 4))
        self.coordinator = etcd_access.coordinator(
            self._etcd_session, self.config.etcd, self.config.cluster, access, timeout=timeout
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._lease_loop(), name="lease")
                tg.create_task(self._election_loop(), name="election")
                tg.create_task(self._deadline_loop(), name="deadline")
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Close whichever role the node has, with every task it started: a step-down under way finishes
        first (cancelled mid-switch, it would leave a half-closed log holding its data dir's lock)."""
        self._closing = True
        stepping = self._stepping_down
        if stepping is not None and not stepping.done():
            await asyncio.wait([stepping])  # not gather: cancelling this wait must not cancel it mid-switch
        if self.master is not None:
            await self._step_down("shutdown", rejoin=False)
        if self.coordinator is not None and self.coordinator.lease is not None:
            try:
                await asyncio.wait_for(self.coordinator.revoke(), 1.0)
            except (EtcdError, TimeoutError):
                pass
        if self.secondary is not None:
            self.secondary.tail.close()
            await self._cancel_role_tasks(self.secondary.commit)
        if self._session is not None:
            await self._session.close()
        if self._etcd_session is not None:
            await self._etcd_session.close()

    def _node_ssl(self) -> Any:
        """How this node verifies the nodes it calls: against --tls-ca, presenting its own certificate (for
        nodes that ask for one); without TLS options, aiohttp's default (the system's CAs)."""
        tls = self.config.tls
        if tls.ca is None and tls.cert is None:
            return True
        return client_context(Tls(cert=tls.cert, key=tls.key, ca=tls.ca))

    async def _lease_loop(self) -> None:
        """Hold a lease and our member key: renew every third of the TTL; a lost lease is granted again."""
        coordinator = self.coordinator
        assert coordinator is not None
        ttl = self.config.lease_ttl
        failing = False
        registered = False
        # Leases lost in a row: granted again after a short, growing, jittered pause, never in a tight loop.
        lost = 0
        backoff = Backoff(base=0.05, cap=min(1.0, ttl / 3))
        while True:
            try:
                if coordinator.lease is None:
                    sent_at = boottime()
                    registered = False
                    await coordinator.grant(ttl)
                    self.deadline.renewed(sent_at)
                else:
                    self.deadline.renewed(await coordinator.keep_alive())
                    lost = 0  # a renewal went through: the lease holds again
                if not registered:  # under this lease (a put that failed is tried again, not forgotten)
                    await coordinator.register(self.config.name, self.config.advertise)
                    registered = True
                    self.logger.info("registered", lease=coordinator.lease, ttl=ttl)
                if failing:
                    self.logger.info("etcd_reachable")
                failing = False
            except LeaseLost as exc:
                self.deadline.lost()
                coordinator.lease = None
                lost += 1
                self.logger.warning("lease_lost", error=str(exc), times=lost)
                if self.master is not None:
                    self._step_down_soon("lease_lost")
                await asyncio.sleep(backoff.delay(lost, self._rand.random))
                continue
            except EtcdError as exc:
                if not failing:
                    event = "etcd_refused" if isinstance(exc, EtcdAuthError) else "etcd_unavailable"
                    self.logger.warning(event, error=str(exc))
                failing = True
            await asyncio.sleep(ttl / 3 if not failing else min(0.5, ttl / 5))

    async def _election_loop(self) -> None:
        """Watch the leader key: campaign when it is free, step down when it is no longer ours."""
        coordinator = self.coordinator
        assert coordinator is not None
        ticks = 0
        refused = False  # etcd refuses our credentials now (said once, not every tick)
        while True:
            await asyncio.sleep(self.config.poll)
            ticks += 1
            try:
                await self._tick(coordinator, ticks)
                refused = False
            except EtcdAuthError as exc:
                # Not a passing outage: the password or the role changed in etcd. Loud, once per spell.
                if not refused:
                    self.logger.error("etcd_refused", error=str(exc))
                refused = True
            except EtcdError as exc:
                self.logger.debug("etcd_unavailable", error=str(exc))
            except (TransportError, OSError) as exc:
                self.logger.warning("election_tick_failed", error=str(exc))
            except Exception as exc:
                # A bug, or a log that cannot be reopened: say so loudly, and keep watching the key (a node
                # whose loop died would hold no lease and look alive).
                self.logger.critical("election_tick_failed", error=repr(exc), exc_info=True)

    async def _deadline_loop(self) -> None:
        """A master steps down at its own lease deadline, whether or not etcd answers: that is the point
        of it. (Every write answer checks the deadline too; this also fails the writes still waiting.)"""
        while True:
            delay = self.config.poll
            if self.master is not None and not self.master.deposed:
                remaining = self.deadline.remaining(boottime())
                if remaining <= 0:
                    self._step_down_soon("lease_deadline_passed")
                else:
                    delay = min(delay, remaining + 0.001)
            await asyncio.sleep(delay)

    async def _tick(self, coordinator: Coordinator, ticks: int) -> None:
        if coordinator.lease is None:
            return
        leader, revision = await coordinator.read_leader()
        self.leader = leader
        if not self.fenced and self.secondary is not None:
            # Promised to nobody: every older master is refused, the current or next one (no epoch lies
            # between two revisions) gets our promise when it asks.
            if leader is not None:
                floor = leader.epoch - 1  # "just below" the current epoch
            else:
                # Nobody holds the key: every past key was created at or below this read's revision (and
                # deleted since, so strictly below it), every future one will be created above it.
                floor = revision
            if floor > self.secondary.promised:
                self.secondary.promised, self.secondary.promised_to = floor, None
                self.logger.info("promise_from_leader_key", epoch=floor, leader=leader is not None)
            self.fenced = True
        master = self.master
        if master is not None:
            if leader is None or leader.epoch != self.epoch:
                self._step_down_soon("leader_key_lost" if leader is None else "leader_key_taken")
                return
            if master.recovering or not master.writable:
                since = self._no_majority_since or boottime()
                self._no_majority_since = since
                if boottime() - since > self.config.resign_after * self.config.lease_ttl:
                    self.logger.error("no_promise_majority", epoch=self.epoch)
                    self._step_down_soon("no_promise_majority")
                    return
            else:
                self._no_majority_since = None
            if ticks % 4 == 0:
                await self._sync_members()
            return
        if leader is not None:
            self.deferral.reset()
            secondary = self.secondary
            if secondary is not None and leader.epoch < secondary.promised:
                self._refused(leader.epoch, secondary.promised)  # its requests get 409 stale_epoch here
            if leader.name == self.config.name:
                await self._resign(leader.epoch)  # an old key of ours (a previous process, or a failed resign)
            return
        now = boottime()
        if self.secondary is None or not self.deadline.valid(now) or now < self._campaign_after:
            return  # no campaign without a live lease: the key would go with it
        if await self._defer():
            return
        won, leader = await coordinator.campaign(self.config.name, self.config.advertise)
        self.leader = leader
        if won and leader is not None:
            self.deferral.reset()
            await self._become_master(leader)

    async def _defer(self) -> bool:
        """Whether to leave the vacancy to a reachable member whose log is more up to date, for at most
        the lease TTL plus jitter (lease.Deferral)."""
        secondary = self.secondary
        assert self.coordinator is not None and self._session is not None and secondary is not None
        members = await self.coordinator.members()
        others = {n: m for n, m in members.items() if n != self.config.name}
        mine = Position(
            None, secondary.log.log_id if secondary.adopted else None, secondary.log_epoch, secondary.durable
        )
        positions = await self._positions(others)
        if not should_defer(self.config.name, mine, positions):
            return False
        if self.deferral.may_defer(boottime(), self._rand.random):
            return True
        self.logger.info("campaigning_anyway", deferred_to=sorted(positions))
        return False

    async def _positions(self, members: dict[str, Any]) -> dict[str, Position]:
        """The position of each member that answers its /health now (as a secondary)."""
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=min(0.5, self.config.lease_ttl / 5))
        auth = bearer_headers(self.config.cluster_key)  # good wherever a token is: the node may have a token file

        async def ask(url: str) -> Position | None:
            try:
                async with self._session.get(url + "/health", timeout=timeout, headers=auth) as resp:  # type: ignore[union-attr]
                    reply = parse_reply(await resp.json(content_type=None))
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, TransportError):
                return None
            return Position(url, reply.log, reply.log_epoch, reply.seq)

        names = list(members)
        found = await asyncio.gather(*(ask(members[n].url) for n in names))
        return {n: p for n, p in zip(names, found, strict=True) if p is not None}


# -- HTTP ---------------------------------------------------------------------------

NODE = web.AppKey("node", Node)


def _secondary_for(node: Node, fence: Fence | None) -> Secondary:
    """The secondary a master's request goes to. A master of a newer epoch asking this node, while it is
    the master, deposes it (SPEC "Deposition"); the request is answered 503 and retried once we rejoined."""
    if node.master is not None:
        if fence is not None and fence.epoch > node.epoch:
            node.master.depose("a newer master asked this node", newer=fence.epoch)
            raise errors.Switching("this node was the master and is rejoining as a secondary; retry")
        master = node.master
        raise errors.StaleEpoch(
            f"this node is the master of epoch {node.epoch}",
            epoch=node.epoch,
            log=master.log.log_id,
            seq=master.log.last_seq,
        )
    if node.secondary is None:
        raise errors.Switching("this node is changing roles; retry in a moment")
    if not node.fenced and fence is not None:
        raise errors.Switching("this node has not read the leader key yet; retry in a moment")
    return node.secondary


async def post_messages(request: web.Request) -> web.Response:
    node = request.app[NODE]
    master = node.master
    if master is None or master.deposed:
        raise node.not_master("this node is not the master; send writes to the master")
    cfg = master.config
    req = parse_write(
        await read_body(request),
        nodes=cfg.nodes,
        default_w=cfg.default_w,
        default_timeout=cfg.w_timeout,
        max_message_bytes=cfg.max_message_bytes,
    )
    try:
        result = await master.write(req)
    except errors.NotMaster as exc:
        raise node.not_master(exc.detail) from None
    return json_response(result.body, status=201 if result.created else 200)


async def get_health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    fence = parse_fence(request.headers, required=False)
    if fence is None and node.master is not None:
        return json_response(node.master_health(node.master))
    secondary = _secondary_for(node, fence)
    if fence is not None:
        await secondary.fence(fence, promise=False)
        secondary.check_disk()
    return json_response({**secondary.health(parse_query_int(request.query, "at")), "failover": node.info()})


async def post_promise(request: web.Request) -> web.Response:
    fence = parse_fence(request.headers, required=True)
    secondary = _secondary_for(request.app[NODE], fence)
    secondary.check_disk()
    await secondary.fence(fence, promise=True)  # type: ignore[arg-type]
    return json_response(secondary.status())


async def post_replicate(request: web.Request) -> web.Response:
    fence = parse_fence(request.headers, required=True)
    secondary = _secondary_for(request.app[NODE], fence)
    return json_response(await secondary.replicate(await read_body(request), fence))  # type: ignore[arg-type]


async def post_rollback(request: web.Request) -> web.Response:
    """Internal, failover only: the master asks this node to roll back its tail past the agreeing seq."""
    from replog import jsoncodec
    from replog.protocol import bad

    fence = parse_fence(request.headers, required=True)
    secondary = _secondary_for(request.app[NODE], fence)
    try:
        body = jsoncodec.loads(await read_body(request))
    except jsoncodec.DecodeError:
        raise bad("invalid_json", "the body is not JSON") from None
    keep = body.get("keep") if isinstance(body, dict) else None
    keep_hash = parse_hash(body.get("hash")) if isinstance(body, dict) else None
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0 or keep_hash is None:
        raise bad("invalid_rollback", 'a rollback needs "keep" (a seq) and "hash" (the chain value there)')
    return json_response(await secondary.roll_back(fence, keep, keep_hash))  # type: ignore[arg-type]


async def get_entries(request: web.Request) -> web.Response:
    fence = parse_fence(request.headers, required=True)
    secondary = _secondary_for(request.app[NODE], fence)
    await secondary.fence(fence, promise=False)  # type: ignore[arg-type]
    since = parse_query_int(request.query, "since") or 0
    limit = parse_query_int(request.query, "limit")
    limit = 10_000 if limit is None else max(1, min(limit, 10_000))
    return json_response({**secondary.status(), "entries": secondary.entries(since, limit)})


async def get_readyz(request: web.Request) -> web.Response:
    """GET /readyz for the role the node has now: as master, whether it takes writes; as secondary, whether
    it stores what a master sends (and knows which master that is); 503 while it changes roles."""
    node = request.app[NODE]
    why: NotReady
    if node.master is not None:
        why = node.master.not_ready()
    elif node.secondary is None:
        why = ("switching", "this node is changing roles")
    elif not node.fenced:
        why = ("starting", "this node has not read the leader key yet")
    elif node.leader is None:
        why = ("candidate", "nobody holds the leader key: an election is under way")
    else:
        why = node.secondary.not_ready()
    role = node.role
    if why is None:
        return json_response({"status": "ready", "role": role})
    reason, detail = why
    return json_response({"error": "not_ready", "reason": reason, "detail": detail, "role": role}, status=503)


class _SwitchingCollector(Collector):
    """What /metrics says while the node holds no role (between two): its role, and nothing else."""

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "replog_node_info",
            "Always 1: this node's role, its log identity and the replog version.",
            labels=["role", "log", "version"],
        )
        g.add_metric(["switching", "", __version__], 1)
        yield g


_SWITCHING = CollectorRegistry(auto_describe=True)
_SWITCHING.register(_SwitchingCollector())
_SWITCHING.register(GateCollector())


async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the current role's registry (a master's or a secondary's, each with replog_node_info
    naming its role); its counters start again at every role change, as a restarted process's would."""
    current = request.app[NODE].master or request.app[NODE].secondary
    body = current.metrics.render() if current is not None else generate_latest(_SWITCHING)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


def _node_log(app: web.Application) -> tuple[Log, int, str | None]:
    current = app[NODE].reader()
    if isinstance(current, Master):
        known = not current.recovering or current.log.last_seq > 0
        return current.log, current.durable, current.log.log_id if known else None
    return current.log, current.durable, current.log.log_id if current.adopted else None


class _Reader:
    """What the read handlers need of a node (its view, durable end and tail), from whichever role it
    has when the request comes."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def view(self) -> Any:
        return self._node.reader().view

    @property
    def durable(self) -> int:
        return self._node.reader().durable

    @property
    def tail(self) -> Tail:
        return self._node.reader().tail

    @property
    def log(self) -> Log:
        return self._node.reader().log

    @property
    def config(self) -> Any:
        return self._node.reader().config


def build_node_app(config: NodeConfig) -> web.Application:
    """The node's application: one set of routes, answered by the role the node has at the time."""
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_bytes)
    Guard(config.cluster_key, config.token_file).install(app)  # replog.auth: who may call which route
    node = Node(config)
    app[NODE] = node
    reader = _Reader(node)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(node.run(), name="node")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close_readers(app: web.Application) -> None:
        current = node.master or node.secondary
        if current is not None:
            current.tail.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_readers)
    app.router.add_post("/messages", post_messages, expect_handler=expect_handler)
    app.router.add_get("/messages", messages_handler(lambda app: reader))
    app.router.add_get("/messages/stream", stream_handler(lambda app: reader))
    app.router.add_get("/health", get_health)
    app.router.add_post("/promise", post_promise)
    app.router.add_post("/replicate", post_replicate, expect_handler=expect_handler)
    app.router.add_post("/rollback", post_rollback)
    app.router.add_get("/entries", get_entries)
    app.router.add_get("/livez", livez)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/log", log_handler(_node_log))
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/readyz", get_readyz)
    add_dashboard_routes(app)
    return app
