"""A secondary: stores the master's batches through a reorder buffer and shows the gap-free prefix."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any, AsyncIterator

import structlog
from aiohttp import web

from replog.config import SecondaryConfig
from replog.durable import GroupCommit
from replog.http import expect_handler, json_errors, json_response, messages_handler, read_body
from replog.log import Log
from replog.protocol import ApiError, bad, parse_query_int, parse_replicate
from replog.reorder import Conflict, ReorderBuffer
from replog.storage import DiskLog
from replog.views import MessagesView


class Secondary:
    """A secondary's state: its log, the entries held behind a gap, and its boot id."""

    def __init__(self, config: SecondaryConfig, *, reset: bool = False) -> None:
        self.config = config
        self.log = Log(uuid.uuid4().hex)  # replaced by the master's identity on the first batch
        self.adopted = False  # whether log.log_id is a master's (False: a placeholder of an empty log)
        self.commit: GroupCommit | None = None  # the on-disk log's writer, with --data-dir
        if config.data_dir is not None:
            disk = DiskLog(config.data_dir, fsync=config.fsync)
            if reset:
                disk.reset()
            loaded = disk.load()  # CorruptLogError stops the node, naming file and offset
            if loaded.log_id is not None:
                self.log.adopt(loaded.log_id)
                self.adopted = True
            self.log.extend(loaded.entries)
            self.commit = GroupCommit(disk)
        self.buffer = ReorderBuffer(self.log)
        self.view = MessagesView(self.log)
        self.boot = uuid.uuid4().hex  # a new one per process: tells the master we restarted
        self._rng = random.Random(config.seed)
        self.logger = structlog.get_logger()

    @property
    def durable(self) -> int:
        """Highest seq held without gaps *and* on disk (with --data-dir): what acks promise."""
        return self.commit.durable if self.commit is not None else self.log.last_seq

    @property
    def readable(self) -> int:
        return self.durable

    def describe(self, at: int | None = None) -> dict[str, Any]:
        """Where this secondary stands: its durable gap-free seq, and its log's checksum at
        min(seq, at), so that the master can check the two logs agree before trusting the seq."""
        seq = self.durable
        crc_seq = seq if at is None else min(seq, at)
        return {
            "seq": seq,
            "boot": self.boot,
            "log": self.log.log_id if self.adopted else None,
            "crc_seq": crc_seq,
            "crc": self.log.crc(crc_seq),
        }

    async def replicate(self, body: bytes) -> dict[str, Any]:
        req = parse_replicate(body)
        if self.config.delay > 0:
            await asyncio.sleep(self.config.delay)
        adopting = req.log_id != self.log.log_id or not self.adopted
        if adopting and self.log.last_seq > 0 and self.adopted:
            self.logger.error("log_mismatch", ours=self.log.log_id, theirs=req.log_id)
            raise ApiError(
                409,
                "log_mismatch",
                f"this secondary holds another log ({self.log.log_id}); restart it empty to rejoin",
                **self.describe(),
            )
        last = self.log.last_seq
        if req.prev is not None and 0 < req.prev[0] <= last and self.log.crc(req.prev[0]) != req.prev[1]:
            self.logger.error("entry_conflict", seq=req.prev[0])
            raise ApiError(409, "entry_conflict", f"this secondary holds other entries up to seq {req.prev[0]}", **self.describe())
        if any(seq > last + self.buffer.window for seq, _, _ in req.entries):
            raise bad("seq_out_of_window", f"entries more than {self.buffer.window} seqs past this secondary's end")
        try:
            self.buffer.check(req.entries)
        except Conflict as exc:
            self.logger.error("entry_conflict", seq=exc.seq)
            raise ApiError(409, "entry_conflict", str(exc), **self.describe()) from None
        if adopting:  # only once the batch is known to be acceptable: a refused batch changes nothing
            self.log.adopt(req.log_id)
            self.buffer.reset()
            if self.commit is not None:
                self.commit.disk.set_log_id(req.log_id)
            self.adopted = True
            self.logger.info("log_adopted", log=req.log_id)
        released = self.buffer.offer(req.entries)
        if released.items:
            self.logger.debug("stored", first=released.first, last=self.log.last_seq)
            if self.commit is not None:
                # Ack only what is on disk; concurrent batches share one fsync.
                await self.commit.wait_durable(self.commit.submit(released.first, released.items))
        if self.config.fail_rate > 0 and self._rng.random() < self.config.fail_rate:
            raise ApiError(500, "injected_failure", "stored, then failed on purpose (--fail-rate)", **self.describe())
        return self.describe(at=max((seq for seq, _, _ in req.entries), default=None))


SECONDARY = web.AppKey("secondary", Secondary)


async def post_replicate(request: web.Request) -> web.Response:
    secondary = request.app[SECONDARY]
    return json_response(await secondary.replicate(await read_body(request)))


async def get_entries(request: web.Request) -> web.Response:
    """Internal: raw durable entries, for a master recovering its log at start-up."""
    secondary = request.app[SECONDARY]
    since = parse_query_int(request.query, "since") or 0
    limit = parse_query_int(request.query, "limit")
    limit = 10_000 if limit is None else min(limit, 10_000)
    last = min(secondary.durable, since + limit)
    log = secondary.log
    entries = [[seq, log.raw_id(seq), log.text(seq)] for seq in range(since + 1, last + 1)]
    return json_response({"log": log.log_id if secondary.adopted else None, "entries": entries})


async def get_health(request: web.Request) -> web.Response:
    secondary = request.app[SECONDARY]
    at = parse_query_int(request.query, "at")
    return json_response(
        {"role": "secondary", **secondary.describe(at), "buffered": len(secondary.buffer.pending)}
    )


def build_secondary_app(config: SecondaryConfig, *, reset: bool = False) -> web.Application:
    """The secondary's application; with a data dir its log is loaded here, before it listens."""
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_bytes)
    secondary = Secondary(config, reset=reset)
    app[SECONDARY] = secondary

    async def disk_writer(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(secondary.commit.run(), name="group commit") if secondary.commit else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                secondary.commit.disk.close()  # type: ignore[union-attr]

    app.cleanup_ctx.append(disk_writer)
    app.router.add_post("/replicate", post_replicate, expect_handler=expect_handler)
    app.router.add_get("/entries", get_entries)
    app.router.add_get("/messages", messages_handler(lambda app: app[SECONDARY]))
    app.router.add_get("/health", get_health)
    return app
