"""HTTP tests of the secondary's API: the internal POST /promise, POST /replicate, GET /entries and
a master's GET /health (all fenced by Replog-Epoch / Replog-Master), and the client's GET /messages
and GET /health, with their errors.

Replication bodies are built here the way a master builds them: entries [seq, id, text, flags,
hash] whose hashes chain with replog.log.chain from GENESIS, and "prev" = [seq, hash] of the
entry before the batch.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from replog.log import BATCH, BATCH_MORE, GENESIS, chain

LOG = "0123456789abcdef0123456789abcdef"
OTHER_LOG = "fedcba9876543210fedcba9876543210"
A1 = (1, "master-a")  # the fence of master a at epoch 1
A2, B2, B3 = (2, "master-a"), (2, "master-b"), (3, "master-b")
STATUS_FIELDS = {"role", "incarnation", "log", "promised", "promised_to", "log_epoch", "seq", "hash", "at", "at_hash"}


class Chain:
    """A master's log as the wire carries it: (id, text, flags) per seq, chained with replog.log.chain."""

    def __init__(self, log: str = LOG) -> None:
        self.log = log
        self.items: list[tuple[str | None, str, int]] = []
        self.hashes = [GENESIS]  # hashes[seq]: the chain value after seq

    def add(self, text: str, id_: str | None = None, flags: int = 0) -> int:
        self.items.append((id_, text, flags))
        self.hashes.append(chain(self.hashes[-1], id_, text, flags))
        return len(self.items)

    def singles(self, n: int, tag: str = "m") -> Chain:
        """Append n single writes, texts <tag><seq>."""
        for _ in range(n):
            self.add(f"{tag}{len(self.items) + 1}")
        return self

    def client_batch(self, key: str | None, texts: list[str]) -> Chain:
        """Append one client batch: ids key:i, flags BATCH (and BATCH_MORE on all but the last)."""
        for i, text in enumerate(texts):
            more = BATCH_MORE if i < len(texts) - 1 else 0
            self.add(text, None if key is None else f"{key}:{i}", BATCH | more)
        return self

    def h(self, seq: int) -> str:
        return self.hashes[seq].hex()

    def e(self, seq: int) -> list[Any]:
        """The wire entry at seq."""
        id_, text, flags = self.items[seq - 1]
        return [seq, id_, text, flags, self.h(seq)]

    def body(self, seqs: list[int] | range, prev: int | None = None) -> dict[str, Any]:
        """A replication body carrying these seqs (in this order); prev defaults to the one before the lowest."""
        if prev is None:
            prev = min(seqs) - 1 if seqs else len(self.items)
        return {"log": self.log, "prev": [prev, self.h(prev)], "entries": [self.e(s) for s in seqs]}

    def upto(self, last: int) -> dict[str, Any]:
        return self.body(range(1, last + 1))

    def messages(self, last: int | None = None) -> list[dict[str, Any]]:
        """What GET /messages shows of seqs 1..last."""
        last = len(self.items) if last is None else last
        return [
            {"seq": s, "id": id_ if id_ is not None else f"{self.log[:8]}-{s}", "text": text}
            for s, (id_, text, _) in enumerate(self.items[:last], 1)
        ]


def seqs(msgs: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in msgs]


def texts(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in msgs]


def assert_status(body: dict[str, Any], **want: Any) -> None:
    """body carries a secondary's status fields, with these values."""
    assert STATUS_FIELDS <= set(body), body
    assert body["role"] == "secondary"
    assert isinstance(body["incarnation"], str) and body["incarnation"]
    assert 0 <= body["at"] <= body["seq"]
    for name in ("hash", "at_hash"):
        assert isinstance(body[name], str) and len(body[name]) == 32 and int(body[name], 16) >= 0, body
    got = {k: body[k] for k in want}
    assert got == want, body


