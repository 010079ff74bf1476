"""HTTP tests of the secondary's API: POST /replicate, GET /messages, GET /health, and its errors."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

LOG = "0123456789abcdef0123456789abcdef"
OTHER_LOG = "fedcba9876543210fedcba9876543210"


def e(seq: int, id_: str | None = None, text: str | None = None) -> list[Any]:
    """A wire entry [seq, id, text] as the master sends it (text m<seq> unless given)."""
    return [seq, id_, f"m{seq}" if text is None else text]


def body(entries: Any, log: Any = LOG) -> bytes:
    return json.dumps({"log": log, "entries": entries}).encode()


def seqs(msgs: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in msgs]


async def test_fresh_secondary_is_empty(secondary):
    node = await secondary()
    h = await node.health()
    assert h["role"] == "secondary"
    assert h["seq"] == 0
    assert isinstance(h["boot"], str) and h["boot"]
    assert await node.messages() == []


async def test_replicate_answers_gap_free_seq_boot_and_log(secondary):
    node = await secondary()
    boot = (await node.health())["boot"]
    answer = (await node.replicate([e(1), e(2, "client-id")], LOG)).ok()
    from replog.log import chain

    assert answer == {"seq": 2, "boot": boot, "log": LOG, "crc_seq": 2, "crc": chain(chain(0, None, "m1"), "client-id", "m2")}
    assert await node.messages() == [
        {"seq": 1, "id": f"{LOG[:8]}-1", "text": "m1"},
        {"seq": 2, "id": "client-id", "text": "m2"},
    ]
    h = await node.health()
    assert (h["seq"], h["boot"], h["log"]) == (2, boot, LOG)


async def test_shows_only_the_gap_free_prefix_until_the_gap_fills(secondary):
    node = await secondary()
    assert (await node.replicate([e(1), e(2), e(4)], LOG)).ok()["seq"] == 2
    assert seqs(await node.messages()) == [1, 2]
    assert (await node.health())["seq"] == 2

    assert (await node.replicate([e(3)], LOG)).ok()["seq"] == 4
    assert seqs(await node.messages()) == [1, 2, 3, 4]
    assert (await node.health())["seq"] == 4


async def test_entries_in_reverse_order_are_accepted(secondary):
    node = await secondary()
    assert (await node.replicate([e(3), e(2), e(1)], LOG)).ok()["seq"] == 3
    assert [m["text"] for m in await node.messages()] == ["m1", "m2", "m3"]


async def test_duplicates_are_ignored(secondary):
    node = await secondary()
    assert (await node.replicate([e(1), e(2)], LOG)).ok()["seq"] == 2
    assert (await node.replicate([e(1), e(2), e(2), e(1)], LOG)).ok()["seq"] == 2
    assert (await node.replicate([e(2), e(3), e(3)], LOG)).ok()["seq"] == 3
    assert [m["text"] for m in await node.messages()] == ["m1", "m2", "m3"]


async def test_an_empty_batch_answers_the_position(secondary):
    node = await secondary()
    assert (await node.replicate([], LOG)).ok()["seq"] == 0


async def test_another_log_after_holding_entries_is_log_mismatch(secondary):
    node = await secondary()
    (await node.replicate([e(1), e(2)], LOG)).ok()
    before = await node.messages()

    (await node.replicate([e(3)], OTHER_LOG)).error(409, "log_mismatch")
    assert await node.messages() == before
    h = await node.health()
    assert (h["seq"], h["log"]) == (2, LOG)


async def test_a_different_entry_at_a_held_seq_is_entry_conflict(secondary):
    node = await secondary()
    (await node.replicate([e(1), e(2)], LOG)).ok()
    before = await node.messages()

    (await node.replicate([e(2, text="not m2")], LOG)).error(409, "entry_conflict")
    (await node.replicate([e(2, id_="another-id")], LOG)).error(409, "entry_conflict")
    # A conflicting batch is refused whole: its new entries are not stored either.
    (await node.replicate([e(3), e(1, text="not m1")], LOG)).error(409, "entry_conflict")
    assert await node.messages() == before
    assert (await node.health())["seq"] == 2


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty body"),
        pytest.param(b"{not json", id="not JSON"),
        pytest.param(b'{"log": "L", "entries": [[1, null, "\xff"]]}', id="invalid UTF-8"),
        pytest.param(b"[]", id="not an object"),
        pytest.param(json.dumps({"entries": [e(1)]}).encode(), id="log missing"),
        pytest.param(body([e(1)], log=""), id="log empty"),
        pytest.param(body([e(1)], log=5), id="log not a string"),
        pytest.param(json.dumps({"log": LOG}).encode(), id="entries missing"),
        pytest.param(body({"1": "m1"}), id="entries not a list"),
        pytest.param(body([e(0)]), id="seq 0"),
        pytest.param(body([e(-1)]), id="seq negative"),
        pytest.param(body([["1", None, "m1"]]), id="seq a string"),
        pytest.param(body([[1.0, None, "m1"]]), id="seq a float"),
        pytest.param(body([[True, None, "m1"]]), id="seq true"),
        pytest.param(body([[1, None]]), id="entry of two"),
        pytest.param(body([[1, None, "m1", "x"]]), id="entry of four"),
        pytest.param(body([{"seq": 1}]), id="entry an object"),
        pytest.param(body([[1, None, 5]]), id="text not a string"),
        pytest.param(body([[1, None, None]]), id="text null"),
        pytest.param(body([[1, "", "m1"]]), id="id empty"),
        pytest.param(body([[1, 7, "m1"]]), id="id not a string"),
        pytest.param(body([e(2), e(0)]), id="one bad entry of two"),
        pytest.param(body([e(10**9)]), id="seq far out of window"),
    ],
)
async def test_malformed_batches_are_400_and_change_nothing(secondary, data):
    node = await secondary()
    (await node.replicate([e(1)], LOG)).ok()
    before = await node.health()

    (await node.replicate(None, data=data)).error(400)
    assert seqs(await node.messages()) == [1]
    after = await node.health()
    assert (after["seq"], after["log"], after["boot"]) == (before["seq"], before["log"], before["boot"])
    # It still takes good batches.
    assert (await node.replicate([e(2)], LOG)).ok()["seq"] == 2


async def test_a_body_over_max_body_bytes_is_413(secondary):
    node = await secondary(max_body_bytes=1024)
    (await node.replicate([e(1, text="x" * 2000)], LOG)).error(413)
    assert await node.messages() == []
    assert (await node.replicate([e(1)], LOG)).ok()["seq"] == 1


async def test_fail_rate_answers_500_but_stores_the_entries(secondary):
    node = await secondary(fail_rate=0.999999, seed=1)
    (await node.replicate([e(1), e(2)], LOG)).error(500)
    assert seqs(await node.messages()) == [1, 2]
    assert (await node.health())["seq"] == 2
    # The master's retry of the failed batch stores nothing twice.
    (await node.replicate([e(1), e(2), e(3)], LOG)).error(500)
    assert seqs(await node.messages()) == [1, 2, 3]


async def test_fail_rate_spares_reads_and_health(secondary):
    node = await secondary(fail_rate=0.999999, seed=1)
    for _ in range(5):
        assert (await node.health())["role"] == "secondary"
        assert await node.messages() == []


async def test_delay_holds_replication_but_not_health_or_reads(secondary):
    delay = 0.5
    node = await secondary(delay=delay)
    started = time.monotonic()
    task = asyncio.create_task(node.replicate([e(1)], LOG))
    try:
        h = await node.health()
        assert not task.done(), "GET /health waited for the delayed replicate"
        assert h["seq"] == 0
        assert await node.messages() == []
        assert not task.done(), "GET /messages waited for the delayed replicate"
        reply = await task
    finally:
        task.cancel()
    # A lower bound only; asyncio may fire a timer up to one clock tick early.
    assert time.monotonic() - started >= delay - 0.02
    assert reply.ok()["seq"] == 1
    assert seqs(await node.messages()) == [1]


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("", [1, 2, 3, 4, 5]),
        ("?since=0", [1, 2, 3, 4, 5]),
        ("?since=2", [3, 4, 5]),
        ("?since=5", []),
        ("?since=99", []),
        ("?limit=2", [1, 2]),
        ("?limit=0", []),
        ("?limit=99", [1, 2, 3, 4, 5]),
        ("?since=1&limit=2", [2, 3]),
        ("?since=4&limit=10", [5]),
    ],
)
async def test_get_messages_since_and_limit(secondary, query, want):
    node = await secondary()
    # 7 is held behind the gap at 6: never shown.
    assert (await node.replicate([e(s) for s in range(1, 6)] + [e(7)], LOG)).ok()["seq"] == 5
    assert seqs(await node.messages(query)) == want


@pytest.mark.parametrize(
    "query", ["?since=-1", "?limit=-1", "?since=1.5", "?limit=1.5", "?since=abc", "?limit=abc", "?since=", "?limit=1e3"]
)
async def test_get_messages_bad_since_or_limit_is_400(secondary, query):
    node = await secondary()
    (await node.get("/messages" + query)).error(400)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/nowhere", 404),
        ("GET", "/replicate", 405),
        ("DELETE", "/messages", 405),
        ("POST", "/messages", 405),
        ("PUT", "/health", 405),
    ],
)
async def test_unknown_routes_and_wrong_methods(secondary, method, path, status):
    node = await secondary()
    reply = await node.request(method, path)
    reply.error(status)
    if status == 405:
        assert reply.headers.get("Allow")


async def test_a_batch_whose_prev_checksum_contradicts_the_held_log_is_refused(secondary):
    from replog.log import chain

    node = await secondary()
    (await node.replicate([e(1), e(2)], LOG)).ok()
    good = chain(chain(0, None, "m1"), None, "m2")
    data = json.dumps({"log": LOG, "prev": [2, good ^ 1], "entries": [e(3)]}).encode()
    refused = (await node.replicate(None, data=data)).error(409, "entry_conflict")
    assert refused["seq"] == 2
    assert [m["text"] for m in await node.messages()] == ["m1", "m2"]  # nothing changed
    data = json.dumps({"log": LOG, "prev": [2, good], "entries": [e(3)]}).encode()
    assert (await node.replicate(None, data=data)).ok()["seq"] == 3


async def test_health_gives_the_checksum_at_the_seq_asked_about(secondary):
    from replog.log import chain

    node = await secondary()
    (await node.replicate([e(1), e(2), e(3)], LOG)).ok()
    at_two = (await node.get("/health?at=2")).ok()
    assert (at_two["seq"], at_two["crc_seq"], at_two["crc"]) == (3, 2, chain(chain(0, None, "m1"), None, "m2"))
    beyond = (await node.get("/health?at=99")).ok()
    assert beyond["crc_seq"] == 3
    (await node.get("/health?at=-1")).error(400, "invalid_at")
