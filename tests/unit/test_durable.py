"""Unit tests for replog.durable.GroupCommit over a real DiskLog: group commit, shutdown, disk failure.

The doubles below subclass DiskLog to block or fail the *disk* (a thread stuck in a write, an fsync
that reports EIO); GroupCommit itself always runs for real.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from replog.durable import DiskFailed, GroupCommit
from replog.storage import DiskLog, Meta, Record

DEADLINE = 10.0  # seconds any condition below may take before the test fails
NOT_YET = 0.3  # how long a task must stay unfinished to show it waits (it ends at once when it does not)


def rec(i: int, text: str | None = None) -> Record:
    return Record(None, f"message {i}" if text is None else text, 0, i.to_bytes(16, "little"))


def recs(first: int, last: int) -> list[Record]:
    return [rec(i) for i in range(first, last + 1)]


def reload(path: Path) -> list[Record]:
    disk = DiskLog(path, fsync=False)
    try:
        return disk.load().entries
    finally:
        disk.close()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[GroupCommit]:
    """A GroupCommit with its writer running on a real, fsynced DiskLog; closed afterwards."""
    disk = DiskLog(tmp_path, fsync=True)
    disk.load()
    commit = GroupCommit(disk)
    task = asyncio.create_task(commit.run())
    yield commit
    await commit.close()
    assert task.done()


async def test_concurrent_writes_share_fsyncs_and_land_in_order(tmp_path: Path) -> None:
    disk = DiskLog(tmp_path, fsync=True)
    disk.load()
    synced: list[int] = []
    commit = GroupCommit(disk, synced.append)
    task = asyncio.create_task(commit.run())
    lasts = [commit.submit(i, [rec(i)]) for i in range(1, 51)]
    await asyncio.wait_for(asyncio.gather(*(commit.wait_durable(s) for s in lasts)), DEADLINE)
    assert commit.durable == commit.queued == 50
    assert 1 <= commit.syncs < 50  # writes that arrived during an fsync shared the next one
    assert synced == sorted(synced) and synced[-1] == 50
    await commit.close()
    assert task.done()
    assert reload(tmp_path) == recs(1, 50)


async def test_submit_must_follow_what_was_queued(running: GroupCommit) -> None:
    running.submit(1, recs(1, 2))
    for wrong in (1, 2, 4):
        with pytest.raises(ValueError):
            running.submit(wrong, [rec(wrong)])


# -- shutdown (issue 8, defect 10) ----------------------------------------------------


class BlockingDisk(DiskLog):
    """A disk whose chosen operations hang in the worker thread until released."""

    def __init__(self, path: Path, block: str) -> None:
        super().__init__(path, fsync=False)
        self.block = block  # "append", "save_meta" or "truncate"
        self.entered = threading.Event()  # the blocked operation has started
        self.release = threading.Event()
        self.returned = False  # the blocked operation has finished
        self.closed_after_return: list[bool] = []  # one entry per close(): had the operation finished?

    def _maybe_block(self, name: str) -> None:
        if name == self.block and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(DEADLINE)

    def append(self, first_seq: int, records: Sequence[Record], *, atomic: bool = False) -> None:
        self._maybe_block("append")
        super().append(first_seq, records, atomic=atomic)
        self.returned = self.returned or self.block == "append"

    def save_meta(self, meta: Meta) -> None:
        self._maybe_block("save_meta")
        super().save_meta(meta)
        self.returned = self.returned or self.block == "save_meta"

    def truncate(self, last_seq: int) -> None:
        self._maybe_block("truncate")
        super().truncate(last_seq)
        self.returned = self.returned or self.block == "truncate"

    def close(self) -> None:
        self.closed_after_return.append(self.returned)
        super().close()


async def test_a_cancelled_writer_ends_only_after_its_thread(tmp_path: Path) -> None:
    """The owner cancels run() and then closes the file: no worker thread may still be writing it."""
    disk = BlockingDisk(tmp_path, "append")
    disk.load()
    commit = GroupCommit(disk)
    task = asyncio.create_task(commit.run())
    first = commit.submit(1, recs(1, 2))
    assert await asyncio.to_thread(disk.entered.wait, DEADLINE)
    second = asyncio.ensure_future(commit.wait_durable(commit.submit(3, [rec(3)])))  # queued behind the write

    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=NOT_YET)
    assert not done, "run() ended while its worker thread was still writing"
    task.cancel()  # a second cancel must not cut the wait short either
    done, _ = await asyncio.wait({task}, timeout=NOT_YET)
    assert not done

    disk.release.set()
    done, _ = await asyncio.wait({task}, timeout=DEADLINE)
    assert done and task.cancelled()
    assert disk.returned
    assert commit.durable == first  # what the thread synced still counts
    await commit.wait_durable(first)
    with pytest.raises(DiskFailed):
        await asyncio.wait_for(second, DEADLINE)  # never written: its waiter is told, not left hanging
    with pytest.raises(DiskFailed):
        commit.submit(4, [rec(4)])
    disk.close()
    assert disk.closed_after_return == [True]
    assert reload(tmp_path) == recs(1, 2)


@pytest.mark.parametrize("block", ["append", "save_meta", "truncate"])
async def test_close_waits_for_the_worker_thread(tmp_path: Path, block: str) -> None:
    disk = BlockingDisk(tmp_path, block)
    disk.load()
    commit = GroupCommit(disk)
    task = asyncio.create_task(commit.run())
    if block == "truncate":
        await commit.wait_durable(commit.submit(1, recs(1, 3)))
        operation = asyncio.ensure_future(commit.truncate(1))
    elif block == "save_meta":
        operation = asyncio.ensure_future(commit.save_meta(Meta(log_id="x")))
    else:
        operation = asyncio.ensure_future(commit.wait_durable(commit.submit(1, recs(1, 3))))
    assert await asyncio.to_thread(disk.entered.wait, DEADLINE)

    operation.cancel()  # its caller going away must not let close() in early either
    closing = asyncio.ensure_future(commit.close())
    done, _ = await asyncio.wait({closing}, timeout=NOT_YET)
    assert not done and disk.closed_after_return == []

    disk.release.set()
    await asyncio.wait_for(closing, DEADLINE)
    assert disk.closed_after_return == [True]
    assert task.done()
    await asyncio.wait({operation}, timeout=DEADLINE)
    assert operation.done()


# -- disk failure (issue 8, defect 4) ---------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs, so that writes fail with ENOSPC as on a full disk."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
            check=False,
            capture_output=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("no mount command to make a tiny tmpfs")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount_point / uuid.uuid4().hex
    finally:
        # Lazy: a failed test may have left a file open on it; the mount must not outlive the test anyway.
        subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=30)


async def test_a_full_disk_fails_the_waiters_and_says_so(tiny_fs: Path) -> None:
    disk = DiskLog(tiny_fs, fsync=True)
    disk.load()
    failures: list[BaseException] = []
    commit = GroupCommit(disk, on_failed=failures.append)
    task = asyncio.create_task(commit.run())
    seq = 0
    with pytest.raises(DiskFailed):
        for _ in range(100):  # 800 KB: far more than fits
            seq = commit.submit(seq + 1, [rec(seq + 1, "x" * 8000)])
            await asyncio.wait_for(commit.wait_durable(seq), DEADLINE)
    assert isinstance(commit.failed, OSError) and commit.failed.errno == errno.ENOSPC
    assert failures == [commit.failed]  # the node is told once, to turn read-only
    assert commit.durable == seq - 1 > 0  # the write that failed is not durable
    with pytest.raises(DiskFailed):
        await commit.wait_durable(seq)
    with pytest.raises(DiskFailed):
        commit.submit(seq + 1, [rec(seq + 1)])
    with pytest.raises(DiskFailed):
        await commit.save_meta(Meta(log_id="x"))
    await asyncio.wait_for(task, DEADLINE)  # run() ends on its own, having said why
    await commit.close()
    assert len(reload(tiny_fs)) == commit.durable


class FailingSync(DiskLog):
    """A disk whose fsync reports EIO once ``broken`` is set: the records were written, not made durable."""

    broken = False

    def sync(self) -> None:
        if self.broken:
            raise OSError(errno.EIO, "Input/output error")
        super().sync()


async def test_a_failed_fsync_never_counts_as_durable(tmp_path: Path) -> None:
    disk = FailingSync(tmp_path, fsync=False)
    disk.load()
    failures: list[BaseException] = []
    synced: list[int] = []
    commit = GroupCommit(disk, synced.append, on_failed=failures.append)
    task = asyncio.create_task(commit.run())
    await asyncio.wait_for(commit.wait_durable(commit.submit(1, recs(1, 2))), DEADLINE)
    disk.broken = True
    waiters = [asyncio.ensure_future(commit.wait_durable(commit.submit(s, [rec(s)]))) for s in range(3, 7)]
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), DEADLINE)
    assert all(isinstance(r, DiskFailed) for r in results), results
    assert commit.durable == 2 and synced == [2]
    assert disk.last_seq > 2  # appended, but the fsync failed: not durable
    assert failures == [commit.failed] and commit.failed.errno == errno.EIO  # type: ignore[union-attr]
    with pytest.raises(DiskFailed):
        await commit.truncate(1)
    await asyncio.wait_for(task, DEADLINE)
    await commit.close()


# -- truncate and meta ----------------------------------------------------------------


async def test_truncate_waits_for_pending_writes_then_keeps_a_rollback(running: GroupCommit, tmp_path: Path) -> None:
    running.submit(1, recs(1, 3))
    running.submit(4, recs(4, 5))  # not durable yet: truncate waits for them
    path = await asyncio.wait_for(running.truncate(2, rollback=(7, 3, recs(3, 5))), DEADLINE)
    assert path is not None and os.path.basename(path).startswith("7-")
    assert [json.loads(line)["text"] for line in Path(path).read_text().splitlines()] == [r.text for r in recs(3, 5)]
    assert running.durable == running.queued == 2
    await asyncio.wait_for(running.wait_durable(running.submit(3, [rec(30)])), DEADLINE)
    assert reload(tmp_path) == [*recs(1, 2), rec(30)]
    assert await running.truncate(3) is None


async def test_truncate_checks_its_arguments(running: GroupCommit) -> None:
    await asyncio.wait_for(running.wait_durable(running.submit(1, recs(1, 3))), DEADLINE)
    wrong_first = (1, 3, recs(3, 3))  # the rollback must start right after last_seq
    wrong_count = (1, 2, recs(2, 2))  # and hold every dropped record
    for last, rollback in [(4, None), (-1, None), (1, wrong_first), (1, wrong_count)]:
        with pytest.raises(ValueError):
            await running.truncate(last, rollback)
    assert running.durable == 3


async def test_meta_saves_are_serialised_in_call_order(running: GroupCommit, tmp_path: Path) -> None:
    metas = [Meta(log_id="x", promised=e, promised_to=f"m-{e}", log_epoch=e - 1) for e in range(1, 21)]
    await asyncio.wait_for(asyncio.gather(*(running.save_meta(m) for m in metas)), DEADLINE)
    assert DiskLog(tmp_path, fsync=False).load().meta == metas[-1]
    assert not list(tmp_path.glob("*.tmp"))