async def test_fresh_secondary_is_empty(secondary):
    node = await secondary()
    h = await node.health()
    assert_status(
        h, seq=0, log=None, promised=0, promised_to=None, log_epoch=0, at=0, hash=GENESIS.hex(), at_hash=GENESIS.hex()
    )
    assert h["buffered"] == 0 and h["status"] == "ok"
    assert await node.messages() == []


async def test_replicate_answers_the_status_after_storing(secondary):
    node = await secondary()
    incarnation = (await node.health())["incarnation"]
    c = Chain().singles(1)
    c.add("m2", "client-id")
    answer = (await node.replicate(c.upto(2), fence=A1)).ok()
    assert_status(
        answer,
        incarnation=incarnation,
        log=LOG,
        promised=1,
        promised_to="master-a",
        log_epoch=1,
        seq=2,
        hash=c.h(2),
        at=2,
        at_hash=c.h(2),
    )
    assert await node.messages() == [
        {"seq": 1, "id": f"{LOG[:8]}-1", "text": "m1"},
        {"seq": 2, "id": "client-id", "text": "m2"},
    ]
    h = await node.health()
    assert_status(h, seq=2, incarnation=incarnation, log=LOG, hash=c.h(2), promised=1, log_epoch=1)


async def test_shows_only_the_gap_free_prefix_until_the_gap_fills(secondary):
    node = await secondary()
    c = Chain().singles(4)
    answer = (await node.replicate(c.body([1, 2, 4]))).ok()
    assert (answer["seq"], answer["hash"]) == (2, c.h(2))
    assert seqs(await node.messages()) == [1, 2]
    h = await node.health()
    assert (h["seq"], h["buffered"]) == (2, 1)

    assert (await node.replicate(c.body([3]))).ok()["seq"] == 4
    assert await node.messages() == c.messages()
    assert (await node.health())["buffered"] == 0


async def test_entries_in_reverse_order_are_accepted(secondary):
    node = await secondary()
    c = Chain().singles(3)
    assert (await node.replicate(c.body([3, 2, 1]))).ok()["seq"] == 3
    assert await node.messages() == c.messages()


async def test_duplicates_are_ignored(secondary):
    node = await secondary()
    c = Chain().singles(3)
    assert (await node.replicate(c.body([1, 2]))).ok()["seq"] == 2
    assert (await node.replicate(c.body([1, 2, 2, 1]))).ok()["seq"] == 2
    assert (await node.replicate(c.body([2, 3, 3]))).ok()["seq"] == 3
    assert await node.messages() == c.messages()


async def test_an_empty_batch_answers_the_position(secondary):
    node = await secondary()
    assert_status((await node.replicate(Chain().body([]))).ok(), seq=0, log=LOG, promised=1)


async def test_another_log_after_holding_entries_is_log_mismatch(secondary):
    node = await secondary()
    c = Chain().singles(2)
    (await node.replicate(c.upto(2))).ok()
    before = await node.messages()

    other = Chain(OTHER_LOG).singles(3)
    refused = (await node.replicate(other.body([3]))).error(409, "log_mismatch")
    assert_status(refused, seq=2, log=LOG, hash=c.h(2))
    assert await node.messages() == before
    h = await node.health()
    assert (h["seq"], h["log"]) == (2, LOG)


def contradicting(c: Chain, seq: int, id_: str | None, text: str, flags: int = 0) -> list[Any]:
    """An entry at seq that differs from c's, hashed on c's chain (as another master would have it)."""
    return [seq, id_, text, flags, chain(c.hashes[seq - 1], id_, text, flags).hex()]


