"""Component tests of the master's secondary slots against fake secondaries: one process is one node.

A process reached through two slots (one node under two URLs) answers both with its one incarnation; it
must count once toward w, the quorum and the promise majority. Under failover a member that moves to
another URL keeps its slot (Master.move_secondary): acks count from the new URL's answers only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fakes import FakeSecondary, eventually
from replog import errors
from replog.config import MasterConfig
from replog.datadir import open_log
from replog.master import Master
from replog.progress import Status
from replog.protocol import WriteRequest

BEAT = 0.02  # heartbeat interval (real time): an unreachable fake is unhealthy after five


def write(text: str, w: int, timeout: float | None = 5.0) -> WriteRequest:
    return WriteRequest((text,), False, w, None, timeout)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """Makes a recovered Master over the given fakes (one per URL) and runs its replicators."""
    tasks: list[asyncio.Task[Any]] = []

    async def start(urls: list[str], fakes: list[FakeSecondary], holder: list[Master], **config: Any) -> Master:
        cfg = MasterConfig(secondaries=tuple(urls), heartbeat_interval=BEAT, **config)
        master = Master(cfg, list(fakes), open_log(None), rand=lambda: 1.0)
        holder.append(master)
        await asyncio.wait_for(master.recover(), 5)
        tasks.extend(asyncio.create_task(r.run()) for r in master.replicators)
        return master

    start.tasks = tasks  # type: ignore[attr-defined]
    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_process_behind_two_urls_counts_once(started) -> None:
    holder: list[Master] = []
    one, two = FakeSecondary(lambda: holder[0].fence), FakeSecondary(lambda: holder[0].fence)
    # Four nodes by configuration, three processes: "two" is listed twice.
    master = await started(["fake://one", "fake://two", "fake://two-again"], [one, two, two], holder, new_cluster=True)
    await eventually(lambda: all(r.progress.status is Status.HEALTHY for r in master.replicators), what="healthy")

    result = await master.write(write("held-by-three", 3))
    assert result.body["acks"] == 3
    with pytest.raises(errors.WriteConcernTimeout) as caught:
        await master.write(write("w4", 4, timeout=0.3))
    assert caught.value.extra["acks"] == 3  # master, one, two -- never two's second slot
    assert master.available == 3 and master.writable

    one.down = True  # two of four processes left: no majority of four, whatever two's slots say
    await eventually(lambda: not master.writable, what="quorum lost with one process down")
    assert master.available == 2
    with pytest.raises(errors.NoQuorum):
        await master.write(write("no-quorum", 2))


async def test_a_moved_member_counts_from_its_new_url_only(started) -> None:
    holder: list[Master] = []
    one, two = FakeSecondary(lambda: holder[0].fence), FakeSecondary(lambda: holder[0].fence)
    master = await started(["fake://one", "fake://two"], [one, two], holder)
    await eventually(lambda: master.writable, what="writable")
    assert (await master.write(write("before", 3))).body["acks"] == 3

    # A write in flight to "two" when it moves to a URL where nothing answers yet; its old replicator is not
    # even stopped here, so that its late answer comes.
    two.plan("hang")
    pending = asyncio.create_task(master.write(write("in-flight", 3, timeout=1.0)))
    await eventually(lambda: two.hanging == 1, what="the write held at two")
    nowhere = FakeSecondary(lambda: holder[0].fence)
    nowhere.down = True
    old = master.move_secondary(2, "fake://two-moved", nowhere)
    assert old.url == "fake://two" and old not in master.replicators
    moved = master.replicators[1]
    assert (moved.index, moved.url, moved.progress.match) == (2, "fake://two-moved", 0)
    assert master.commitment.matches[2] == 0
    assert [s["url"] for s in master.health()["secondaries"]] == ["fake://one", "fake://two-moved"]
    started.tasks.append(asyncio.create_task(moved.run()))

    two.release()  # the old replicator's answer: "two" holds the write, which counts for nothing now
    await eventually(lambda: old.progress.match == 2, what="the old replicator's late answer")
    with pytest.raises(errors.WriteConcernTimeout) as caught:
        await pending
    assert caught.value.extra["acks"] == 2

    nowhere.down = False  # the new URL answers: its slot catches up from what it reports (nothing)
    result = await master.write(write("after", 3))
    assert result.body["acks"] == 3
    assert nowhere.texts() == ["before", "in-flight", "after"]


async def test_one_process_behind_two_urls_promises_once() -> None:
    holder: list[Master] = []
    one, two = FakeSecondary(lambda: holder[0].fence), FakeSecondary(lambda: holder[0].fence)
    cfg = MasterConfig(secondaries=("fake://one", "fake://two", "fake://two-again"), heartbeat_interval=BEAT)
    master = Master(cfg, [one, two, two], open_log(None), rand=lambda: 1.0)
    holder.append(master)
    # Four nodes, a master with no log of its own: three promises are needed, and only two processes answer.
    recovery = asyncio.create_task(master.recover())
    try:
        await eventually(lambda: two.promise_calls >= 6 or recovery.done(), what="a few promise rounds")
        assert master.recovering and not recovery.done()
        assert (one.node.promised, two.node.promised) == (1, 1)
    finally:
        recovery.cancel()
        await asyncio.gather(recovery, return_exceptions=True)
