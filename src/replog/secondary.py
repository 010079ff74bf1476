"""A secondary: keeps its promise to one master epoch, stores that master's batches through a
reorder buffer, and shows the gap-free, durable prefix."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from replog import errors
from replog.auth import Guard
from replog.config import SecondaryConfig
from replog.dashboard import add_dashboard_routes
from replog.datadir import Opened, open_log
from replog.durable import DiskFailed as DiskWriteFailed
from replog.durable import GroupCommit
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
from replog.log import BATCH_MORE, GENESIS, Log
from replog.metrics import NotReady, SecondaryMetrics, log_summaries, metrics_handler, readyz_handler
from replog.protocol import ApiError, Fence, bad, parse_fence, parse_query_int, parse_replicate
from replog.reorder import BufferFull, Conflict, ReorderBuffer
from replog.storage import Meta, Record
from replog.stream import stream_handler
from replog.tail import Tail
from replog.views import MessagesView


class Secondary:
    """A secondary's state: its log, its promise, the entries held behind a gap, its incarnation."""

    def __init__(self, config: SecondaryConfig, *, reset: bool = False, opened: Opened | None = None) -> None:
        """opened: under failover, the log a deposed master hands over in memory (else opened here)."""
        self.config = config
        if opened is None:
            opened = open_log(config.data_dir, fsync=config.fsync, reset=reset)
        self.log = opened.log  # its identity is a placeholder until the first batch (adopted False)
        self.adopted = opened.had_log  # whether log.log_id is a master's
        self.promised = opened.meta.promised  # highest epoch promised ...
        self.promised_to = opened.meta.promised_to  # ... and to which master
        self.log_epoch = opened.meta.log_epoch  # our whole log is a prefix of this epoch's master's log
        self.disk = opened.disk
        self.tail = Tail(lambda: self.durable)  # readers waiting for the gap-free durable prefix to grow
        self.metrics = SecondaryMetrics(self)
        self.received_entries = 0  # entries that arrived in replication requests, resent ones too (for /metrics)
        self.received_bytes = 0  # bytes of those requests' bodies
        self._summarized = 0  # received_entries at the last summary line
        self.commit = (
            GroupCommit(
                opened.disk,
                on_durable=lambda _: self.tail.notify(),
                on_failed=self._disk_failed,
                on_sync=self.metrics.fsynced,
            )
            if opened.disk is not None
            else None
        )
        self.failed: str | None = None  # why this node can no longer do its job (its disk failed)
        self.buffer = ReorderBuffer(
            self.log, window=config.buffer_max_distance, max_bytes=config.buffer_max_bytes
        )  # bounded in entries, bytes and distance past the gap-free end
        self.view = MessagesView(self.log)
        self.incarnation = uuid.uuid4().hex  # a new one per process: tells the master we restarted
        self._rng = random.Random(config.seed)
        self._meta_lock = asyncio.Lock()  # promise, log epoch and identity change one at a time
        self.logger = structlog.get_logger()

    @property
    def durable(self) -> int:
        """Highest seq held without gaps *and* on disk (with --data-dir): what acks promise, what reads show."""
        return self.commit.durable if self.commit is not None else self.log.last_seq

    def health(self, at: int | None = None) -> dict[str, Any]:
        """The body of GET /health: the status, disk state, what is held behind a gap, and the readers."""
        return {
            **self.status(at),
            "status": "ok" if self.failed is None else "disk_failed",
            "buffered": len(self.buffer.pending),
            "buffered_bytes": self.buffer.held_bytes,
            "waiting_reads": self.tail.waiting,
            "streams": self.tail.streams,
        }

    def status(self, at: int | None = None) -> dict[str, Any]:
        """Where this node stands, as every answer to a master carries it: its promise, its log
        epoch, its durable gap-free seq and the chain value there (and at min(seq, at))."""
        seq = self.durable
        at = seq if at is None else min(seq, at)
        return {
            "role": "secondary",
            "incarnation": self.incarnation,
            "log": self.log.log_id if self.adopted else None,
            "promised": self.promised,
            "promised_to": self.promised_to,
            "log_epoch": self.log_epoch,
            "seq": seq,
            "hash": self.log.hash(seq).hex(),
            "at": at,
            "at_hash": self.log.hash(at).hex(),
        }

    # -- promises ----------------------------------------------------------------------

    async def _save(self, **changes: Any) -> None:
        """Persist the promise, log epoch and identity (with a data dir) before they take effect."""
        meta = Meta(
            log_id=changes.get("log_id", self.log.log_id if self.adopted else None),
            promised=changes.get("promised", self.promised),
            promised_to=changes.get("promised_to", self.promised_to),
            log_epoch=changes.get("log_epoch", self.log_epoch),
        )
        if self.commit is not None:
            try:
                await self.commit.save_meta(meta)
            except OSError as exc:
                self._disk_failed(exc)
                raise errors.DiskFailed(f"this secondary cannot write to its disk: {exc}") from None
        self.promised, self.promised_to, self.log_epoch = meta.promised, meta.promised_to, meta.log_epoch

    def _check_fence(self, fence: Fence) -> bool:
        """Raise StaleEpoch if fence is behind our promise; True if it asks for a new promise."""
        if fence.epoch < self.promised or (fence.epoch == self.promised and fence.master != self.promised_to):
            raise errors.StaleEpoch(
                f"this node has promised epoch {self.promised} to another master", **self.status(), epoch=self.promised
            )
        return fence.epoch > self.promised

    async def fence(self, fence: Fence, *, promise: bool) -> None:
        """Refuse a master of an older epoch; with promise, promise a newer one (durably) first."""
        if not self._check_fence(fence) or not promise:
            return
        async with self._meta_lock:
            if self._check_fence(fence):
                await self._save(promised=fence.epoch, promised_to=fence.master)
                self.buffer.reset()  # entries held behind a gap came from an older master
                self.logger.info("promised", epoch=fence.epoch, master=fence.master)

    def not_ready(self) -> NotReady:
        """Why this secondary cannot store what the master sends (reason code, sentence), or None: GET /readyz."""
        if self.failed is not None:
            return "disk_failed", f"this secondary cannot write to its disk: {self.failed}"
        return None

    def summary(self) -> dict[str, Any] | None:
        """What the periodic summary line says: entries received since the last line, the durable seq and
        the entries held behind a gap; None when nothing arrived."""
        received, before = self.received_entries, self._summarized
        self._summarized = received
        if received == before:
            return None
        return {"received": received - before, "seq": self.durable, "buffered": len(self.buffer.pending)}

    def check_disk(self) -> None:
        if self.failed is not None:
            raise errors.DiskFailed(f"this secondary cannot write to its disk: {self.failed}")

    def _disk_failed(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = str(exc)
            self.logger.critical("disk_failed", error=str(exc), detail="this secondary stops acknowledging")

    # -- replication -------------------------------------------------------------------

    async def replicate(self, body: bytes, fence: Fence) -> dict[str, Any]:
        req = parse_replicate(body)
        self.received_entries += len(req.entries)
        self.received_bytes += len(body)
        if self.config.delay > 0:
            await asyncio.sleep(self.config.delay)
        self.check_disk()
        await self.fence(fence, promise=True)
        log = self.log
        adopting = req.log_id != log.log_id or not self.adopted
        if adopting and self.adopted and log.last_seq > 0:
            self.logger.error("log_mismatch", ours=log.log_id, theirs=req.log_id)
            raise errors.LogMismatch(
                f"this secondary holds another log ({log.log_id}); restart it empty (or with --reset) to rejoin",
                **self.status(),
            )
        last = log.last_seq
        prev_seq, prev_hash = req.prev  # type: ignore[misc]
        if prev_seq <= last and log.hash(prev_seq) != prev_hash:
            self.logger.error("entry_conflict", seq=prev_seq)
            raise errors.EntryConflict(f"this secondary holds other entries up to seq {prev_seq}", **self.status())
        if any(seq > last + self.buffer.window for seq, *_ in req.entries):
            raise bad("seq_out_of_window", f"entries more than {self.buffer.window} seqs past this secondary's end")
        try:
            self.buffer.check(req.entries)
        except Conflict as exc:
            self.logger.error("entry_conflict", seq=exc.seq)
            raise errors.EntryConflict(str(exc), **self.status()) from None
        try:
            self.buffer.admit(req.entries)
        except BufferFull as exc:
            raise ApiError(503, "buffer_full", str(exc), **self.status()) from None
        if adopting:  # only once the batch is known to be acceptable: a refused batch changes nothing
            async with self._meta_lock:
                if log.last_seq == 0 and (not self.adopted or log.log_id != req.log_id):
                    await self._save(log_id=req.log_id, log_epoch=0)
                    log.adopt(req.log_id)
                    self.buffer.reset()
                    self.adopted = True
                    self.logger.info("log_adopted", log=req.log_id)
        released = self.buffer.offer(req.entries)
        if released.items and self.commit is None:
            self.tail.notify()  # the gap-free prefix grew (with a disk: once it is synced)
        if released.dropped:
            self.logger.warning("foreign_entries_dropped", count=released.dropped, at=released.first)
        if released.trimmed:
            self.logger.info("held_entries_trimmed", count=released.trimmed, held_bytes=self.buffer.held_bytes)
        if released.items and self.commit is not None:
            # Ack only what is on disk; concurrent batches share one fsync.
            records = [Record(*item) for item in released.items]
            try:
                await self.commit.wait_durable(self.commit.submit(released.first, records))
            except DiskWriteFailed as exc:
                raise errors.DiskFailed(f"this secondary cannot write to its disk: {exc}") from None
        await self._take_log_epoch(fence, req.prev, req.entries, req.base)  # type: ignore[arg-type]
        if self.config.fail_rate > 0 and self._rng.random() < self.config.fail_rate:
            raise errors.InjectedFailure("stored, then failed on purpose (--fail-rate)", **self.status())
        return self.status(at=max((seq for seq, *_ in req.entries), default=prev_seq))

    async def _take_log_epoch(self, fence: Fence, prev: tuple[int, bytes], entries: list[Any], base: int = 0) -> None:
        """Take the master's epoch as our log epoch once our whole durable log is a prefix of its log
        (the chain value at our last seq equals the one this request carries for that seq) and holds at
        least the master's start-up log (base): a position (e, seq) then promises every entry that was
        committed before epoch e, so the most up-to-date position is a safe donor for a later master."""
        if self.log_epoch == fence.epoch or fence.epoch != self.promised or fence.master != self.promised_to:
            return
        end = self.durable
        if end < base:
            return
        theirs = {seq: h for seq, _, _, _, h in entries}
        theirs[prev[0]] = prev[1]
        if theirs.get(end) != self.log.hash(end) and not (end == 0 and prev == (0, GENESIS)):
            return
        async with self._meta_lock:
            if self.log_epoch != fence.epoch and fence.epoch == self.promised and self.durable == end:
                await self._save(log_epoch=fence.epoch)
                self.logger.info("log_epoch_taken", epoch=fence.epoch, seq=end)

    async def roll_back(self, fence: Fence, keep: int, keep_hash: bytes) -> dict[str, Any]:
        """Under failover: remove our entries past keep, where our log and the master's agree (keep_hash is
        its chain value there), because the master's log contradicts them (SPEC "Contradicting tails").

        Only for a master whose epoch is our promise (promised now if newer) and above our log epoch: a
        master of our own log epoch never contradicts us. The removed entries go to the rollback file
        first (logged without a data dir), then the log is cut; we answer as a new incarnation, so the
        master believes our lower seq and drops answers sent before the cut."""
        self.check_disk()
        await self.fence(fence, promise=True)
        async with self._meta_lock:
            if fence.epoch != self.promised or fence.master != self.promised_to or fence.epoch <= self.log_epoch:
                raise errors.StaleEpoch(
                    f"a rollback needs the promised epoch above log epoch {self.log_epoch}",
                    **self.status(),
                    epoch=self.promised,
                )
            log = self.log
            if self.commit is not None:
                await self.commit.wait_durable(log.last_seq)
            if keep > log.last_seq or log.hash(keep) != keep_hash:
                raise errors.EntryConflict(
                    f"this node's log does not agree with the master's at seq {keep}", **self.status()
                )
            removed = log.hashed(keep + 1, log.last_seq)
            where: str | None = None
            if self.commit is not None:
                try:
                    where = await self.commit.truncate(keep, (fence.epoch, keep + 1, [Record(*r) for r in removed]))
                except (OSError, DiskWriteFailed) as exc:
                    self._disk_failed(exc)
                    raise errors.DiskFailed(f"this secondary cannot write to its disk: {exc}") from None
            else:
                for i, (id_, text, flags, h) in enumerate(removed):
                    self.logger.warning(
                        "rolled_back_entry", seq=keep + 1 + i, id=id_, text=text, flags=flags, hash=h.hex()
                    )
            log.truncate(keep)
            self.buffer.reset()
            self.view = MessagesView(log)  # its cached encodings may hold the entries just removed
            self.incarnation = uuid.uuid4().hex
            self.logger.warning("rolled_back", count=len(removed), first=keep + 1, epoch=fence.epoch, file=where)
        return self.status()

    def entries(self, since: int, limit: int) -> list[list[object]]:
        """Durable entries after since, at most limit of them but never part of a client batch."""
        log, end = self.log, self.durable
        last = min(end, since + limit)
        if last > since:
            last = min(log.whole_end(last), end)
            while last > since and log.flags(last) & BATCH_MORE:
                last -= 1  # only whole batches are durable, so this is a bound, not a scan
        return log.wire(since + 1, last) if last > since else []


SECONDARY = web.AppKey("secondary", Secondary)


async def post_promise(request: web.Request) -> web.Response:
    secondary = request.app[SECONDARY]
    secondary.check_disk()
    await secondary.fence(parse_fence(request.headers, required=True), promise=True)  # type: ignore[arg-type]
    return json_response(secondary.status())


async def post_replicate(request: web.Request) -> web.Response:
    secondary = request.app[SECONDARY]
    fence = parse_fence(request.headers, required=True)
    return json_response(await secondary.replicate(await read_body(request), fence))  # type: ignore[arg-type]


async def post_messages(request: web.Request) -> web.Response:
    """A client's write sent here: say that this is a secondary, so that a client moves on to the master."""
    raise errors.NotMaster(
        "this node is a secondary and takes no writes; send them to the master", role="secondary", master=None
    )


async def get_entries(request: web.Request) -> web.Response:
    """Internal: raw durable entries, for a master recovering its log at start-up."""
    secondary = request.app[SECONDARY]
    await secondary.fence(parse_fence(request.headers, required=True), promise=False)  # type: ignore[arg-type]
    since = parse_query_int(request.query, "since") or 0
    limit = parse_query_int(request.query, "limit")
    limit = 10_000 if limit is None else max(1, min(limit, 10_000))
    entries = secondary.entries(since, limit)
    return json_response({**secondary.status(), "entries": entries})


async def get_health(request: web.Request) -> web.Response:
    secondary = request.app[SECONDARY]
    fence = parse_fence(request.headers, required=False)
    if fence is not None:  # a master's heartbeat: it must learn at once that we promised another
        await secondary.fence(fence, promise=False)
        secondary.check_disk()
    return json_response(secondary.health(parse_query_int(request.query, "at")))


def build_secondary_app(config: SecondaryConfig, *, reset: bool = False) -> web.Application:
    """The secondary's application; with a data dir its log is loaded here, before it listens."""
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_bytes)
    Guard(config.cluster_key, config.token_file).install(app)  # replog.auth: who may call which route
    secondary = Secondary(config, reset=reset)
    app[SECONDARY] = secondary

    async def disk_writer(app: web.Application) -> AsyncIterator[None]:
        commit = secondary.commit
        task = asyncio.create_task(commit.run(), name="group commit") if commit is not None else None
        if task is not None:
            task.add_done_callback(_report_death(secondary))
        summary = asyncio.create_task(log_summaries(secondary.summary, config.summary_interval), name="summary")
        try:
            yield
        finally:
            summary.cancel()
            await asyncio.gather(summary, return_exceptions=True)
            if commit is not None:
                await commit.close()  # waits until no worker thread uses the disk, then closes it
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(disk_writer)
    app.on_shutdown.append(_close_readers)
    app.router.add_post("/promise", post_promise)
    app.router.add_post("/replicate", post_replicate, expect_handler=expect_handler)
    app.router.add_get("/entries", get_entries)
    app.router.add_get("/messages", messages_handler(lambda app: app[SECONDARY]))
    app.router.add_post("/messages", post_messages)
    app.router.add_get("/messages/stream", stream_handler(lambda app: app[SECONDARY]))
    app.router.add_get("/health", get_health)
    add_read_routes(app)
    app.router.add_get("/metrics", metrics_handler(lambda app: app[SECONDARY].metrics))
    app.router.add_get("/readyz", readyz_handler(lambda app: app[SECONDARY], "secondary"))
    return app


def _secondary_log(app: web.Application) -> tuple[Log, int, str | None]:
    secondary = app[SECONDARY]
    return secondary.log, secondary.durable, secondary.log.log_id if secondary.adopted else None


def add_read_routes(app: web.Application) -> None:
    """GET /livez, /openapi.json, /log (the raw log, for `replog export`) and the dashboard (/ and /ui/) of a secondary."""
    app.router.add_get("/livez", livez)
    add_dashboard_routes(app)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/log", log_handler(_secondary_log))


async def _close_readers(app: web.Application) -> None:
    """Shutting down: long-polls answer now and streams end, instead of holding the shutdown up."""
    app[SECONDARY].tail.close()


def _report_death(secondary: Secondary) -> Any:
    """A group-commit task that dies of a bug leaves a node that cannot store: say so, and stop acking."""

    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            secondary.logger.critical("task_died", task=task.get_name(), error=repr(exc))
            secondary._disk_failed(exc)

    return done