async def test_a_different_entry_at_a_held_seq_is_entry_conflict(secondary):
    node = await secondary()
    c = Chain().singles(2)
    (await node.replicate(c.upto(2))).ok()
    before = await node.messages()

    def body(entries: list[Any], prev: int) -> dict[str, Any]:
        return {"log": LOG, "prev": [prev, c.h(prev)], "entries": entries}

    for bad in (
        contradicting(c, 2, None, "not m2"),
        contradicting(c, 2, "another-id", "m2"),
        contradicting(c, 2, None, "m2", BATCH),
    ):
        refused = (await node.replicate(body([bad], 1))).error(409, "entry_conflict")
        assert_status(refused, seq=2, hash=c.h(2))
    # A conflicting batch is refused whole: its new entries are not stored either.
    c.singles(1)
    (await node.replicate(body([c.e(3), contradicting(c, 1, None, "not m1")], 0))).error(409, "entry_conflict")
    assert await node.messages() == before
    assert (await node.health())["seq"] == 2


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def good(**changes: Any) -> bytes:
    """A valid batch of seq 1 (with prev [0, GENESIS]), with fields replaced."""
    c = Chain().singles(1)
    body = c.body([1])
    body.update(changes)
    return js(body)


def entry(**changes: Any) -> bytes:
    """A batch whose only entry is seq 1 with some of its fields replaced."""
    e = dict(zip(("seq", "id", "text", "flags", "hash"), Chain().singles(1).e(1), strict=True))
    e.update(changes)
    return good(entries=[list(e.values())])


HASH = chain(GENESIS, None, "m1", 0).hex()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty body"),
        pytest.param(b"{not json", id="not JSON"),
        pytest.param(good().replace(b'"m1"', b'"\xff"'), id="invalid UTF-8"),
        pytest.param(b"[]", id="not an object"),
        pytest.param(js({"prev": [0, GENESIS.hex()], "entries": []}), id="log missing"),
        pytest.param(good(log=""), id="log empty"),
        pytest.param(good(log=5), id="log not a string"),
        pytest.param(js({"log": LOG, "prev": [0, GENESIS.hex()]}), id="entries missing"),
        pytest.param(good(entries={"1": "m1"}), id="entries not a list"),
        pytest.param(js({"log": LOG, "entries": []}), id="prev missing"),
        pytest.param(good(prev=None), id="prev null"),
        pytest.param(good(prev=[0]), id="prev of one"),
        pytest.param(good(prev=[-1, GENESIS.hex()]), id="prev seq negative"),
        pytest.param(good(prev=["0", GENESIS.hex()]), id="prev seq a string"),
        pytest.param(good(prev=[0, "00"]), id="prev hash short"),
        pytest.param(good(prev=[0, "zz" * 16]), id="prev hash not hex"),
        pytest.param(good(prev={"seq": 0}), id="prev an object"),
        pytest.param(entry(seq=0), id="seq 0"),
        pytest.param(entry(seq=-1), id="seq negative"),
        pytest.param(entry(seq="1"), id="seq a string"),
        pytest.param(entry(seq=1.0), id="seq a float"),
        pytest.param(entry(seq=True), id="seq true"),
        pytest.param(good(entries=[[1, None, "m1"]]), id="entry of three (the old wire)"),
        pytest.param(good(entries=[[1, None, "m1", 0, HASH, "x"]]), id="entry of six"),
        pytest.param(good(entries=[{"seq": 1}]), id="entry an object"),
        pytest.param(entry(text=5), id="text not a string"),
        pytest.param(entry(text=None), id="text null"),
        pytest.param(entry(id=""), id="id empty"),
        pytest.param(entry(id=7), id="id not a string"),
        pytest.param(entry(flags=2), id="flags more without batch"),
        pytest.param(entry(flags=4), id="flags unknown bit"),
        pytest.param(entry(flags=-1), id="flags negative"),
        pytest.param(entry(flags=True), id="flags true"),
        pytest.param(entry(flags=None), id="flags null"),
        pytest.param(entry(hash=HASH[:-2]), id="hash short"),
        pytest.param(entry(hash=HASH + "00"), id="hash long"),
        pytest.param(entry(hash="g" * 32), id="hash not hex"),
        pytest.param(entry(hash=None), id="hash null"),
        pytest.param(entry(hash=12), id="hash a number"),
        pytest.param(good(entries=[[2, None, "m2", 0, HASH], [0, None, "x", 0, HASH]]), id="one bad entry of two"),
        pytest.param(entry(seq=10**9), id="seq far out of window"),
    ],
)
async def test_malformed_batches_are_400_and_change_nothing(secondary, data):
    node = await secondary()
    c = Chain().singles(2)
    (await node.replicate(c.body([1]))).ok()
    before = await node.health()

    (await node.replicate(data=data)).error(400)
    assert seqs(await node.messages()) == [1]
    after = await node.health()
    assert {k: after[k] for k in STATUS_FIELDS} == {k: before[k] for k in STATUS_FIELDS}
    # It still takes good batches.
    assert (await node.replicate(c.body([2]))).ok()["seq"] == 2


