"""One replicator per secondary: a drain loop that sends pending entries in seq order, in batches,
with a small bounded window of requests in flight, and a heartbeat loop that tracks the
secondary's health.

The heartbeat loop also resumes the drain loop the moment a secondary comes back (or is seen to
have restarted), cutting short any backoff and abandoning requests stuck on the old connection.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from replog.backoff import Backoff
from replog.log import Log
from replog.progress import Progress, Status
from replog.transport import Refused, Reply, Stale, Transport, TransportError, Unavailable

Sleep = Callable[[float], Awaitable[None]]
EncodeBatch = Callable[[int, int], bytes]  # (first, last) -> request body
DEFAULT_BACKOFF = Backoff()  # frozen: one instance serves every replicator


class Replicator:
    """Keeps one secondary's copy of the log complete and in order, under the master's epoch."""

    def __init__(
        self,
        index: int,
        url: str,
        log: Log,
        transport: Transport,
        *,
        encode: EncodeBatch,
        on_progress: Callable[[int], None],
        on_status: Callable[[int, Status, Status], None],
        on_stale: Callable[[int], None],
        epoch: Callable[[], int],
        durable: Callable[[], int] | None = None,
        batch_max_count: int = 5000,
        batch_max_bytes: int = 4 << 20,
        window: int = 4,
        backoff: Backoff = DEFAULT_BACKOFF,
        heartbeat_interval: float = 1.0,
        suspect_after: int = 2,
        unhealthy_after: int = 5,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index  # this secondary's node index in the Commitment (the master is 0)
        self.url = url
        self.progress = Progress()
        self._log = log
        self._transport = transport
        self._encode = encode
        self._on_progress = on_progress  # the master recounts this secondary's acks
        self._on_status = on_status  # tells the master this secondary's status changed
        self._on_stale = on_stale  # the secondary promised a newer epoch: the master is deposed
        self._epoch = epoch  # the master's epoch (0: not taking writes, send nothing)
        # The master's durable end, the last seq that may be sent: with a data dir, no secondary
        # ever holds an entry a crash of the master could take back.
        self._durable = durable if durable is not None else (lambda: log.last_seq)
        self._batch_max_count = batch_max_count
        self._batch_max_bytes = batch_max_bytes
        self._window = max(1, window)  # replication requests in flight at most
        self._backoff = backoff
        self._interval = heartbeat_interval
        self._suspect_after = suspect_after
        self._unhealthy_after = unhealthy_after
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._wake = asyncio.Event()  # one-slot trigger: there may be something to send
        self._kick = asyncio.Event()  # the secondary came back or restarted: stop waiting, resend
        self._inflight: list[asyncio.Task[Reply]] = []  # requests sent and not answered, in seq order
        self.batches = 0  # replication requests sent (for /metrics)
        self.sent_bytes = 0  # bytes of their bodies
        self.retries = 0  # requests that failed and are resent after a backoff
        self._reached = False  # the secondary has answered healthy once (its first answer is no status change)
        self.logger = structlog.get_logger().bind(secondary=url)

    # -- what the master calls -------------------------------------------------

    def notify(self) -> None:
        """New entries were appended (or the master's state changed); repeated calls collapse into one wake-up."""
        self._wake.set()

    async def run(self) -> None:
        """Run both loops until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._heartbeat_loop(), name=f"heartbeat {self.url}")
            tg.create_task(self._drain_loop(), name=f"drain {self.url}")

    # -- the drain loop -------------------------------------------------------

    def _sendable(self) -> bool:
        p = self.progress
        if p.status in (Status.UNHEALTHY, Status.DIVERGED) or self._epoch() == 0:
            return False
        if p.next_seq <= self._durable():
            return len(self._inflight) < self._window
        return not self._inflight and p.needs_epoch(self._epoch())

    def _send(self) -> None:
        p = self.progress
        first = p.next_seq
        count = min(self._batch_max_count, self._durable() - first + 1)
        last = self._log.batch_end(first, count, self._batch_max_bytes) if count > 0 else first - 1
        if last < first:
            p.sync_sent()  # nothing to send but our epoch: one request for this position
        body = self._encode(first, last)
        self._kick.clear()
        p.sent(last)
        self.batches += 1
        self.sent_bytes += len(body)
        self.logger.debug("batch_sent", first=first, last=last, bytes=len(body))
        self._inflight.append(asyncio.ensure_future(self._transport.replicate(body)))

    async def _drain_loop(self) -> None:
        try:
            while True:
                self._wake.clear()
                while self._sendable():
                    self._send()
                if not self._inflight:
                    await self._wake.wait()
                    continue
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([*self._inflight, waker], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                delay = self._collect()
                if delay is None and not self._inflight and self.progress.next_seq > self.progress.match + 1:
                    # Every request was answered and it still lacks part of what was sent (held
                    # behind a gap, or dropped as another chain's): send it again.
                    self.progress.rewind()
                if delay is not None:
                    await self._abandon()
                    if delay > 0:
                        await self._pause(delay)
        finally:
            await self._abandon()

    def _collect(self) -> float | None:
        """Take the answers that arrived, in the order sent. None to go on; else abandon what is in
        flight and wait that long (0: resend at once)."""
        p = self.progress
        # Every answer that arrived, in the order sent; one still out ahead of it does not hold it back
        # (else asyncio.wait() would return at once, round after round, until the head answered).
        for task in [t for t in self._inflight if t.done()]:
            self._inflight.remove(task)
            if task.cancelled():
                # Kicked by the heartbeat loop: the secondary is back or restarted.
                p.rewind()
                return 0.0
            exc = task.exception()
            if exc is None:
                p.succeeded(self._clock())
                self._take(task.result())
                continue
            if isinstance(exc, Stale):
                self._stale(exc)
                return 0.0
            if isinstance(exc, Refused):
                self._diverged(exc.code, str(exc), None)
                return 0.0
            if isinstance(exc, TransportError):
                if isinstance(exc, Unavailable) and p.unavailable():
                    self._status_changed(Status.HEALTHY, p.status, error=str(exc))
                p.failed()
                self.retries += 1
                delay = self._backoff.delay(p.failures, self._rand)
                self.logger.info("replicate_retry", failures=p.failures, delay=round(delay, 3), error=str(exc))
                return delay
            raise exc
        return None

    async def _abandon(self) -> None:
        """Cancel every request in flight and wait for them to go."""
        tasks, self._inflight = self._inflight, []
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.progress.rewind()

    async def _pause(self, delay: float) -> None:
        """Sleep for the backoff delay, unless the heartbeat loop kicks us first."""
        if self._kick.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        kicked = asyncio.ensure_future(self._kick.wait())
        try:
            await asyncio.wait({sleeper, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, kicked):
                t.cancel()
            await asyncio.gather(sleeper, kicked, return_exceptions=True)

    # -- what answers tell -------------------------------------------------------

    def _contradiction(self, reply: Reply) -> str | None:
        """Why the secondary's log cannot be ours, or None if it agrees as far as it goes."""
        log = self._log
        if reply.seq > 0 and reply.log is not None and reply.log != log.log_id:
            return "log_mismatch"
        if reply.seq > log.last_seq:
            return "entry_conflict"  # it holds entries we do not: a tail we never wrote (static roles never merge it)
        if reply.hash != log.hash(reply.seq):
            return "entry_conflict"
        return None

    def _take(self, reply: Reply) -> bool:
        """Learn the secondary's position from an answer; True if it rewound."""
        p = self.progress
        conflict = self._contradiction(reply)
        if p.status is Status.DIVERGED:
            if reply.incarnation == p.incarnation:
                return False  # the same process, still holding the log it contradicted us with
            if conflict is not None:
                p.diverge(reply.incarnation)  # a new process, but still a contradicting log: no flap
                return False
            before = p.status
            p.rejoin()  # a new process: judge its log afresh
            self._status_changed(before, p.status)
        if conflict is not None:
            self._diverged(conflict, f"the secondary's log contradicts ours ({conflict}, its seq {reply.seq})", reply)
            return False
        rewound = p.report(reply.incarnation, reply.seq, reply.promised, reply.log_epoch)
        if rewound:
            self.logger.info("secondary_rewound", seq=p.match)
        self._on_progress(self.index)
        return rewound

    def _stale(self, exc: Stale) -> None:
        if exc.foreign(self._log.log_id):
            self._diverged("log_mismatch", f"the secondary holds another log ({exc.log}), promised elsewhere", None)
        else:
            self._on_stale(exc.epoch)

    def _diverged(self, code: str, detail: str, reply: Reply | None) -> None:
        p = self.progress
        before = p.status
        if p.diverge(reply.incarnation if reply is not None else None):
            self.logger.error("secondary_diverged", code=code, detail=detail)
            self._status_changed(before, p.status)
        self._on_progress(self.index)

    # -- the heartbeat loop ---------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        p = self.progress
        while True:
            started = self._clock()
            before = p.status
            try:
                reply = await self._transport.health(self._log.last_seq)
            except Stale as exc:
                self._stale(exc)
            except Unavailable as exc:
                if p.unavailable():
                    self._status_changed(before, p.status, error=str(exc))
            except TransportError as exc:
                if p.beat_missed(self._suspect_after, self._unhealthy_after):
                    self._status_changed(before, p.status, error=str(exc))
            except Refused as exc:
                self._diverged(exc.code, str(exc), None)
            else:
                was_diverged = before is Status.DIVERGED
                # Judge the answer's log before calling it healthy: one diverged at its first
                # answer is reported unhealthy -> diverged, not through an unannounced healthy.
                rewound = self._take(reply)
                came_back = p.beat_ok(self._clock())
                if came_back:
                    self._status_changed(before, p.status)
                if came_back or rewound or (was_diverged and p.status is not Status.DIVERGED):
                    self._resume()
                elif p.needs_epoch(self._epoch()):
                    self._wake.set()  # a node that has not taken our epoch is offered it at once
            await self._sleep(max(0.0, self._interval - (self._clock() - started)))

    def _resume(self) -> None:
        """Send again now: cut a backoff short and abandon requests stuck on a dead connection."""
        self._kick.set()
        self._wake.set()
        for task in self._inflight:
            task.cancel()

    def _status_changed(self, before: Status, after: Status, **kw: object) -> None:
        if before is after:
            return
        if not self._reached and after is Status.HEALTHY:
            # Its first answer: a secondary counts as unhealthy until then, which is no transition to report.
            self.logger.info("secondary_connected", seq=self.progress.match)
        else:
            # Out of the quorum is worth a warning; suspected (a beat or two missed) and back are not.
            report = self.logger.warning if after is Status.UNHEALTHY else self.logger.info
            report("secondary_status", before=str(before), after=str(after), **kw)
        self._reached = self._reached or after is Status.HEALTHY
        self._on_status(self.index, before, after)


async def supervise(replicator: Replicator) -> None:
    """Run a replicator; if a bug ever kills it, log and restart it rather than stall its secondary."""
    while True:
        try:
            await replicator.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            replicator.logger.exception("replicator_crashed")
            await asyncio.sleep(1.0)
