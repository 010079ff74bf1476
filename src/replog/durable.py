"""Group commit: entries are written to the DiskLog and fsynced by one writer, in a worker
thread, so that every write that arrives while an fsync runs shares the next one.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Callable, Sequence

import structlog

from replog.log import Item
from replog.storage import DiskLog


class DiskFailed(Exception):
    """Writing or syncing the log failed; the node can no longer promise durability."""


class GroupCommit:
    """Durable appends: submit() queues entries in order; wait_durable(seq) returns once they are on disk."""

    def __init__(self, disk: DiskLog, on_durable: Callable[[int], None] | None = None) -> None:
        self.disk = disk
        self.durable = disk.last_seq  # highest seq known to be written and synced
        self.syncs = 0  # fsyncs done, for /health and the bench
        self._queued = disk.last_seq  # highest seq submitted
        self._pending: list[tuple[int, Sequence[Item]]] = []  # (first seq, items) not yet written
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (seq, order, future)
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._on_durable = on_durable
        self.failed: BaseException | None = None
        self.log = structlog.get_logger()

    def submit(self, first: int, items: Sequence[Item]) -> int:
        """Queue items for seqs first.. (must follow what was queued before); return the last seq."""
        if self.failed is not None:
            raise DiskFailed(str(self.failed))
        if first != self._queued + 1:
            raise ValueError(f"submit of seq {first} after {self._queued}")
        self._pending.append((first, items))
        self._queued = first + len(items) - 1
        self._wake.set()
        return self._queued

    async def wait_durable(self, seq: int) -> None:
        if seq <= self.durable:
            return
        if self.failed is not None:
            raise DiskFailed(str(self.failed))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), fut))
        await fut

    async def run(self) -> None:
        """The writer: until cancelled, write and sync whatever is pending, many appends at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            chunks, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, chunks)
            except OSError as exc:
                self.failed = exc
                self.log.critical("disk_write_failed", error=str(exc), path=self.disk.path)
                while self._waiters:
                    fut = heapq.heappop(self._waiters)[2]
                    if not fut.done():
                        fut.set_exception(DiskFailed(str(exc)))
                return
            self.syncs += 1
            self.durable = chunks[-1][0] + len(chunks[-1][1]) - 1
            while self._waiters and self._waiters[0][0] <= self.durable:
                fut = heapq.heappop(self._waiters)[2]
                if not fut.done():
                    fut.set_result(None)
            if self._on_durable is not None:
                self._on_durable(self.durable)

    def _write(self, chunks: list[tuple[int, Sequence[Item]]]) -> None:
        for first, items in chunks:
            self.disk.append(first, items, atomic=True)  # a torn batch is dropped whole at load
        self.disk.sync()