async def test_a_body_over_max_body_bytes_is_413(secondary):
    node = await secondary(max_body_bytes=1024)
    big = Chain().singles(0)
    big.add("x" * 2000)
    (await node.replicate(big.upto(1))).error(413)
    assert await node.messages() == []
    assert (await node.replicate(Chain().singles(1).upto(1))).ok()["seq"] == 1


async def test_fail_rate_answers_500_but_stores_the_entries(secondary):
    node = await secondary(fail_rate=0.999999, seed=1)
    c = Chain().singles(3)
    (await node.replicate(c.upto(2))).error(500, "injected_failure")
    assert seqs(await node.messages()) == [1, 2]
    assert (await node.health())["seq"] == 2
    # The master's retry of the failed batch stores nothing twice.
    (await node.replicate(c.upto(3))).error(500)
    assert await node.messages() == c.messages()


async def test_fail_rate_spares_reads_health_and_promises(secondary):
    node = await secondary(fail_rate=0.999999, seed=1)
    for _ in range(5):
        assert (await node.health())["role"] == "secondary"
        assert await node.messages() == []
    assert (await node.promise(A1)).ok()["promised"] == 1


async def test_delay_holds_replication_but_not_health_or_reads(secondary):
    delay = 0.5
    node = await secondary(delay=delay)
    started = time.monotonic()
    task = asyncio.create_task(node.replicate(Chain().singles(1).upto(1)))
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
    c = Chain().singles(7)
    # 7 is held behind the gap at 6: never shown.
    assert (await node.replicate(c.body([1, 2, 3, 4, 5, 7]))).ok()["seq"] == 5
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
        ("GET", "/promise", 405),
        ("POST", "/entries", 405),
        ("DELETE", "/messages", 405),
        ("PUT", "/health", 405),
    ],
)
async def test_unknown_routes_and_wrong_methods(secondary, method, path, status):
    node = await secondary()
    reply = await node.request(method, path)
    reply.error(status)
    if status == 405:
        assert reply.headers.get("Allow")


async def test_a_write_sent_to_a_secondary_says_it_is_a_secondary(secondary):
    node = await secondary()
    reply = await node.post({"message": "x"})
    body = reply.error(503, "not_master")
    assert body["role"] == "secondary" and body["master"] is None
    assert "secondary" in body["detail"]
    assert await node.messages() == []


async def test_a_batch_whose_prev_contradicts_the_held_log_is_refused(secondary):
    node = await secondary()
    c = Chain().singles(3)
    (await node.replicate(c.upto(2))).ok()
    body = c.body([3])
    body["prev"] = [2, c.h(1)]  # a chain value of another log at seq 2
    refused = (await node.replicate(body)).error(409, "entry_conflict")
    assert_status(refused, seq=2, hash=c.h(2))
    assert texts(await node.messages()) == ["m1", "m2"]  # nothing changed
    assert (await node.replicate(c.body([3]))).ok()["seq"] == 3


