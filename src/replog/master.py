"""The master: takes writes, assigns seqs, waits for each write's concern, serves reads and health."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from replog import jsoncodec
from replog.backoff import Backoff
from replog.client import HttpTransport, Transport, TransportError
from replog.commitment import Commitment
from replog.config import MasterConfig
from replog.durable import GroupCommit
from replog.recovery import Answer, Donor, choose_donor, enough_answers
from replog.http import expect_handler, json_errors, json_response, messages_handler, read_body
from replog.log import Log
from replog.progress import Status
from replog.protocol import ApiError, WriteRequest, parse_write
from replog.replicator import Replicator
from replog.storage import DiskLog
from replog.views import MessagesView


class BatchEncoder:
    """Encodes a replication batch once, however many secondaries ask for the same range."""

    def __init__(self, log: Log, size: int = 8) -> None:
        self._log = log
        self._size = size
        self._cache: dict[tuple[int, int], bytes] = {}

    def __call__(self, first: int, last: int) -> bytes:
        key = (first, last)
        body = self._cache.get(key)
        if body is None:
            entries = self._log.wire(first, last)  # the replicator has capped the range
            prev = [first - 1, self._log.crc(first - 1)]
            body = jsoncodec.dumps({"log": self._log.log_id, "prev": prev, "entries": entries})
            if len(self._cache) >= self._size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = body
        return body


class Master:
    """The master's state and its write path; the HTTP handlers are thin wrappers around it."""

    def __init__(
        self,
        config: MasterConfig,
        transports: list[Transport],
        *,
        log: Log | None = None,
        commit: GroupCommit | None = None,
        **replicator_kw: Any,
    ) -> None:
        self.config = config
        self.log = log if log is not None else Log(uuid.uuid4().hex)
        self.commit = commit  # the on-disk log's writer, with --data-dir
        self.commitment = Commitment(config.nodes)
        self._ids: dict[str, tuple[int, int, bool]] = {}  # client id -> (first seq, count, was a batch)
        self._index(1, self.log.last_seq)
        self._transports = transports
        self.recovering = True  # until start-up recovery has consulted a majority
        self.consulted: list[str] = []  # secondaries that answered during recovery
        self._encode = BatchEncoder(self.log)
        self.view = MessagesView(self.log)
        self._started = time.monotonic()
        self.logger = structlog.get_logger()
        self.replicators = [
            Replicator(
                i + 1,
                url,
                self.log,
                transport,
                encode=self._encode,
                on_match=self._on_match,
                on_status=self._on_status,
                batch_max_count=config.batch_max_count,
                batch_max_bytes=config.batch_max_bytes,
                backoff=Backoff(config.backoff_base, config.backoff_cap),
                heartbeat_interval=config.heartbeat_interval,
                suspect_after=config.suspect_after,
                unhealthy_after=config.unhealthy_after,
                upto=lambda: self.held,
                **replicator_kw,
            )
            for i, (url, transport) in enumerate(zip(config.secondaries, transports))
        ]
        self._writable = self._has_quorum()
        self._on_match(0, self.held)

    @property
    def held(self) -> int:
        """Highest seq the master itself holds (on disk, with a data dir)."""
        return self.commit.durable if self.commit is not None else self.log.last_seq

    @property
    def readable(self) -> int:
        """Reads show entries up to here: with a data dir, nothing a crash could take back."""
        return self.held

    def _index(self, first: int, last: int) -> None:
        """Register the client ids of entries first..last (after a load or a recovery).

        A batch's key is not stored in the log; it is rebuilt from its entries' ids "<key>:0", "<key>:1", ...
        """
        log, ids = self.log, self._ids
        seq = first
        while seq <= last:
            id_ = log.raw_id(seq)
            if id_ is not None:
                ids[id_] = (seq, 1, False)
                if id_.endswith(":0"):
                    key = id_[:-2]
                    n = 1
                    while seq + n <= last and log.raw_id(seq + n) == f"{key}:{n}":
                        ids[f"{key}:{n}"] = (seq + n, 1, False)
                        n += 1
                    ids.setdefault(key, (seq, n, True))
                    seq += n
                    continue
            seq += 1

    # -- start-up recovery -------------------------------------------------------

    async def recover(self, sleep: Any = asyncio.sleep) -> None:
        """Before taking writes: ask the secondaries how far their logs go, and copy what we lack.

        Waits until a majority of all nodes (the master included) has answered; the most
        advanced secondary of our log (any log, if ours is empty) is the donor.
        """
        answers: dict[str, Answer] = {}
        while True:
            missing = [(r.url, t) for r, t in zip(self.replicators, self._transports) if r.url not in answers]
            at = self.log.last_seq
            replies = await asyncio.gather(*(t.health(at) for _, t in missing), return_exceptions=True)
            for (url, _), reply in zip(missing, replies):
                if not isinstance(reply, BaseException):
                    agrees = reply.crc_seq == 0 or reply.crc == self.log.crc(min(reply.crc_seq, at))
                    answers[url] = Answer(url, reply.log, reply.seq, agrees)
            if enough_answers(len(answers), self.config.nodes):
                donor = choose_donor(self.log.log_id, self.log.last_seq, list(answers.values()))
                if donor is None:
                    break
                try:
                    await self._copy_from(donor)
                    break
                except TransportError as exc:
                    self.logger.warning("recovery_retry", donor=donor.url, error=str(exc))
                    answers.pop(donor.url, None)
            await sleep(self.config.heartbeat_interval)
        if self.commit is not None and self.commit.disk.last_seq == 0:
            self.commit.disk.set_log_id(self.log.log_id)
        self.consulted = [r.url for r in self.replicators if r.url in answers]
        unconsulted = [r.url for r in self.replicators if r.url not in answers]
        self.recovering = False
        self.logger.info("recovered", seq=self.log.last_seq, log=self.log.log_id, consulted=self.consulted, unconsulted=unconsulted)
        if unconsulted:
            self.logger.warning("recovery_incomplete", unconsulted=unconsulted, detail="entries held only by these secondaries cannot be recovered; if they hold more they will show as diverged")

    async def _copy_from(self, donor: Donor) -> None:
        transport = self._transports[[r.url for r in self.replicators].index(donor.url)]
        if self.log.last_seq == 0 and self.log.log_id != donor.log_id:
            self.log.adopt(donor.log_id)  # replication batches read the identity when encoded
            if self.commit is not None:
                self.commit.disk.set_log_id(donor.log_id)
        start = self.log.last_seq
        self.logger.warning("recovering_entries", donor=donor.url, first=start + 1, last=donor.seq)
        while self.log.last_seq < donor.seq:
            log_id, raw = await transport.entries(self.log.last_seq, 5000)
            if log_id != donor.log_id or not raw:
                raise TransportError("the donor's log changed during recovery")
            items: list[tuple[str | None, str]] = []
            for i, entry in enumerate(raw):
                seq, id_, text = entry
                if seq != self.log.last_seq + 1 + i or not isinstance(text, str):
                    raise TransportError("the donor sent entries out of order")
                items.append((id_ if isinstance(id_, str) else None, text))
            first = self.log.extend(items)
            if self.commit is not None:
                await self.commit.wait_durable(self.commit.submit(first, items))
        self._index(start + 1, self.log.last_seq)
        self._on_match(0, self.held)

    # -- replication callbacks --------------------------------------------------

    def _on_match(self, node: int, match: int) -> None:
        for waiter in self.commitment.update(node, match):
            fut = waiter.token
            if not fut.done():
                fut.set_result(None)

    def durable_to(self, seq: int) -> None:
        """The master's own copy is on disk up to seq: it counts as one ack, and may be sent on."""
        self._on_match(0, seq)
        for r in self.replicators:
            r.notify()

    def _on_status(self, node: int, before: Status, after: Status) -> None:
        writable = self._has_quorum()
        if writable != self._writable:
            self._writable = writable
            self.logger.warning("quorum_regained" if writable else "quorum_lost", available=self._available())

    def _available(self) -> int:
        return 1 + sum(1 for r in self.replicators if r.progress.available)

    def _has_quorum(self) -> bool:
        return not self.config.quorum_check or self._available() >= self.config.majority

    @property
    def writable(self) -> bool:
        return self._writable

    # -- the write path -----------------------------------------------------------

    async def write(self, req: WriteRequest) -> tuple[int, dict[str, Any]]:
        """Append (or find, for a retried id) and wait for the write concern: (status, body)."""
        found = self._find(req)
        if found is not None:
            first, status = found, 200
        else:
            if self.recovering:
                # Read-only like any loss of quorum: it has not yet heard from a majority (or is copying from one).
                raise ApiError(
                    503, "no_quorum", "the master is recovering its log from a majority of the nodes; it is read-only until then"
                )
            if self.commit is not None and self.commit.failed is not None:
                raise ApiError(503, "disk_failed", f"the master cannot write its log to disk: {self.commit.failed}")
            if not self._writable:
                raise ApiError(
                    503,
                    "no_quorum",
                    f"fewer than {self.config.majority} of {self.config.nodes} nodes are reachable; the master is read-only",
                )
            first, status = self._append(req), 201
        last = first + len(req.texts) - 1
        acks, met = await self._wait(last, req.w, req.timeout)
        body = self._describe(req, first, last, acks)
        if met:
            self.logger.debug("write_concern_met", seq=last, w=req.w, acks=acks)
        else:
            self.logger.info("write_concern_timeout", seq=last, w=req.w, acks=acks)
            raise ApiError(
                504,
                "write_concern_timeout",
                f"the message is stored and keeps replicating, but only {acks} of the {req.w} nodes asked for held it in time",
                **body,
            )
        return status, body

    def _find(self, req: WriteRequest) -> int | None:
        """The first seq already stored under req.id, or None; 409 if it holds something else."""
        if req.id is not None and req.id not in self._ids and not req.batch:
            seq = self.log.generated_seq(req.id)
            if seq is not None:
                # A retry with the id the master generated for an earlier answer (say, a 504).
                if seq > self.log.last_seq or self.log.raw_id(seq) is not None:
                    raise ApiError(400, "reserved_id", f'ids of the form "{req.id.split("-")[0]}-<seq>" are the ones this log generates')
                if self.log.text(seq) != req.texts[0]:
                    raise ApiError(409, "id_conflict", f'the id "{req.id}" is already stored with different content')
                return seq
        if req.id is None or req.id not in self._ids:
            if req.id is not None and req.batch:
                for i in range(len(req.texts)):
                    if f"{req.id}:{i}" in self._ids:
                        raise ApiError(409, "id_conflict", f'the id "{req.id}:{i}" of this batch\'s entry {i} is taken')
            return None
        first, count, was_batch = self._ids[req.id]
        same = was_batch == req.batch and count == len(req.texts)
        if same:
            same = all(self.log.text(first + i) == text for i, text in enumerate(req.texts))
        if not same:
            raise ApiError(409, "id_conflict", f'the id "{req.id}" is already stored with different content')
        return first

    def _append(self, req: WriteRequest) -> int:
        if req.batch:
            ids = [None] * len(req.texts) if req.id is None else [f"{req.id}:{i}" for i in range(len(req.texts))]
            first = self.log.extend(list(zip(ids, req.texts)))
            if req.id is not None:
                self._ids[req.id] = (first, len(req.texts), True)
                for i, id_ in enumerate(ids):
                    self._ids[id_] = (first + i, 1, False)  # type: ignore[index]
        else:
            first = self.log.append(req.texts[0], req.id)
            if req.id is not None:
                self._ids[req.id] = (first, 1, False)
        last = self.log.last_seq
        self.logger.debug("appended", first=first, last=last)
        if self.commit is not None:
            # The master counts itself once the entries are on disk (GroupCommit calls on_durable).
            self.commit.submit(first, [self.log.item(seq) for seq in range(first, last + 1)])
        else:
            self._on_match(0, last)
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
        entry = self.log.entry(first)
        return {"seq": entry.seq, "id": entry.id, "text": entry.text, "w": req.w, "acks": acks}

    # -- reads ---------------------------------------------------------------------

    @property
    def status(self) -> str:
        if self.recovering:
            return "read_only"  # the "recovering" field says why
        if self.commit is not None and self.commit.failed is not None:
            return "disk_failed"
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
                }
            )
        return {
            "role": "master",
            "status": self.status,
            "seq": self.held,
            "appended_seq": last,
            "quorum": self.config.majority,
            "nodes": self.config.nodes,
            "available": self._available(),
            "log": self.log.log_id,
            "waiting_writes": self.commitment.waiting,
            "recovering": self.recovering,
            "unconsulted": [] if self.recovering else [r.url for r in self.replicators if r.url not in self.consulted],
            "fsyncs": None if self.commit is None else self.commit.syncs,
            "uptime": round(now - self._started, 3),
            "secondaries": secondaries,
        }


