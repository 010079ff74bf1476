"""The master: wins an epoch, recovers the most up-to-date log, takes writes, assigns seqs, waits
for each write's concern under its epoch only, serves reads and health.

It returns domain results and raises domain errors (replog.errors); replog.web maps them to HTTP.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from replog import errors, ids, jsoncodec
from replog.backoff import Backoff
from replog.commitment import Commitment, one_per_process
from replog.config import MasterConfig
from replog.datadir import Opened
from replog.durable import DiskFailed as DiskWriteFailed
from replog.durable import GroupCommit
from replog.log import BATCH, BATCH_MORE, Log, chain
from replog.metrics import MasterMetrics, NotReady, short_url
from replog.progress import Progress, Status
from replog.protocol import Fence, WriteRequest
from replog.recovery import Position, choose_donor, counts_itself, next_epoch, promises_needed
from replog.replicator import Replicator
from replog.storage import Meta, Record
from replog.tail import Tail
from replog.transport import Malformed, Refused, Reply, Stale, Transport, TransportError
from replog.views import MessagesView

Sleep = Callable[[float], Awaitable[None]]


class EpochStale(Exception):
    """Under failover: the epoch etcd gave this master is not above what a node (or its own data dir) has
    promised or holds. etcd's revisions went back (etcd wiped or restored), or a newer master exists."""

    def __init__(self, epoch: int, seen: int) -> None:
        super().__init__(f"epoch {epoch} is not above epoch {seen}, which a node has promised or holds")
        self.epoch = epoch
        self.seen = seen


class BadDonor(TransportError):
    """The node chosen to recover from sent entries that cannot be its log: take nothing from it, try again."""


class BatchEncoder:
    """Encodes a replication batch once, however many secondaries ask for the same range."""

    def __init__(self, log: Log, base: Callable[[], int] = lambda: 0, size: int = 8) -> None:
        self._log = log
        self._base = base  # the end of the master's start-up log (see Secondary._take_log_epoch)
        self._size = size
        self._cache: dict[tuple[str, int, int], bytes] = {}

    def __call__(self, first: int, last: int) -> bytes:
        key = (self._log.log_id, first, last)
        body = self._cache.get(key)
        if body is None:
            log = self._log
            entries = log.wire(first, last)  # the replicator has capped the range
            prev = [first - 1, log.hash(first - 1).hex()]
            body = jsoncodec.dumps({"log": log.log_id, "base": self._base(), "prev": prev, "entries": entries})
            if len(self._cache) >= self._size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = body
        return body

    def clear(self) -> None:
        self._cache.clear()


@dataclass(frozen=True)
class WriteResult:
    """What a write's answer shows: created (201) or found under its id (200), and the body."""

    created: bool
    body: dict[str, Any]