async def test_health_gives_the_chain_value_at_the_seq_asked_about(secondary):
    node = await secondary()
    c = Chain().singles(3)
    (await node.replicate(c.upto(3))).ok()
    at_two = (await node.get("/health?at=2")).ok()
    assert (at_two["seq"], at_two["hash"], at_two["at"], at_two["at_hash"]) == (3, c.h(3), 2, c.h(2))
    at_zero = (await node.get("/health?at=0")).ok()
    assert (at_zero["at"], at_zero["at_hash"]) == (0, GENESIS.hex())
    beyond = (await node.get("/health?at=99")).ok()
    assert (beyond["at"], beyond["at_hash"]) == (3, c.h(3))
    (await node.get("/health?at=-1")).error(400, "invalid_at")


# -- fencing: promises and stale epochs --------------------------------------------------------------


async def test_promise_takes_a_higher_epoch_and_answers_the_status_after_it(secondary):
    node = await secondary()
    c = Chain().singles(2)
    (await node.replicate(c.upto(2), fence=A1)).ok()

    promised = (await node.promise(B3)).ok()
    assert_status(promised, promised=3, promised_to="master-b", log_epoch=1, seq=2, hash=c.h(2), log=LOG)
    h = await node.health()
    assert (h["promised"], h["promised_to"], h["log_epoch"]) == (3, "master-b", 1)
    # Promising the same epoch to the same master again is no change, and no refusal.
    assert (await node.promise(B3)).ok()["promised"] == 3


@pytest.mark.parametrize(
    "fence",
    [
        pytest.param((2, "master-b"), id="a lower epoch"),
        pytest.param((3, "master-a"), id="the same epoch from another master"),
        pytest.param((1, "master-b"), id="an older epoch of the same master"),
    ],
)
async def test_a_stale_fence_is_409_stale_epoch_everywhere_and_changes_nothing(secondary, fence):
    node = await secondary()
    c = Chain().singles(3)
    (await node.replicate(c.upto(2), fence=A1)).ok()
    (await node.promise(B3)).ok()
    before = await node.health()

    for reply in (
        await node.promise(fence),
        await node.replicate(c.body([3]), fence=fence),
        await node.internal("/entries?since=0", fence),
        await node.internal("/health", fence),
    ):
        body = reply.error(409, "stale_epoch")
        assert body["epoch"] == 3
    after = await node.health()
    assert {k: after[k] for k in STATUS_FIELDS} == {k: before[k] for k in STATUS_FIELDS}
    assert await node.messages() == c.messages(2), "the stale batch was not stored"


async def test_replicate_from_a_newer_master_promises_first(secondary):
    node = await secondary()
    c = Chain().singles(3)
    (await node.replicate(c.upto(2), fence=A1)).ok()
    answer = (await node.replicate(c.body([3]), fence=B2)).ok()
    assert_status(answer, promised=2, promised_to="master-b", log_epoch=2, seq=3)
    (await node.replicate(c.body([3]), fence=A1)).error(409, "stale_epoch")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Replog-Epoch": "1"}, id="epoch only"),
        pytest.param({"Replog-Master": "master-a"}, id="master only"),
        pytest.param({"Replog-Epoch": "0", "Replog-Master": "master-a"}, id="epoch 0"),
        pytest.param({"Replog-Epoch": "-1", "Replog-Master": "master-a"}, id="epoch negative"),
        pytest.param({"Replog-Epoch": "1.0", "Replog-Master": "master-a"}, id="epoch a float"),
        pytest.param({"Replog-Epoch": "one", "Replog-Master": "master-a"}, id="epoch a word"),
        pytest.param({"Replog-Epoch": "1", "Replog-Master": ""}, id="master empty"),
    ],
)
@pytest.mark.parametrize("route", ["POST /replicate", "POST /promise", "GET /entries"])
async def test_internal_requests_without_a_valid_fence_are_400(secondary, headers, route):
    node = await secondary()
    c = Chain().singles(2)
    (await node.replicate(c.upto(1), fence=A1)).ok()
    before = await node.health()

    method, path = route.split()
    data = js(c.body([2])) if path == "/replicate" else None
    code = (await node.request(method, path, data=data, headers=headers)).error(400)["error"]
    assert code in ("invalid_epoch", "invalid_master")
    after = await node.health()
    assert {k: after[k] for k in STATUS_FIELDS} == {k: before[k] for k in STATUS_FIELDS}


