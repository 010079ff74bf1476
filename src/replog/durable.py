"""Group commit: records are written to the DiskLog and fsynced by one writer, in a worker
thread, so that every write that arrives while an fsync runs shares the next one.

Every disk operation (a write and its fsync, a truncate, a meta save) runs in a worker thread
while holding one lock, so that they never overlap.  A coroutine that is cancelled while its
thread runs still waits for that thread before the cancellation goes through: once run() (or
close()) has ended, no thread touches the file any more and it may be closed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from replog.storage import DiskLog, Meta, Record


class DiskFailed(Exception):
    """Writing or syncing the log failed, or its writer stopped: what was not yet synced will not be."""


class GroupCommit:
    """Durable appends: submit() queues records in order; wait_durable(seq) returns once they are on disk.

    ``durable`` never moves past what was fsynced.  A write or fsync error (``OSError``) is
    final: ``failed`` holds it, every waiter gets DiskFailed, ``on_failed(exc)`` is called once
    (the node turns read-only), and later submit(), wait_durable() of an unsynced seq,
    truncate() and save_meta() raise DiskFailed.

    Shutdown: ``await close()``.  It cancels run(), waits until no worker thread uses the disk
    (a write, truncate or meta save in flight finishes first) and closes the disk.
    """

    def __init__(
        self,
        disk: DiskLog,
        on_durable: Callable[[int], None] | None = None,
        *,
        on_failed: Callable[[BaseException], None] | None = None,
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        """Write to ``disk``, already loaded. on_durable(seq) is called after each fsync with the new durable seq,
        on_sync(seconds) with the time that write and fsync took (for the node's metrics)."""
        self.disk = disk
        self.durable = disk.last_seq  # highest seq known to be written and synced
        self.syncs = 0  # fsyncs done, for /health and the bench
        self.failed: BaseException | None = None  # the error that ended writing, for good
        self._queued = disk.last_seq  # highest seq submitted
        self._pending: list[tuple[int, Sequence[Record]]] = []  # (first seq, records) not yet written
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (seq, order, future)
        self._order = itertools.count()
        self._wake = asyncio.Event()  # something was submitted
        self._io = asyncio.Lock()  # held while a worker thread uses the disk
        self._on_durable = on_durable
        self._on_failed = on_failed
        self._on_sync = on_sync
        self._sync_seconds = 0.0  # how long the last write + fsync took, measured in its worker thread
        self._task: asyncio.Task[Any] | None = None  # the task running run(), for close()
        self._stopped = False  # run() ended or close() began: nothing more will be written
        self._truncating = False
        self._logger = structlog.get_logger().bind(path=disk.path)

    @property
    def queued(self) -> int:
        """The highest seq submitted (durable or not)."""
        return self._queued

    def submit(self, first: int, records: Sequence[Record]) -> int:
        """Queue records for seqs first.. (must follow what was queued before); return the last seq."""
        self._check_usable()
        if self._truncating:
            raise RuntimeError("submit during truncate()")
        if first != self._queued + 1:
            raise ValueError(f"submit of seq {first} after {self._queued}")
        if records:
            self._pending.append((first, records))
            self._queued = first + len(records) - 1
            self._wake.set()
        return self._queued

    async def wait_durable(self, seq: int) -> None:
        """Return once seq is durable; DiskFailed if it never will be (disk failure, writer stopped)."""
        if seq <= self.durable:
            return
        self._check_usable()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), fut))
        await fut

    async def run(self) -> None:
        """The writer: until cancelled or the disk fails, write and sync whatever is pending, many appends at a time.

        Returns after a disk failure (having logged it and called on_failed).  Cancelled while a
        worker thread writes, it waits for the thread, counts what it synced, then ends.
        """
        if self._task is not None:
            raise RuntimeError("GroupCommit.run() runs once")
        self._task = asyncio.current_task()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                async with self._io:
                    if not self._pending:
                        continue
                    chunks, self._pending = self._pending, []
                    work, cancelled = await _in_thread(self._write, chunks)
                exc = work.exception()
                if exc is None:
                    self._synced(chunks[-1][0] + len(chunks[-1][1]) - 1)
                else:
                    self._fail(exc)
                    if not isinstance(exc, OSError):
                        raise exc  # a bug, not the disk: the task shows it
                if cancelled:
                    raise asyncio.CancelledError
                if exc is not None:
                    return
        finally:
            self._stop()

    async def truncate(self, last_seq: int, rollback: tuple[int, int, Sequence[Record]] | None = None) -> str | None:
        """Drop every record after last_seq, durably, and return the rollback file's path (None without one).

        Waits until everything submitted is durable first.  ``rollback`` = (epoch, first_seq,
        records): the dropped records, seqs last_seq+1..durable, kept in a rollback file
        (DiskLog.write_rollback) before they go.  Afterwards durable and queued are last_seq;
        on_durable is not called.  Do not submit() until it returns.
        """
        while True:
            await self.wait_durable(self._queued)
            async with self._io:
                if self._pending or self.durable != self._queued:
                    continue  # submitted meanwhile: wait for that too
                self._check_usable()
                _check_truncate(last_seq, rollback, self.durable)
                self._truncating = True
                try:
                    work, cancelled = await _in_thread(self._truncate, last_seq, rollback)
                finally:
                    self._truncating = False
            path = self._result(work)
            self.durable = self._queued = last_seq
            if cancelled:
                raise asyncio.CancelledError
            return path

    async def save_meta(self, meta: Meta) -> None:
        """Durably replace the meta (DiskLog.save_meta), never at the same time as another disk operation."""
        self._check_usable()
        async with self._io:
            self._check_usable()
            work, cancelled = await _in_thread(self.disk.save_meta, meta)
        self._result(work)
        if cancelled:
            raise asyncio.CancelledError

    async def close(self) -> None:
        """Stop: cancel run(), wait until no worker thread uses the disk, close the disk.  Idempotent.

        Records submitted but not yet written are dropped; their waiters get DiskFailed.  Cancelling
        close() does not cut the wait for a worker thread short.
        """
        self._stopped = True
        cancelled = False
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            cancelled = await _wait_out(task)
        lock = asyncio.ensure_future(self._io.acquire())
        cancelled = await _wait_out(lock) or cancelled
        try:
            self._fail_waiters("the log writer stopped before this was synced")
            self.disk.close()
        finally:
            self._io.release()
        if cancelled:
            raise asyncio.CancelledError

    # ------------------------------------------------------------------ helpers

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise DiskFailed(str(self.failed) or repr(self.failed))
        if self._stopped:
            raise DiskFailed("the log writer has stopped")

    def _write(self, chunks: list[tuple[int, Sequence[Record]]]) -> None:
        """In a worker thread: append every chunk whole-or-nothing, then one fsync for all."""
        started = time.perf_counter()
        for first, records in chunks:
            self.disk.append(first, records, atomic=True)  # a torn batch is dropped whole at load
        self.disk.sync()
        self._sync_seconds = time.perf_counter() - started

    def _truncate(self, last_seq: int, rollback: tuple[int, int, Sequence[Record]] | None) -> str | None:
        """In a worker thread: keep the rollback file, then cut the log."""
        path = None if rollback is None else self.disk.write_rollback(*rollback)
        self.disk.truncate(last_seq)
        return path

    def _result(self, work: asyncio.Future[Any]) -> Any:
        """The thread's result; an OSError fails this GroupCommit and is raised as DiskFailed."""
        exc = work.exception()
        if isinstance(exc, OSError):
            self._fail(exc)
            raise DiskFailed(str(exc)) from exc
        return work.result()

    def _synced(self, seq: int) -> None:
        self.syncs += 1
        if self._on_sync is not None:
            self._on_sync(self._sync_seconds)
        self.durable = seq
        while self._waiters and self._waiters[0][0] <= seq:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(None)
        if self._on_durable is not None:
            self._on_durable(seq)

    def _fail(self, exc: BaseException) -> None:
        """Writing is over for good: say so loudly, fail every waiter, tell the node."""
        if self.failed is not None:
            return
        self.failed = exc
        self._logger.critical(
            "disk_write_failed",
            error=str(exc) or repr(exc),
            durable=self.durable,
            exc_info=not isinstance(exc, OSError),
        )
        self._fail_waiters(str(exc) or repr(exc))
        if self._on_failed is not None:
            self._on_failed(exc)

    def _stop(self) -> None:
        self._stopped = True
        self._fail_waiters("the log writer stopped before this was synced")

    def _fail_waiters(self, reason: str) -> None:
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_exception(DiskFailed(reason))


def _check_truncate(last_seq: int, rollback: tuple[int, int, Sequence[Record]] | None, durable: int) -> None:
    if not 0 <= last_seq <= durable:
        raise ValueError(f"truncate to seq {last_seq}, log holds 1..{durable}")
    if rollback is not None:
        _, first, records = rollback
        if first != last_seq + 1 or len(records) != durable - last_seq:
            raise ValueError(
                f"rollback of seqs {first}..{first + len(records) - 1} when truncating {last_seq + 1}..{durable}"
            )


async def _in_thread(fn: Callable[..., Any], *args: Any) -> tuple[asyncio.Future[Any], bool]:
    """Run fn(*args) in a worker thread and wait for it to finish, even through cancellation.

    Returns the finished future and whether the caller was cancelled meanwhile (it must then
    raise CancelledError once it has dealt with the result).
    """
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    cancelled = await _wait_out(work)
    return work, cancelled


async def _wait_out(fut: asyncio.Future[Any]) -> bool:
    """Wait until fut is done, whatever cancellations arrive meanwhile; return whether any arrived."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