MASTER = web.AppKey("master", Master)


async def post_messages(request: web.Request) -> web.Response:
    master = request.app[MASTER]
    cfg = master.config
    req = parse_write(
        await read_body(request),
        nodes=cfg.nodes,
        default_w=cfg.default_w,
        default_timeout=cfg.w_timeout,
        max_message_bytes=cfg.max_message_bytes,
    )
    status, body = await master.write(req)
    return json_response(body, status=status)


async def get_health(request: web.Request) -> web.Response:
    return json_response(request.app[MASTER].health())


def build_master_app(config: MasterConfig, **replicator_kw: Any) -> web.Application:
    """The master's application. With a data dir its log is loaded here, before it listens;
    at start-up it recovers from the secondaries, then runs one replicator per secondary."""
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_bytes)
    log = Log(uuid.uuid4().hex)
    disk: DiskLog | None = None
    if config.data_dir is not None:
        disk = DiskLog(config.data_dir, fsync=config.fsync)
        loaded = disk.load()  # CorruptLogError stops the node, naming file and offset
        if loaded.log_id is not None:
            log.adopt(loaded.log_id)
        log.extend(loaded.entries)

    async def replication(app: web.Application) -> AsyncIterator[None]:
        health_timeout = max(config.heartbeat_interval, 0.5)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.replication_timeout),
            connector=aiohttp.TCPConnector(limit=0),
        )
        transports: list[Transport] = [
            HttpTransport(session, url, replicate_timeout=config.replication_timeout, health_timeout=health_timeout)
            for url in config.secondaries
        ]
        master = Master(config, transports, log=log, commit=None, **replicator_kw)
        tasks: list[asyncio.Task[Any]] = []
        if disk is not None:
            master.commit = GroupCommit(disk, on_durable=master.durable_to)
            tasks.append(asyncio.create_task(master.commit.run(), name="group commit"))
        app[MASTER] = master

        async def start() -> None:
            await master.recover()
            for r in master.replicators:
                tasks.append(asyncio.create_task(_supervise(r), name=f"replicator {r.url}"))

        tasks.append(asyncio.create_task(start(), name="recovery"))
        try:
            yield
        finally:
            for t in reversed(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            if disk is not None:
                disk.close()

    app.cleanup_ctx.append(replication)
    app.router.add_post("/messages", post_messages, expect_handler=expect_handler)
    app.router.add_get("/messages", messages_handler(lambda app: app[MASTER]))
    app.router.add_get("/health", get_health)
    return app


async def _supervise(replicator: Replicator) -> None:
    """Run a replicator; if a bug ever kills it, log and restart it rather than stall its secondary."""
    while True:
        try:
            await replicator.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            replicator.log.exception("replicator_crashed")
            await asyncio.sleep(1.0)