async def test_health_is_fenced_only_when_a_master_sends_the_headers(secondary):
    node = await secondary()
    (await node.promise(A2)).ok()
    assert (await node.get("/health")).ok()["promised"] == 2, "a client's GET /health needs no fence"
    (await node.internal("/health", A1)).error(409, "stale_epoch")
    assert (await node.internal("/health", A2)).ok()["promised"] == 2
    # A heartbeat of a newer master is answered, but promises nothing: only POST /promise and /replicate do.
    newer = (await node.internal("/health", B3)).ok()
    assert (newer["promised"], newer["promised_to"]) == (2, "master-a")
    (await node.internal("/health", (1, "x"))).error(409, "stale_epoch")
    (await node.request("GET", "/health", headers={"Replog-Epoch": "x", "Replog-Master": "m"})).error(400)


async def test_a_promise_drops_entries_an_older_master_left_behind_a_gap(secondary):
    node = await secondary()
    c = Chain().singles(5)
    (await node.replicate(c.upto(2), fence=A1)).ok()
    (await node.replicate(c.body([4, 5]), fence=A1)).ok()
    assert (await node.health())["buffered"] == 2
    (await node.promise(B2)).ok()
    assert (await node.health())["buffered"] == 0


# -- the log epoch -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_of", "taken"),
    [
        pytest.param(lambda c: c.body([], prev=3), True, id="epoch only, prev at its last seq"),
        pytest.param(lambda c: c.body([], prev=2), False, id="epoch only, prev short of its last seq"),
        pytest.param(lambda c: c.body([], prev=5), False, id="epoch only, prev past its last seq"),
        pytest.param(lambda c: c.body([4, 5]), True, id="entries right after its last seq"),
        pytest.param(lambda c: c.body([2, 3]), True, id="a resend ending at its last seq"),
        pytest.param(lambda c: c.body([1]), False, id="a resend short of its last seq"),
        pytest.param(lambda c: c.body([5]), False, id="entries behind a gap"),
    ],
)
async def test_log_epoch_is_taken_only_when_the_request_covers_the_last_seq(secondary, request_of, taken):
    node = await secondary()
    c = Chain().singles(5)
    (await node.replicate(c.upto(3), fence=A1)).ok()
    assert ((await node.health())["log_epoch"]) == 1

    answer = (await node.replicate(request_of(c), fence=B2)).ok()
    assert (answer["promised"], answer["promised_to"]) == (2, "master-b")
    assert answer["log_epoch"] == (2 if taken else 1), answer
    assert (await node.health())["log_epoch"] == answer["log_epoch"]


async def test_log_epoch_is_not_taken_on_a_contradicting_chain_value(secondary):
    node = await secondary()
    c = Chain().singles(3)
    (await node.replicate(c.upto(3), fence=A1)).ok()
    body = c.body([], prev=3)
    body["prev"] = [3, c.h(2)]
    (await node.replicate(body, fence=B2)).error(409, "entry_conflict")
    h = await node.health()
    assert (h["promised"], h["log_epoch"]) == (2, 1), "it promised, but its log is not master b's"


async def test_an_empty_node_takes_the_log_epoch_at_genesis(secondary):
    node = await secondary()
    answer = (await node.replicate(Chain().body([], prev=0), fence=B3)).ok()
    assert_status(answer, seq=0, log=LOG, promised=3, log_epoch=3)


# -- defect 5: a late batch of another chain, behind a gap ---------------------------------------------


