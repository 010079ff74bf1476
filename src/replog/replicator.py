"""One replicator per secondary: a drain loop that sends pending entries in seq order, in
batches, one request in flight, and a heartbeat loop that tracks the secondary's health.

The heartbeat loop also resumes the drain loop the moment a secondary comes back (or is
seen to have restarted), cutting short any backoff and abandoning a request stuck on the
old connection.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Awaitable, Callable

import structlog

from replog.backoff import Backoff
from replog.client import Refused, Reply, Transport, TransportError
from replog.log import Log
from replog.progress import Progress, Status

Sleep = Callable[[float], Awaitable[None]]
EncodeBatch = Callable[[int, int], bytes]  # (first, last) -> request body


class Replicator:
    """Keeps one secondary's copy of the log complete and in order."""

    def __init__(
        self,
        index: int,
        url: str,
        log: Log,
        transport: Transport,
        *,
        encode: EncodeBatch,
        on_match: Callable[[int, int], None],
        on_status: Callable[[int, Status, Status], None],
        batch_max_count: int = 5000,
        batch_max_bytes: int = 4 << 20,
        backoff: Backoff = Backoff(),
        heartbeat_interval: float = 1.0,
        suspect_after: int = 2,
        unhealthy_after: int = 5,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        upto: Callable[[], int] | None = None,
    ) -> None:
        self.index = index  # this secondary's node index in the Commitment (the master is 0)
        self.url = url
        self.progress = Progress()
        self._log = log
        self._transport = transport
        self._encode = encode
        self._on_match = on_match  # tells the master how far this secondary holds the log
        self._on_status = on_status  # tells the master this secondary's status changed
        self._batch_max_count = batch_max_count
        self._batch_max_bytes = batch_max_bytes
        self._backoff = backoff
        self._interval = heartbeat_interval
        self._suspect_after = suspect_after
        self._unhealthy_after = unhealthy_after
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        # The last seq that may be sent: the master's durable end with a data dir, so that no
        # secondary ever holds an entry a crash of the master could take back.
        self._upto = upto if upto is not None else (lambda: log.last_seq)
        self._wake = asyncio.Event()  # one-slot trigger: there may be something to send
        self._kick = asyncio.Event()  # the secondary came back or restarted: stop waiting, resend
        self._inflight: asyncio.Task[Reply] | None = None
        self.log = structlog.get_logger().bind(secondary=url)

    # -- what the master calls -------------------------------------------------

    def notify(self) -> None:
        """New entries were appended; repeated calls collapse into one wake-up."""
        self._wake.set()

    async def run(self) -> None:
        """Run both loops until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._heartbeat_loop(), name=f"heartbeat {self.url}")
            tg.create_task(self._drain_loop(), name=f"drain {self.url}")

    # -- the drain loop -------------------------------------------------------

    def _ready(self) -> bool:
        p = self.progress
        return p.status not in (Status.UNHEALTHY, Status.DIVERGED) and p.next_seq <= self._upto()

    async def _drain_loop(self) -> None:
        p = self.progress
        while True:
            if not self._ready():
                await self._wake.wait()
                self._wake.clear()
                continue
            first = p.next_seq
            count = min(self._batch_max_count, self._upto() - first + 1)
            last = self._log.batch_end(first, count, self._batch_max_bytes)
            body = self._encode(first, last)
            self._kick.clear()
            p.sent(last)
            self.log.debug("batch_sent", first=first, last=last, bytes=len(body))
            task = asyncio.ensure_future(self._transport.replicate(body))
            self._inflight = task
            try:
                reply = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                # Kicked by the heartbeat loop: the secondary is back or restarted.
                p.next_seq = p.match + 1
                continue
            except Refused as exc:
                self._diverged(exc.code, str(exc))
                continue
            except TransportError as exc:
                p.failed()
                delay = self._backoff.delay(p.failures, self._rand)
                self.log.info("replicate_retry", first=first, failures=p.failures, delay=round(delay, 3), error=str(exc))
                await self._pause(delay)
                continue
            finally:
                self._inflight = None
            p.succeeded()
            p.last_contact = self._clock()
            self._take(reply)
            self.log.debug("batch_acked", first=first, last=last, seq=p.match)

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

    def _contradiction(self, reply: Reply) -> str | None:
        """Why the secondary's log cannot be ours, or None if it agrees as far as it goes."""
        if reply.seq > 0 and reply.log is not None and reply.log != self._log.log_id:
            return "log_mismatch"
        if 0 < reply.crc_seq <= self._log.last_seq and reply.crc != self._log.crc(reply.crc_seq):
            return "entry_conflict"
        return None

    def _take(self, reply: Reply) -> bool:
        """Learn the secondary's position from an answer; True if it rewound."""
        p = self.progress
        conflict = self._contradiction(reply)
        if p.status is Status.DIVERGED:
            if reply.boot == p.boot:
                return False  # the same process, still holding the log it contradicted us with
            if conflict is not None:
                p.boot = reply.boot  # a new process, but still a contradicting log: stay diverged, no flap
                return False
            # A new process: judge its log afresh.
            self._set_status(Status.HEALTHY)
            p.boot = None
            p.match = 0
        if conflict is not None:
            p.boot = reply.boot
            self._diverged(conflict, f"the secondary's log contradicts ours ({conflict}, its seq {reply.seq})")
            return False
        # Trust only the position whose checksum matched ours: min(its seq, the seq we asked
        # about). A secondary holding more than we do (we lost entries) is thus never counted
        # for entries it may hold differently; a contradiction surfaces as a conflict.
        rewound = p.report(reply.boot, reply.crc_seq)
        if rewound:
            self.log.info("secondary_rewound", seq=p.match)
        self._on_match(self.index, p.match)
        return rewound

    def _diverged(self, code: str, detail: str) -> None:
        p = self.progress
        if p.status is not Status.DIVERGED:
            self.log.error("secondary_diverged", code=code, detail=detail)
            self._set_status(Status.DIVERGED)
        p.match = 0
        p.next_seq = 1
        self._on_match(self.index, 0)

    # -- the heartbeat loop ---------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        p = self.progress
        while True:
            started = self._clock()
            try:
                reply = await self._transport.health(self._log.last_seq)
            except TransportError as exc:
                before = p.status
                if p.beat_missed(self._suspect_after, self._unhealthy_after):
                    self._status_changed(before, p.status, error=str(exc))
            else:
                before = p.status
                was_diverged = before is Status.DIVERGED
                # Judge the answer's log before calling it healthy: one diverged at its first
                # answer is reported unhealthy -> diverged, not through an unannounced healthy.
                rewound = self._take(reply)
                came_back = p.beat_ok(self._clock())
                if came_back:
                    self._status_changed(before, p.status)
                if came_back or rewound or (was_diverged and p.status is not Status.DIVERGED):
                    self._resume()
            await self._sleep(max(0.0, self._interval - (self._clock() - started)))

    def _resume(self) -> None:
        """Send again now: cut a backoff short and abandon a request stuck on a dead connection."""
        self._kick.set()
        self._wake.set()
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    def _set_status(self, status: Status) -> None:
        before = self.progress.status
        self.progress.status = status
        if before is not status:
            self._status_changed(before, status)

    def _status_changed(self, before: Status, after: Status, **kw: object) -> None:
        self.log.info("secondary_status", before=str(before), after=str(after), **kw)
        self._on_status(self.index, before, after)
