"""HTTP tests of the long-poll GET /messages?since=N&wait=S on the master and on a secondary.

A waiting read answers as soon as the node's visible end grows past since (the master: an append; a
secondary: its gap-free prefix, never an entry held behind a gap), answers an empty list after S
seconds, carries last_seq in every answer, and leaves no waiter behind when its client goes away.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from replog.log import Log

LOG = "0123456789abcdef0123456789abcdef"
FAST = 1.0  # seconds within which a woken long-poll must have answered (it takes milliseconds)


def replication(log: Log, seqs: list[int]) -> dict[str, Any]:
    """A master's replication body carrying these seqs of log."""
    first = min(seqs)
    entries = [log.wire(s, s)[0] for s in seqs]
    return {"log": LOG, "prev": [first - 1, log.hash(first - 1).hex()], "entries": entries}


def master_log(n: int) -> Log:
    log = Log(LOG)
    for i in range(1, n + 1):
        log.append(f"m{i}")
    return log


async def waiting_reads(api: Any, n: int, wait_for: Any) -> None:
    async def reached() -> bool:
        return (await api.health())["waiting_reads"] == n

    await wait_for(reached, f"{n} waiting reads")


@pytest.fixture
async def solo(make_cluster):
    """A master without secondaries: every write is visible once appended."""
    return await make_cluster(secondaries=0)


async def test_every_answer_carries_last_seq(solo):
    (await solo.master.post({"messages": ["a", "b", "c"], "w": 1})).ok(201)
    assert (await solo.master.get("/messages?limit=1")).ok() == {
        "messages": [{"seq": 1, "id": (await solo.master.messages())[0]["id"], "text": "a"}],
        "last_seq": 3,
    }
    assert (await solo.master.get("/messages?since=3")).ok() == {"messages": [], "last_seq": 3}
    assert (await solo.master.get("/messages?since=9")).ok()["last_seq"] == 3


async def test_a_long_poll_answers_at_once_when_entries_are_past_since(solo):
    (await solo.master.post({"message": "a", "w": 1})).ok(201)
    started = time.monotonic()
    body = (await solo.master.get("/messages?since=0&wait=30")).ok()
    assert [m["text"] for m in body["messages"]] == ["a"] and body["last_seq"] == 1
    assert time.monotonic() - started < FAST


async def test_a_long_poll_is_woken_by_an_append(solo):
    (await solo.master.post({"message": "before", "w": 1})).ok(201)
    poll = asyncio.create_task(solo.master.get("/messages?since=1&wait=30"))
    await waiting_reads(solo.master, 1, solo.wait_for)
    assert not poll.done()
    (await solo.master.post({"message": "after", "w": 1})).ok(201)
    appended = time.monotonic()
    body = (await asyncio.wait_for(poll, 10)).ok()
    assert time.monotonic() - appended < FAST
    assert [(m["seq"], m["text"]) for m in body["messages"]] == [(2, "after")]
    assert body["last_seq"] == 2
    assert (await solo.master.health())["waiting_reads"] == 0


async def test_a_long_poll_answers_an_empty_list_after_wait(solo):
    (await solo.master.post({"message": "a", "w": 1})).ok(201)
    started = time.monotonic()
    body = (await solo.master.get("/messages?since=1&wait=0.3")).ok()
    took = time.monotonic() - started
    assert body == {"messages": [], "last_seq": 1}
    assert 0.3 <= took < 0.3 + FAST, took
    assert (await solo.master.health())["waiting_reads"] == 0


async def test_a_client_that_goes_away_leaves_no_waiter_behind(solo):
    polls = [asyncio.create_task(solo.master.get(f"/messages?since={i}&wait=30")) for i in range(5)]
    await waiting_reads(solo.master, 5, solo.wait_for)
    for poll in polls:
        poll.cancel()  # the client closes its connection; the handler is cancelled
    await asyncio.gather(*polls, return_exceptions=True)
    await waiting_reads(solo.master, 0, solo.wait_for)


async def test_a_long_poll_on_a_secondary_is_woken_by_replication(cluster):
    s1 = cluster.secondaries[0].api
    poll = asyncio.create_task(s1.get("/messages?since=0&wait=30"))
    await waiting_reads(s1, 1, cluster.wait_for)
    (await cluster.master.post({"message": "x", "w": 3})).ok(201)
    body = (await asyncio.wait_for(poll, 10)).ok()
    assert [m["text"] for m in body["messages"]] == ["x"] and body["last_seq"] == 1


async def test_a_secondary_long_poll_is_woken_only_when_the_gap_free_prefix_grows(secondary):
    node = await secondary()
    log = master_log(3)
    (await node.replicate(replication(log, [1]))).ok()
    poll = asyncio.create_task(node.get("/messages?since=1&wait=30"))
    await waiting_reads(node, 1, _wait_for)

    (await node.replicate(replication(log, [3]))).ok()  # held behind the gap at 2
    h = await node.health()
    assert (h["seq"], h["buffered"], h["waiting_reads"]) == (1, 1, 1)
    assert (await node.get("/messages?since=1")).ok() == {"messages": [], "last_seq": 1}
    assert not poll.done()

    (await node.replicate(replication(log, [2]))).ok()  # the gap fills: 2 and 3 become visible at once
    body = (await asyncio.wait_for(poll, 10)).ok()
    assert [(m["seq"], m["text"]) for m in body["messages"]] == [(2, "m2"), (3, "m3")]
    assert body["last_seq"] == 3


async def test_a_secondary_long_poll_with_a_data_dir_is_woken_once_the_entries_are_synced(secondary, tmp_path):
    node = await secondary(data_dir=str(tmp_path / "s"))
    log = master_log(2)
    poll = asyncio.create_task(node.get("/messages?since=0&wait=30"))
    await waiting_reads(node, 1, _wait_for)
    (await node.replicate(replication(log, [1, 2]))).ok()
    body = (await asyncio.wait_for(poll, 10)).ok()
    assert body["last_seq"] == 2 and [m["seq"] for m in body["messages"]][-1] == 2


@pytest.mark.parametrize("wait", ["0", "-1", "60.5", "61", "abc", "nan", "inf", "", "1e9", "0x10"])
async def test_a_bad_wait_is_400(solo, wait):
    solo_reply = await solo.master.get(f"/messages?wait={wait}")
    solo_reply.error(400, "invalid_wait")


@pytest.mark.parametrize("wait", ["60", "0.001", "1e1"])
async def test_a_wait_within_bounds_is_accepted(solo, wait):
    (await solo.master.post({"message": "a", "w": 1})).ok(201)
    assert (await solo.master.get(f"/messages?since=0&wait={wait}")).ok()["last_seq"] == 1


async def _wait_for(cond: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(0.01)