@pytest.mark.parametrize("late_from", ["the same master", "an older master"])
async def test_a_late_batch_of_another_chain_behind_a_gap_is_never_released(secondary, late_from):
    """S2 must never show 4 = new4, 5 = old5, 6 = old6: only a prefix of the master's log."""
    node = await secondary()
    old = Chain().singles(3).singles(3, tag="old")  # the dead master's log: 1..3, then old4..old6
    new = Chain().singles(3).singles(3, tag="new")  # the new master's log: the same 1..3, then new4..new6
    (await node.replicate(old.upto(3), fence=A1)).ok()
    # The dead master's delayed request for 5..6 arrives behind the gap at 4.
    (await node.replicate(old.body([5, 6]), fence=A1)).ok()
    assert (await node.health())["buffered"] == 2

    fence = A1 if late_from == "the same master" else B2
    answer = (await node.replicate(new.body([4]), fence=fence)).ok()
    assert (answer["seq"], answer["hash"]) == (4, new.h(4))
    h = await node.health()
    assert (h["seq"], h["buffered"]) == (4, 0), "the foreign entries were dropped, not released"
    assert await node.messages() == new.messages(4)
    entries = (await node.internal("/entries?since=0&limit=100", fence)).ok()["entries"]
    assert entries == [new.e(s) for s in range(1, 5)]

    # The new master's own 5..6 are taken as usual.
    assert (await node.replicate(new.body([5, 6]), fence=fence)).ok()["seq"] == 6
    assert await node.messages() == new.messages()


async def test_a_late_batch_of_another_chain_arriving_after_the_gap_filled_is_refused(secondary):
    node = await secondary()
    old = Chain().singles(3).singles(3, tag="old")
    new = Chain().singles(3).singles(3, tag="new")
    (await node.replicate(new.upto(4), fence=A1)).ok()
    # old5 claims prev [4, old4]: not what this node holds at 4.
    (await node.replicate(old.body([5, 6]), fence=A1)).error(409, "entry_conflict")
    assert await node.messages() == new.messages(4)


# -- defect 3: whole client batches ---------------------------------------------------------------------


def batched() -> Chain:
    """1 single, 2..4 a client batch, 5 single, 6..7 a client batch, 8 single."""
    c = Chain().singles(1)
    c.client_batch("order-7", ["a", "b", "c"])
    c.singles(1)
    c.client_batch(None, ["d", "e"])
    return c.singles(1)


async def test_part_of_a_client_batch_is_held_until_the_batch_is_whole(secondary):
    node = await secondary()
    c = batched()
    assert (await node.replicate(c.body([1, 2, 3]))).ok()["seq"] == 1
    assert await node.messages() == c.messages(1)
    assert (await node.health())["buffered"] == 2
    assert (await node.replicate(c.body([4]))).ok()["seq"] == 4
    assert await node.messages() == c.messages(4)


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 6, 7, 8, 100])
@pytest.mark.parametrize("since", [0, 1, 4, 5])
async def test_entries_end_on_a_client_batch_boundary(secondary, since, limit):
    node = await secondary()
    c = batched()
    (await node.replicate(c.upto(8))).ok()
    body = (await node.internal(f"/entries?since={since}&limit={limit}")).ok()
    assert_status(body, seq=8, hash=c.h(8), log=LOG)
    got = body["entries"]
    assert got, "at least one whole batch"
    assert got == [c.e(s) for s in range(since + 1, since + 1 + len(got))], "consecutive wire entries"
    assert not got[-1][3] & BATCH_MORE, f"ends inside a client batch: {got[-1]}"
    # No more than needed: the limit, or the end of the batch the limit falls in.
    whole_end = since + limit
    while whole_end < 8 and c.items[whole_end - 1][2] & BATCH_MORE:
        whole_end += 1
    assert got[-1][0] == min(8, whole_end)


async def test_entries_of_a_node_with_a_batch_held_behind_a_gap_show_only_whole_batches(secondary):
    node = await secondary()
    c = batched()
    (await node.replicate(c.body([1, 2, 3, 5, 6, 7, 8]))).ok()
    body = (await node.internal("/entries?since=0&limit=100")).ok()
    assert body["entries"] == [c.e(1)]