class Master:
    """The master's state and its write path; the HTTP handlers are thin wrappers around it."""

    def __init__(
        self,
        config: MasterConfig,
        transports: list[Transport],
        opened: Opened,
        *,
        sleep: Sleep = asyncio.sleep,
        **replicator_kw: Any,
    ) -> None:
        self.config = config
        self.id = uuid.uuid4().hex  # this master process; a promise is made to (epoch, id)
        self.log = opened.log
        self.disk = opened.disk
        self.commit: GroupCommit | None = None  # the on-disk log's writer, with --data-dir (see attach_disk)
        self._had_log = opened.had_log  # restarted on its own log: its vote may count
        self._saved_epoch = opened.meta.log_epoch  # the last epoch whose log this data dir holds
        self._saved_promise = opened.meta.promised  # the highest epoch it promised (proposals go past it)
        self.epoch = 0  # the epoch this master takes writes under; 0 until it has won and recovered
        self.fence: Fence | None = None  # epoch and id every internal request carries (from the first promise)
        self.start_end = 0  # the end of the log at the end of recovery: a copy counts once it reaches here
        self.recovering = True
        self.deposed = False
        self.failed: str | None = None  # a task of this master died: it says so and takes no writes
        self.disk_failed: str | None = None
        self.consulted: list[str] = []  # secondaries that promised our epoch at start-up
        self._history = False  # a node answered with a log: this is no new cluster
        self.recovery_error: str | None = None  # why the last election round failed, for /health
        self._awaiting: tuple[list[str], int] | None = None  # (promised, needed) last logged as awaiting_promises
        self.commitment = Commitment(config.nodes)
        self.ids = ids.IdIndex.of((seq, *self.log.item(seq)[::2]) for seq in range(1, self.log.last_seq + 1))
        self._transports = transports
        self._encode = BatchEncoder(self.log, lambda: self.start_end)
        self._sleep = sleep
        self.view = MessagesView(self.log)
        self.tail = Tail(lambda: self.durable)  # readers waiting for what reads show to grow
        self._started = time.monotonic()
        self.logger = structlog.get_logger()
        self.replicators = [
            self._new_replicator(i + 1, url, transport, **replicator_kw)
            for i, (url, transport) in enumerate(zip(config.secondaries, transports, strict=True))
        ]
        self._writable = self._has_quorum()
        self._quorum_lost = False  # quorum was lost since start-up: reaching it again is worth a line
        self.appended = 0  # entries appended by client writes (for /metrics)
        self.metrics = MasterMetrics(self)
        self._summarized = (0, 0)  # (writes, entries appended) at the last summary line
        # Under failover (replog.node): whether this master's lease deadline is still ahead, checked
        # before every answer to a write; who to tell when it is deposed; and the rollbacks it drives.
        self.lease_valid: Callable[[], bool] = lambda: True
        self.on_deposed: Callable[[str], None] | None = None
        self._repairs: dict[int, asyncio.Task[None]] = {}

    def attach_disk(self, commit: GroupCommit) -> None:
        self.commit = commit

    @property
    def log_epoch(self) -> int:
        """The epoch whose master's log this log is a prefix of: ours once recovery is done, the one it
        started with before (a master deposed while recovering never held its own epoch's log)."""
        return self._saved_epoch

    @property
    def durable(self) -> int:
        """Highest seq the master itself holds durably (on disk, with a data dir): what it counts
        as its own ack, what it sends, what reads show."""
        return self.commit.durable if self.commit is not None else self.log.last_seq

    # -- election and start-up recovery ----------------------------------------------

    async def recover(self, epoch: int | None = None) -> None:
        """Before taking writes: win an epoch from a majority, then take the most up-to-date log.

        Rounds repeat (one per heartbeat interval) until a round succeeds; see SPEC "Epochs and fencing".
        epoch: under failover, the epoch etcd gave (the leader key's create-revision) instead of one
        proposed past every epoch seen; EpochStale if a node has promised or holds that epoch or a newer one.
        """
        proposal, seen = 0, 0
        while True:
            try:
                # Positions are read unfenced: a node that promised a newer epoch must tell us so
                # (in its answer), not refuse the very read that would let us propose past it.
                self.fence = None
                positions = await self._positions()
                seen = max([seen, *(e for r in positions.values() for e in self._epochs(r, proposal))])
                self._history = self._history or any(r.log is not None or r.seq > 0 for r in positions.values())
                if epoch is None:
                    proposal = next_epoch(proposal, max(self._saved_epoch, self._saved_promise), [seen])
                else:
                    proposal = epoch
                    highest = max(self._saved_epoch, self._saved_promise, seen)
                    if highest >= epoch:
                        raise EpochStale(epoch, highest)
                self.fence = Fence(proposal, self.id)
                if await self._round(proposal, seen):
                    return
            except (TransportError, Stale) as exc:
                if isinstance(exc, Stale):
                    seen = max(seen, exc.epoch)
                    if epoch is not None and not exc.foreign(self.log.log_id):
                        raise EpochStale(epoch, exc.epoch) from None
                self.recovery_error = str(exc)
                if isinstance(exc, (BadDonor, Malformed)):
                    self.logger.error("recovery_donor_refused", epoch=proposal, error=str(exc))
                else:
                    self.logger.warning("recovery_retry", epoch=proposal, error=str(exc))
            await self._sleep(self.config.heartbeat_interval)

    def _epochs(self, reply: Reply, proposal: int) -> tuple[int, ...]:
        """The epochs a node reports, less the promise it made to this very master."""
        mine = reply.promised == proposal and reply.promised_to == self.id
        return (reply.log_epoch,) if mine else (reply.promised, reply.log_epoch)

    async def _positions(self) -> dict[str, Reply]:
        """Every secondary that answers, and what it says of itself."""
        urls = [r.url for r in self.replicators]
        replies = await asyncio.gather(*(t.health(self.log.last_seq) for t in self._transports), return_exceptions=True)
        found: dict[str, Reply] = {}
        for url, reply in zip(urls, replies, strict=True):
            if isinstance(reply, Reply):
                found[url] = reply
            elif isinstance(reply, Stale):
                raise reply
            elif not isinstance(reply, Exception):
                raise reply
        return found

    async def _round(self, epoch: int, seen: int) -> bool:
        """One election round at epoch: promises, then recovery. True once the master takes writes."""
        await self._save_meta(promised=epoch, promised_to=self.id)
        urls = [r.url for r in self.replicators]
        replies = await asyncio.gather(*(t.promise() for t in self._transports), return_exceptions=True)
        promised: dict[str, Reply] = {}
        for url, reply in zip(urls, replies, strict=True):
            if isinstance(reply, Stale):
                raise reply
            if isinstance(reply, Reply):
                promised[url] = reply
            elif not isinstance(reply, Exception):
                raise reply
        reported = [e for r in promised.values() for e in self._epochs(r, epoch)] + [seen]
        self._history = self._history or any(r.log is not None or r.seq > 0 for r in promised.values())
        blank = self.config.new_cluster and not self._history and max(reported) == 0
        self_counts = counts_itself(self._had_log, self._saved_epoch, reported, blank=blank)
        need = promises_needed(self.config.nodes, self_counts)
        if len({r.incarnation for r in promised.values()}) < need:  # a process reached at two URLs promises once
            waiting = (sorted(promised), need)
            if waiting != self._awaiting:  # once per change, not once per round while a node is down
                self._awaiting = waiting
                self.logger.info(
                    "awaiting_promises", epoch=epoch, promised=sorted(promised), needed=need, counts_itself=self_counts
                )
            return False
        own = Position(
            None, self.log.log_id if self.log.last_seq or self._had_log else None, self._saved_epoch, self.log.last_seq
        )
        donor = choose_donor(own, [Position(u, r.log, r.log_epoch, r.seq) for u, r in promised.items()])
        if donor.url is not None:
            await self._recover_from(donor, epoch)
        await self._save_meta(promised=epoch, promised_to=self.id, log_epoch=epoch)
        self._saved_epoch = epoch
        self.consulted = sorted(promised)
        self.start_end = self.log.last_seq
        self.epoch = epoch
        self.recovering = False
        self._on_progress(0)
        self.tail.notify()  # without a data dir, recovery grew the log unannounced
        unconsulted = [u for u in urls if u not in promised]
        self.logger.info(
            "recovered",
            epoch=epoch,
            seq=self.log.last_seq,
            log=self.log.log_id,
            consulted=self.consulted,
            unconsulted=unconsulted,
            counted_itself=self_counts,
        )
        return True

    async def _save_meta(self, **changes: Any) -> None:
        if self.commit is None:
            return
        meta = Meta(
            log_id=self.log.log_id if (self.log.last_seq or self._had_log or changes.get("log_epoch")) else None,
            promised=changes["promised"],
            promised_to=changes["promised_to"],
            log_epoch=changes.get("log_epoch", self._saved_epoch),
        )
        try:
            await self.commit.save_meta(meta)
        except OSError as exc:
            self._on_disk_failed(exc)
            raise errors.DiskFailed(f"the master cannot write to its disk: {exc}") from None

    def _transport(self, url: str) -> Transport:
        urls = [r.url for r in self.replicators]
        if url not in urls:
            # Under failover the member moved to another URL during this round: the next round asks it there.
            raise TransportError(f"{url} is no longer a secondary of this master")
        return self._transports[urls.index(url)]

    async def _agreement(self, transport: Transport, upto: int) -> int:
        """The last seq up to upto at which our log and the node's agree, bisecting on chain values."""
        lo, hi = 0, upto  # invariant: the logs agree at lo; they disagree past hi
        reply = await transport.health(hi)
        if reply.at == hi and reply.at_hash == self.log.hash(hi):
            return hi
        hi -= 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            reply = await transport.health(mid)
            if reply.at == mid and reply.at_hash == self.log.hash(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    async def _recover_from(self, donor: Position, epoch: int) -> None:
        """Make our log the donor's: roll back a tail of ours it lacks, then copy what we lack."""
        transport = self._transport(donor.url)  # type: ignore[arg-type]
        log = self.log
        if log.last_seq == 0 and donor.log_id is not None and log.log_id != donor.log_id:
            log.adopt(donor.log_id)
            self._encode.clear()
        agree = await self._agreement(transport, min(log.last_seq, donor.seq)) if log.last_seq else 0
        if agree < log.last_seq:
            await self._roll_back(agree, epoch)
        if log.last_seq < donor.seq:
            self.logger.info("recovering_entries", donor=donor.url, first=log.last_seq + 1, last=donor.seq)
        while log.last_seq < donor.seq:
            reply, entries = await transport.entries(log.last_seq, 5000)
            if reply.log != log.log_id or not entries:
                raise BadDonor("the donor's log changed during recovery")
            first = log.last_seq + 1
            head = log.hash(first - 1)
            items = []
            for i, (seq, id_, text, flags, h) in enumerate(entries):
                head = chain(head, id_, text, flags)
                if seq != first + i or head != h:
                    raise BadDonor(f"the donor sent entry {seq}, which does not chain onto the log before it")
                items.append((id_, text, flags, h))
            if items[-1][2] & BATCH_MORE:
                raise BadDonor("the donor sent part of a client batch")
            log.extend_hashed(items)
            for i, (id_, _, flags, _) in enumerate(items):
                self.ids.add(first + i, id_, flags)
            if self.commit is not None:
                try:
                    await self.commit.wait_durable(self.commit.submit(first, [Record(*it) for it in items]))
                except DiskWriteFailed as exc:
                    raise errors.DiskFailed(f"the master cannot write to its disk: {exc}") from None

    async def _roll_back(self, keep: int, epoch: int) -> None:
        """Remove our entries past keep, which the most up-to-date log does not hold: into the
        rollback file first (with a data dir; logged without), then off the log."""
        log = self.log
        removed = log.hashed(keep + 1, log.last_seq)
        where: str | None = None
        if self.commit is not None:
            where = await self.commit.truncate(keep, (epoch, keep + 1, [Record(*r) for r in removed]))
        else:
            for i, (id_, text, flags, h) in enumerate(removed):
                self.logger.warning("rolled_back_entry", seq=keep + 1 + i, id=id_, text=text, flags=flags, hash=h.hex())
        log.truncate(keep)
        self.ids.truncate(keep)
        self._encode.clear()
        self.view = MessagesView(log)  # its cached encodings may hold the entries just removed
        self.logger.warning("rolled_back", count=len(removed), first=keep + 1, epoch=epoch, file=where)

    # -- what replicators and the disk report ----------------------------------------

    def _on_progress(self, node: int) -> None:
        """Recount one node's acks: only copies held under our epoch count (SPEC "Counting acks"), and a
        process that several slots reach (one node under two URLs) counts once, in one slot."""
        if node == 0:
            self._count(0, self.durable if self.epoch and not self.disk_failed else 0)
            return
        counts = one_per_process(
            [
                (r.progress.incarnation, r.progress.counted(self.epoch, self.start_end) if self.epoch else 0)
                for r in self.replicators
            ]
        )
        matches = self.commitment.matches
        for i, match in enumerate(counts, start=1):
            if i == node or matches[i] != match:
                self._count(i, match)

    def _count(self, node: int, match: int) -> None:
        for waiter in self.commitment.update(node, match):
            fut = waiter.token
            if not fut.done():
                fut.set_result(None)

    def durable_to(self, seq: int) -> None:
        """The master's own copy is on disk up to seq: it counts as one ack, and may be sent on."""
        self._on_progress(0)
        self.tail.notify()
        for r in self.replicators:
            r.notify()

    def _on_status(self, node: int, before: Status, after: Status) -> None:
        if after is Status.DIVERGED and self.config.roll_back_diverged:
            task = self._repairs.get(node)
            if task is None or task.done():
                self._repairs[node] = asyncio.ensure_future(self._repair(node))
        self._check_quorum()

    def _check_quorum(self) -> None:
        """Judge the quorum again from every secondary's status, and log a transition."""
        writable = self._has_quorum()
        if writable != self._writable:
            self._writable = writable
            if not writable:
                self._quorum_lost = True
                self.logger.warning("quorum_lost", available=self._available(), needed=self.config.majority)
            elif self._quorum_lost:
                self.logger.info("quorum_regained", available=self._available())
            else:  # the first time, at start-up: no transition, the secondaries' own lines say they are up
                self.logger.debug("quorum_reached", available=self._available())

    def _on_stale(self, epoch: int) -> None:
        """A node promised a newer epoch: another master exists. Stop at once (SPEC "Deposition")."""
        if self.deposed or self.recovering:
            return
        self.depose("a node promised a newer epoch", newer=epoch)

    def depose(self, reason: str, **kw: Any) -> None:
        """Stop taking writes at once: every waiting write answers 503 not_master (its outcome is unknown,
        the client retries with the same id). Under failover also: the lease or the leader key was lost."""
        if self.deposed:
            return
        self.deposed = True
        self.logger.error("deposed", epoch=self.epoch, reason=reason, **kw)
        self._fail_waiters(
            errors.NotMaster("this master was deposed by a newer one; retry with the same id", master=None)
        )
        if self.on_deposed is not None:
            self.on_deposed(reason)

    # -- failover: membership and rollbacks ------------------------------------------

    def add_secondary(self, url: str, transport: Transport, **replicator_kw: Any) -> Replicator:
        """A node joined (under failover, membership comes from etcd): replicate to it too. The caller
        runs the replicator once recovery is done; promise rounds still running consult it at once."""
        config = self.config
        if len(self.replicators) + 1 >= config.nodes:
            raise ValueError(f"a cluster of {config.nodes} nodes has no room for {url}")
        replicator = self._new_replicator(len(self.replicators) + 1, url, transport, **replicator_kw)
        self.replicators.append(replicator)
        self._transports.append(transport)
        return replicator

    def move_secondary(self, node: int, url: str, transport: Transport, **replicator_kw: Any) -> Replicator:
        """Under failover: the member in slot `node` (its node index) is now reached at url, its --advertise
        having changed. A new replicator for url takes the same slot and the old one is returned (its owner
        stops it). The slot's progress starts again from what url reports, as for a secondary restarted empty:
        its acks count from the new replicator's answers only (a late answer of the old one recounts the slot
        from the new one's progress), so one member is never two nodes toward w or the quorum."""
        old = self.replicators[node - 1]
        self.replicators[node - 1] = self._new_replicator(node, url, transport, **replicator_kw)
        self._transports[node - 1] = transport
        repair = self._repairs.pop(node, None)
        if repair is not None:
            repair.cancel()  # it rolls back the old URL's log; the new replicator judges the node afresh
        self._on_progress(node)
        self._check_quorum()  # unhealthy until the new URL's first answer
        return old

    def _new_replicator(self, node: int, url: str, transport: Transport, **replicator_kw: Any) -> Replicator:
        """The replicator of one secondary, wired to this master (at start-up and when a node joins)."""
        config = self.config
        return Replicator(
            node,
            url,
            self.log,
            transport,
            encode=self._encode,
            on_progress=self._on_progress,
            on_status=self._on_status,
            on_stale=self._on_stale,
            epoch=lambda: 0 if self.deposed or self.failed else self.epoch,
            durable=lambda: self.durable,
            batch_max_count=config.batch_max_count,
            batch_max_bytes=config.batch_max_bytes,
            window=config.replication_window,
            backoff=Backoff(config.backoff_base, config.backoff_cap),
            heartbeat_interval=config.heartbeat_interval,
            suspect_after=config.suspect_after,
            unhealthy_after=config.unhealthy_after,
            sleep=self._sleep,
            **replicator_kw,
        )

    async def _repair(self, node: int) -> None:
        """Under failover: a secondary whose log contradicts ours (the unreplicated tail of a deposed
        master, say) rolls back what lies past the last seq where our logs agree; the heartbeat then
        sees it as a new incarnation that agrees with us, and replication goes on from there."""
        replicator = self.replicators[node - 1]
        transport = self._transports[node - 1]
        while replicator.progress.status is Status.DIVERGED and not self.deposed and not self.recovering:
            try:
                reply = await transport.health(self.log.last_seq)
                if reply.log is not None and reply.log != self.log.log_id and reply.seq > 0:
                    self.logger.error("secondary_foreign_log", secondary=replicator.url, log=reply.log)
                    return  # another cluster's log: never ours to cut
                keep = await self._agreement(transport, min(self.durable, reply.seq))
                await transport.roll_back(keep, self.log.hash(keep))
                self.logger.warning("secondary_rolled_back", secondary=replicator.url, keep=keep, had=reply.seq)
                # Its next heartbeat answer (a new incarnation) ends the divergence; if that answer
                # contradicts us still (it took other entries meanwhile), roll back again.
                await self._sleep(3 * self.config.heartbeat_interval)
                continue
            except Stale as exc:
                if not exc.foreign(self.log.log_id):
                    self._on_stale(exc.epoch)
                return
            except (TransportError, Refused) as exc:
                self.logger.info("rollback_retry", secondary=replicator.url, error=str(exc))
            await self._sleep(self.config.heartbeat_interval)

    def close(self) -> None:
        """Cancel the rollbacks this master drives (its owner cancels and awaits everything else)."""
        for task in self._repairs.values():
            task.cancel()

    def _on_disk_failed(self, exc: BaseException) -> None:
        if self.disk_failed is not None:
            return
        self.disk_failed = str(exc)
        self.logger.critical("disk_failed", error=str(exc), detail="the master is read-only")
        self._fail_waiters(errors.DiskFailed(f"the master cannot write its log to disk: {exc}"))

    def task_died(self, name: str, exc: BaseException) -> None:
        """An owned task died of a bug: say so loudly and stop taking writes, rather than look up and do nothing."""
        self.failed = f"{name}: {exc!r}"
        self.logger.critical("task_died", task=name, error=repr(exc))
        self._fail_waiters(errors.Failed(f"the master stopped taking writes: its {name} task died"))

    def _fail_waiters(self, exc: errors.Refusal) -> None:
        for waiter in self.commitment.drain():
            fut = waiter.token
            if not fut.done():
                fut.set_exception(exc)
        for r in self.replicators:
            r.notify()

    def _available(self) -> int:
        # One process reached through two slots is one node (see _on_progress).
        up = {r.progress.incarnation or f"slot {r.index}" for r in self.replicators if r.progress.available}
        return 1 + len(up)

    @property
    def available(self) -> int:
        """Nodes that count towards the quorum now, the master included."""
        return self._available()

    def _has_quorum(self) -> bool:
        return not self.config.quorum_check or self._available() >= self.config.majority

    @property
    def writable(self) -> bool:
        return self._writable

    # -- the write path -----------------------------------------------------------

    def _check_taking_writes(self) -> None:
        if self.failed is not None:
            raise errors.Failed(f"the master stopped taking writes: {self.failed}")
        if self.deposed:
            raise errors.NotMaster("this master was deposed by a newer one", master=None)
        if not self.lease_valid():
            # Under failover: past our own lease deadline another node may hold the leader key already.
            raise errors.NotMaster("this master's lease ran out; retry with the same id", master=None)
        if self.recovering:
            # Read-only like any loss of quorum: no majority has promised yet (or it is copying from one).
            raise errors.NoQuorum(
                "the master is recovering its log from a majority of the nodes; it is read-only until then"
            )
        if self.disk_failed is not None:
            raise errors.DiskFailed(f"the master cannot write its log to disk: {self.disk_failed}")

    async def write(self, req: WriteRequest) -> WriteResult:
        """Append (or find, for a retried id) and wait for the write concern.

        Raises a Refusal: NoQuorum, NotMaster, DiskFailed, IdConflict, ReservedId, WriteConcernTimeout.
        Every write is counted in the metrics, by w and outcome, with its duration.
        """
        started = time.perf_counter()
        outcome = "internal_error"
        try:
            result = await self._write(req)
            outcome = "created" if result.created else "duplicate"
            return result
        except errors.Refusal as exc:
            outcome = exc.code
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"  # the client went away
            raise
        finally:
            self.metrics.record_write(req.w, outcome, time.perf_counter() - started)

    async def _write(self, req: WriteRequest) -> WriteResult:
        self._check_taking_writes()
        first = self._find(req)
        created = first is None
        if first is None:
            if not self._writable:
                raise errors.NoQuorum(
                    f"fewer than {self.config.majority} of {self.config.nodes} nodes are reachable; the master is read-only"
                )
            first = self._append(req)
        last = first + len(req.texts) - 1
        head = self.log.hash(last)
        acks, met = await self._wait(last, req.w, req.timeout)
        # Before any 2xx (or a 504 that says "stored"): still the master, disk healthy, the entry still ours.
        self._check_taking_writes()
        if last > self.log.last_seq or self.log.hash(last) != head:
            raise errors.NotMaster("the entry is no longer at its seq; retry with the same id", master=None)
        body = self._describe(req, first, last, acks)
        if not met:
            self.logger.info("write_concern_timeout", seq=last, w=req.w, acks=acks)
            raise errors.WriteConcernTimeout(
                f"the message is stored and keeps replicating, but only {acks} of the {req.w} nodes asked for held it in time",
                **body,
            )
        self.logger.debug("write_concern_met", seq=last, w=req.w, acks=acks)
        return WriteResult(created, body)

    def _find(self, req: WriteRequest) -> int | None:
        """The first seq already stored under req.id, or None for a new write."""
        if req.id is None:
            return None
        try:
            return ids.find(
                self.ids,
                req.id,
                batch=req.batch,
                texts=req.texts,
                text_at=self.log.text,
                generated=self.log.generated_seq,
            )
        except ids.IdConflict as exc:
            raise errors.IdConflict(exc.detail) from None
        except ids.ReservedId as exc:
            raise errors.ReservedId(exc.detail) from None

    def _append(self, req: WriteRequest) -> int:
        n = len(req.texts)
        if req.batch:
            keys = [None] * n if req.id is None else [f"{req.id}:{i}" for i in range(n)]
            items = [(keys[i], text, BATCH | (BATCH_MORE if i < n - 1 else 0)) for i, text in enumerate(req.texts)]
        else:
            items = [(req.id, req.texts[0], 0)]
        first = self.log.extend(items)
        for i, (id_, _, flags) in enumerate(items):
            self.ids.add(first + i, id_, flags)
        last = self.log.last_seq
        self.appended += n
        self.logger.debug("appended", first=first, last=last)
        if self.commit is not None:
            # The master counts itself once the entries are on disk (GroupCommit calls durable_to).
            try:
                self.commit.submit(first, [Record(*item) for item in self.log.hashed(first, last)])
            except DiskWriteFailed as exc:
                raise errors.DiskFailed(f"the master cannot write its log to disk: {exc}") from None
        else:
            self._on_progress(0)
            self.tail.notify()
        for r in self.replicators:
            r.notify()
        return first

    async def _wait(self, seq: int, w: int, timeout: float | None) -> tuple[int, bool]:
        """Wait until w nodes hold seq, or the timeout: (acks now, whether w was met)."""
        acks = self.commitment.acks(seq)
        if acks >= w:
            return acks, True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = self.commitment.wait(seq, w, fut)
        try:
            await asyncio.wait_for(fut, timeout)
            met = True
        except TimeoutError:
            met = False
        finally:
            # The client went away (cancellation) or timed out: leave no waiter behind.
            if waiter is not None:
                self.commitment.cancel(waiter)
        return self.commitment.acks(seq), met

    def _describe(self, req: WriteRequest, first: int, last: int, acks: int) -> dict[str, Any]:
        if req.batch:
            entries = self.log.dicts(first - 1, last - first + 1)
            return {"entries": entries, "w": req.w, "acks": acks}
        return {"seq": first, "id": self.log.id_of(first), "text": self.log.text(first), "w": req.w, "acks": acks}

    # -- reads ---------------------------------------------------------------------

    @property
    def unconsulted(self) -> list[str]:
        """Secondaries that did not promise at start-up and have not caught up with our log since.

        A secondary that started a little after the master (a fresh cluster) and has since taken our
        epoch as its log epoch, holding at least the start-up log, was consulted in effect: its log is ours.
        """
        if self.recovering:
            return []
        return [r.url for r in self.replicators if r.url not in self.consulted and not self._caught_up(r.progress)]

    def _caught_up(self, p: Progress) -> bool:
        return p.status is not Status.DIVERGED and p.log_epoch == self.epoch and p.match >= self.start_end

    def not_ready(self) -> NotReady:
        """Why this master cannot take writes now (reason code, sentence), or None: GET /readyz."""
        if self.failed is not None:
            return "failed", f"the master stopped taking writes: {self.failed}"
        if self.deposed:
            return "deposed", "a newer master has taken over; this one takes no writes"
        if self.disk_failed is not None:
            return "disk_failed", f"the master cannot write its log to disk: {self.disk_failed}"
        if self.recovering:
            return "recovering", "the master is recovering its log from a majority of the nodes"
        if not self._writable:
            return (
                "no_quorum",
                f"fewer than {self.config.majority} of {self.config.nodes} nodes are reachable; the master is read-only",
            )
        return None

    def summary(self) -> dict[str, Any] | None:
        """What the periodic summary line says: writes and entries since the last line, the seq and each
        secondary's lag; None when nothing happened and every secondary is caught up."""
        writes, appended = self.metrics.write_count, self.appended
        last = self.log.last_seq
        lags = [max(0, last - r.progress.match) for r in self.replicators]
        before, self._summarized = self._summarized, (writes, appended)
        if (writes, appended) == before and not any(lags):
            return None
        return {
            "writes": writes - before[0],
            "entries": appended - before[1],
            "seq": last,
            "lag": {short_url(r.url): lag for r, lag in zip(self.replicators, lags, strict=True)},
        }

    @property
    def status(self) -> str:
        if self.disk_failed is not None:
            return "disk_failed"
        if self.recovering or self.deposed or self.failed:
            return "read_only"  # the "recovering", "deposed" and "failed" fields say why
        return "ok" if self._writable else "read_only"

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        last = self.log.last_seq
        secondaries = []
        for r in self.replicators:
            p = r.progress
            secondaries.append(
                {
                    "url": r.url,
                    "status": str(p.status),
                    "seq": p.match,
                    "lag": max(0, last - p.match),
                    "last_contact": None if p.last_contact is None else round(now - p.last_contact, 3),
                    "failures": p.failures,
                    "promised": p.promised,
                    "log_epoch": p.log_epoch,
                }
            )
        return {
            "role": "master",
            "status": self.status,
            "seq": self.durable,
            "appended_seq": last,
            "quorum": self.config.majority,
            "nodes": self.config.nodes,
            "available": self._available(),
            "log": self.log.log_id,
            "epoch": self.epoch,
            "master_id": self.id,
            "waiting_writes": self.commitment.waiting,
            "waiting_reads": self.tail.waiting,
            "streams": self.tail.streams,
            "recovering": self.recovering,
            "recovery_error": self.recovery_error if self.recovering else None,
            "deposed": self.deposed,
            "failed": self.failed,
            "disk_error": self.disk_failed,
            "unconsulted": self.unconsulted,
            "fsyncs": None if self.commit is None else self.commit.syncs,
            "uptime": round(now - self._started, 3),
            "secondaries": secondaries,
        }
