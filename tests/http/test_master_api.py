"""HTTP tests of the master's client API against a real in-process cluster (master + 2 secondaries).

Every answer of the spec's "Client HTTP API": 201/200 writes and batches, idempotent retries,
every 400/409/413 refusal (with nothing appended), 404/405, 503 no_quorum, 504 write concern
timeouts, and that a write waiting for its w never holds up other clients or outlives its client.
Then epochs: the master wins one before it takes writes, and a second master fences the first.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

N = 2  # secondaries of the default cluster; nodes = N + 1


def seqs(msgs: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in msgs]


def texts(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in msgs]


# -- 201: single writes ---------------------------------------------------------------


async def test_post_answers_201_with_the_stored_entry(cluster):
    body = (await cluster.master.post({"message": "Msg1", "w": 3})).ok(201)
    assert set(body) == {"seq", "id", "text", "w", "acks"}
    assert (body["seq"], body["text"], body["w"], body["acks"]) == (1, "Msg1", 3, 3)
    assert isinstance(body["id"], str) and body["id"]
    assert await cluster.master.messages() == [{"seq": 1, "id": body["id"], "text": "Msg1"}]


async def test_seqs_are_consecutive_and_every_node_shows_them_in_order(cluster):
    got = [(await cluster.master.post({"message": f"Msg{i}", "w": 1})).ok(201)["seq"] for i in (1, 2, 3)]
    assert got == [1, 2, 3]
    msgs = await cluster.master.messages()
    assert seqs(msgs) == [1, 2, 3]
    assert texts(msgs) == ["Msg1", "Msg2", "Msg3"]
    assert len({m["id"] for m in msgs}) == 3
    assert await cluster.wait_converged() == msgs


async def test_a_client_id_is_the_entry_id(cluster):
    body = (await cluster.master.post({"message": "hello", "id": "order-17"})).ok(201)
    assert body["id"] == "order-17"
    assert (await cluster.master.messages())[0]["id"] == "order-17"


@pytest.mark.parametrize(("w", "nodes"), [(1, 1), (2, 2), (3, 3), ("majority", 2), ("all", 3)])
async def test_write_concern(cluster, w, nodes):
    (await cluster.master.post({"message": "before", "w": 1})).ok(201)
    body = (await cluster.master.post({"message": "Msg", "w": w})).ok(201)
    assert body["w"] == nodes
    assert nodes <= body["acks"] <= N + 1
    # Guarantee 3: w nodes (the master included) hold the message and every one before it, right now.
    master = await cluster.master.messages()
    holding = 1 + sum([await node.api.messages() == master for node in cluster.secondaries])
    assert holding >= nodes


@pytest.mark.parametrize(("default_w", "nodes"), [(1, 1), (2, 2), (3, 3), ("majority", 2), ("all", 3)])
async def test_default_w_comes_from_the_config(make_cluster, default_w, nodes):
    cluster = await make_cluster(default_w=default_w)
    body = (await cluster.master.post({"message": "Msg"})).ok(201)
    assert body["w"] == nodes
    assert body["acks"] >= nodes


async def test_a_message_of_any_unicode_round_trips(cluster):
    text = 'héllo wörld ✓ 🎉 \u0000 \n "quoted"'
    body = (await cluster.master.post({"message": text, "w": 3})).ok(201)
    assert body["text"] == text
    assert texts(await cluster.master.messages()) == [text]
    assert texts(await cluster.secondaries[0].api.messages()) == [text]


# -- 201: batches -----------------------------------------------------------------------


async def test_batch_appends_consecutive_seqs_in_order(cluster):
    (await cluster.master.post({"message": "first", "w": 1})).ok(201)
    body = (await cluster.master.post({"messages": ["a", "b", "c"], "w": 3})).ok(201)
    assert set(body) == {"entries", "w", "acks"}
    assert (body["w"], body["acks"]) == (3, 3)
    assert [(x["seq"], x["text"]) for x in body["entries"]] == [(2, "a"), (3, "b"), (4, "c")]
    assert all(set(x) == {"seq", "id", "text"} for x in body["entries"])
    assert len({x["id"] for x in body["entries"]}) == 3
    msgs = await cluster.master.messages()
    assert texts(msgs) == ["first", "a", "b", "c"]
    assert msgs[1:] == body["entries"]
    for node in cluster.secondaries:  # w=3: every secondary holds the whole batch
        assert await node.api.messages() == msgs
    assert (await cluster.master.post({"message": "after", "w": 1})).ok(201)["seq"] == 5


async def test_batch_with_id_gives_entry_ids_id_colon_index(cluster):
    body = (await cluster.master.post({"messages": ["a", "b", "c"], "id": "B"})).ok(201)
    assert [x["id"] for x in body["entries"]] == ["B:0", "B:1", "B:2"]
    assert [m["id"] for m in await cluster.master.messages()] == ["B:0", "B:1", "B:2"]


async def test_a_batch_of_one(cluster):
    body = (await cluster.master.post({"messages": ["only"]})).ok(201)
    assert [(x["seq"], x["text"]) for x in body["entries"]] == [(1, "only")]


# -- idempotency --------------------------------------------------------------------------


async def test_a_retry_with_the_same_id_is_200_and_stored_once(cluster):
    first = (await cluster.master.post({"message": "pay 5", "id": "tx-1"})).ok(201)
    (await cluster.master.post({"message": "other", "w": 1})).ok(201)
    retry = (await cluster.master.post({"message": "pay 5", "id": "tx-1"})).ok(200)
    assert (retry["seq"], retry["id"], retry["text"]) == (first["seq"], "tx-1", "pay 5") == (1, "tx-1", "pay 5")
    assert retry["acks"] >= retry["w"]
    msgs = await cluster.master.messages()
    assert texts(msgs) == ["pay 5", "other"]
    assert await cluster.wait_converged() == msgs


async def test_a_retry_waits_for_its_own_w(cluster):
    (await cluster.master.post({"message": "m", "id": "k", "w": 1})).ok(201)
    retry = (await cluster.master.post({"message": "m", "id": "k", "w": 3})).ok(200)
    assert (retry["seq"], retry["w"], retry["acks"]) == (1, 3, 3)


async def test_concurrent_posts_with_one_id_store_it_once(cluster):
    replies = await asyncio.gather(*(cluster.master.post({"message": "once", "id": "same"}) for _ in range(10)))
    assert sorted(r.status for r in replies) == [200] * 9 + [201]
    assert {r.body["seq"] for r in replies} == {1}
    assert texts(await cluster.master.messages()) == ["once"]


async def test_the_same_id_with_another_message_is_409(cluster):
    (await cluster.master.post({"message": "pay 5", "id": "tx-1"})).ok(201)
    before = await cluster.master.messages()
    (await cluster.master.post({"message": "pay 500", "id": "tx-1"})).error(409, "id_conflict")
    assert await cluster.master.messages() == before


async def test_a_batch_retried_with_the_same_id_is_200_and_stored_once(cluster):
    first = (await cluster.master.post({"messages": ["a", "b"], "id": "B"})).ok(201)
    retry = (await cluster.master.post({"messages": ["a", "b"], "id": "B"})).ok(200)
    assert retry["entries"] == first["entries"]
    assert texts(await cluster.master.messages()) == ["a", "b"]


@pytest.mark.parametrize(
    "second",
    [
        pytest.param({"messages": ["a", "c"], "id": "B"}, id="other texts"),
        pytest.param({"messages": ["a"], "id": "B"}, id="fewer messages"),
        pytest.param({"messages": ["a", "b", "c"], "id": "B"}, id="more messages"),
        pytest.param({"message": "a", "id": "B"}, id="a single write with the batch's id"),
    ],
)
async def test_a_batch_id_with_other_content_is_409(cluster, second):
    (await cluster.master.post({"messages": ["a", "b"], "id": "B"})).ok(201)
    (await cluster.master.post(second)).error(409, "id_conflict")
    assert texts(await cluster.master.messages()) == ["a", "b"]


async def test_single_writes_and_batches_share_one_namespace_of_ids(cluster):
    (await cluster.master.post({"message": "a", "id": "k"})).ok(201)
    (await cluster.master.post({"messages": ["a"], "id": "k"})).error(409, "id_conflict")
    assert texts(await cluster.master.messages()) == ["a"]


# -- 400: bad input, nothing appended -------------------------------------------------------


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


BAD_REQUESTS = [
    pytest.param(b"", id="empty body"),
    pytest.param(b"{oops", id="body not JSON"),
    pytest.param(b"message=hello", id="form body"),
    pytest.param(js(["hello"]), id="a list, not an object"),
    pytest.param(js("hello"), id="a string, not an object"),
    pytest.param(b"null", id="null, not an object"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested too deep"),
    pytest.param(js({"w": 1}), id="message missing"),
    pytest.param(js({"text": "hello"}), id="message misnamed"),
    pytest.param(js({"message": 5}), id="message a number"),
    pytest.param(js({"message": None}), id="message null"),
    pytest.param(js({"message": ["hello"]}), id="message a list"),
    pytest.param(js({"message": "m", "w": 0}), id="w 0"),
    pytest.param(js({"message": "m", "w": N + 2}), id="w N+2"),
    pytest.param(js({"message": "m", "w": -1}), id="w -1"),
    pytest.param(js({"message": "m", "w": True}), id="w true"),
    pytest.param(js({"message": "m", "w": 1.5}), id="w 1.5"),
    pytest.param(js({"message": "m", "w": "most"}), id="w most"),
    pytest.param(js({"message": "m", "w": "2"}), id="w a numeric string"),
    pytest.param(js({"message": "m", "timeout": 0}), id="timeout 0"),
    pytest.param(js({"message": "m", "timeout": -1}), id="timeout -1"),
    pytest.param(js({"message": "m", "timeout": "x"}), id="timeout x"),
    pytest.param(js({"message": "m", "timeout": True}), id="timeout true"),
    pytest.param(b'{"message": "m", "timeout": NaN}', id="timeout NaN"),
    pytest.param(js({"message": "m", "id": ""}), id="id empty"),
    pytest.param(js({"message": "m", "id": 5}), id="id a number"),
    pytest.param(js({"message": "m", "messages": ["m"]}), id="both message and messages"),
    pytest.param(js({"messages": []}), id="empty messages"),
    pytest.param(js({"messages": "abc"}), id="messages a string"),
    pytest.param(js({"messages": ["a", 5, "c"]}), id="one bad item of a batch"),
    pytest.param(js({"messages": ["a", "b"], "w": 0}), id="batch with w 0"),
    pytest.param(b'{"message": "\xff\xfe"}', id="invalid UTF-8"),
    pytest.param(b'{"message": "\xed\xa0\x80"}', id="UTF-8 encoded surrogate"),
    pytest.param(b'{"message": "\\ud800"}', id="lone surrogate escape"),
]


@pytest.mark.parametrize("data", BAD_REQUESTS)
async def test_bad_requests_are_400_and_append_nothing(cluster, data):
    (await cluster.master.post({"message": "kept", "w": 3})).ok(201)
    before = await cluster.master.messages()

    (await cluster.master.post(data=data)).error(400)
    assert await cluster.master.messages() == before
    assert (await cluster.health())["seq"] == 1
    # The node is still fine, and the next write takes the next seq.
    assert (await cluster.master.post({"message": "next", "w": 3})).ok(201)["seq"] == 2
    assert texts(await cluster.wait_converged()) == ["kept", "next"]


# -- 413: too large, nothing appended ------------------------------------------------------

CAP = 16  # max_message_bytes of these tests
BODY_CAP = 1024  # max_body_bytes of these tests


@pytest.fixture
async def capped(make_cluster):
    return await make_cluster(max_message_bytes=CAP, max_body_bytes=BODY_CAP)


@pytest.mark.parametrize(
    "text", [pytest.param("x" * CAP, id="ascii"), pytest.param("é" * (CAP // 2), id="two-byte chars")]
)
async def test_a_message_of_exactly_the_cap_is_accepted(capped, text):
    assert (await capped.master.post({"message": text})).ok(201)["text"] == text


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"message": "x" * (CAP + 1)}, id="one byte over"),
        pytest.param({"message": "é" * (CAP // 2 + 1)}, id="UTF-8 size over, characters under"),
        pytest.param({"messages": ["ok", "x" * (CAP + 1)]}, id="one item of a batch over"),
        pytest.param({"message": "ok", "pad": "y" * (2 * BODY_CAP)}, id="body over max_body_bytes"),
        pytest.param({"messages": ["x" * CAP] * (BODY_CAP // CAP)}, id="batch body over max_body_bytes"),
    ],
)
async def test_too_large_is_413_and_appends_nothing(capped, body):
    (await capped.master.post({"message": "kept"})).ok(201)
    (await capped.master.post(body)).error(413)
    assert texts(await capped.master.messages()) == ["kept"]
    assert (await capped.master.post({"message": "next"})).ok(201)["seq"] == 2


async def test_a_chunked_body_over_max_body_bytes_is_413(capped):
    async def chunks():
        for _ in range(4):
            yield b" " * BODY_CAP

    async with capped.master.session.post(capped.master.url + "/messages", data=chunks()) as resp:
        assert resp.status == 413
        body = await resp.json()
    assert body["error"] and body["detail"]
    assert await capped.master.messages() == []


# -- 404 / 405 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/nowhere", 404),
        ("GET", "/messages/1", 404),
        ("POST", "/replicate", 404),
        ("POST", "/promise", 404),
        ("GET", "/entries", 404),
        ("DELETE", "/messages", 405),
        ("PUT", "/messages", 405),
        ("PUT", "/health", 405),
        ("POST", "/health", 405),
    ],
)
async def test_unknown_routes_and_wrong_methods(cluster, method, path, status):
    reply = await cluster.master.request(method, path)
    reply.error(status)
    if status == 405:
        assert reply.headers.get("Allow")
    assert await cluster.master.messages() == []


# -- 503: no quorum ------------------------------------------------------------------------------


async def test_without_quorum_the_master_is_read_only_and_recovers_by_itself(cluster):
    (await cluster.master.post({"message": "before", "w": 3})).ok(201)
    await cluster.stop(0)
    await cluster.stop(1)
    await cluster.wait_status("read_only")

    (await cluster.master.post({"message": "refused", "w": 1})).error(503, "no_quorum")
    (await cluster.master.post({"messages": ["refused"], "w": 1})).error(503, "no_quorum")
    assert texts(await cluster.master.messages()) == ["before"]
    assert (await cluster.health())["seq"] == 1

    # One secondary back (empty, on its old port) is a majority again: writes resume with no operator action.
    await cluster.start(1)
    await cluster.wait_status("ok")
    (await cluster.master.post({"message": "after", "w": 2})).ok(201)
    assert texts(await cluster.master.messages()) == ["before", "after"]
    # It rejoined empty and was sent everything.
    assert texts(await cluster.secondaries[1].api.messages()) == ["before", "after"]


async def test_a_master_started_before_its_secondaries_is_read_only_until_a_majority_answers(make_cluster):
    cluster = await make_cluster(down=(0, 1), wait=False)
    assert (await cluster.health())["status"] == "read_only"
    (await cluster.master.post({"message": "refused", "w": 1})).error(503, "no_quorum")
    assert await cluster.master.messages() == []

    await cluster.start(0)
    await cluster.wait_status("ok")
    body = (await cluster.master.post({"message": "first", "w": 2})).ok(201)
    assert (body["seq"], body["acks"]) == (1, 2)


# -- 504: write concern timeout -------------------------------------------------------------------


@pytest.fixture
async def one_down(make_cluster):
    """A master with secondary 0 up and secondary 1 down (never started): writable, but w=3 cannot be met."""
    return await make_cluster(down=(1,))


async def test_w3_with_a_secondary_down_times_out_504_and_keeps_the_message(one_down):
    body = (await one_down.master.post({"message": "stuck", "w": 3, "timeout": 0.2})).error(
        504, "write_concern_timeout"
    )
    assert (body["seq"], body["w"]) == (1, 3)
    assert isinstance(body["id"], str) and body["id"]
    assert 1 <= body["acks"] < 3
    assert await one_down.master.messages() == [{"seq": 1, "id": body["id"], "text": "stuck"}]
    # Not rolled back: it keeps replicating to the secondary that is up.
    assert texts(await one_down.wait_converged()) == ["stuck"]
    assert texts(await one_down.secondaries[0].api.messages()) == ["stuck"]


async def test_a_batch_504_carries_entries(one_down):
    body = (await one_down.master.post({"messages": ["a", "b"], "w": "all", "timeout": 0.2})).error(
        504, "write_concern_timeout"
    )
    assert "seq" not in body and "id" not in body
    assert [(x["seq"], x["text"]) for x in body["entries"]] == [(1, "a"), (2, "b")]
    assert body["w"] == 3
    assert 1 <= body["acks"] < 3
    assert texts(await one_down.master.messages()) == ["a", "b"]


async def test_the_default_timeout_comes_from_the_config(make_cluster):
    cluster = await make_cluster(down=(1,), w_timeout=0.2)
    (await cluster.master.post({"message": "stuck", "w": 3})).error(504, "write_concern_timeout")
    assert texts(await cluster.master.messages()) == ["stuck"]


async def test_a_retry_after_504_answers_by_its_own_w(one_down):
    first = (await one_down.master.post({"message": "m", "id": "k", "w": 3, "timeout": 0.2})).error(504)
    again = (await one_down.master.post({"message": "m", "id": "k", "w": 3, "timeout": 0.2})).error(
        504, "write_concern_timeout"
    )
    assert (again["seq"], again["id"]) == (first["seq"], "k")
    ok = (await one_down.master.post({"message": "m", "id": "k", "w": 2})).ok(200)
    assert (ok["seq"], ok["id"], ok["acks"]) == (first["seq"], "k", 2)
    assert texts(await one_down.master.messages()) == ["m"]


# -- a waiting write holds up nobody, and never outlives its client ----------------------------------


async def test_a_blocked_w3_write_does_not_hold_up_w1_writes(one_down):
    blocked = asyncio.create_task(one_down.master.post({"message": "blocked", "w": 3}))
    try:
        await one_down.wait_waiting_writes(1)
        replies = await asyncio.gather(*(one_down.master.post({"message": f"fast{i}", "w": 1}) for i in range(20)))
        assert not blocked.done(), "the w=3 write answered although a secondary is down"
        assert sorted(r.ok(201)["seq"] for r in replies) == list(range(2, 22))
        # Sequential ones too: each answers while the w=3 write still waits.
        for i in range(5):
            (await one_down.master.post({"message": f"seq{i}", "w": 1})).ok(201)
            assert not blocked.done()
        # w=2 (the secondary that is up) is not held up either.
        (await one_down.master.post({"message": "w2", "w": 2})).ok(201)
        assert not blocked.done()
    finally:
        blocked.cancel()
        await asyncio.gather(blocked, return_exceptions=True)
    await one_down.wait_waiting_writes(0)


async def test_a_client_that_goes_away_leaves_no_waiter(one_down):
    assert (await one_down.health())["waiting_writes"] == 0
    clients = [asyncio.create_task(one_down.master.post({"message": f"m{i}", "w": 3})) for i in range(3)]
    await one_down.wait_waiting_writes(3)
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    await one_down.wait_waiting_writes(0)
    # The messages are stored all the same, and the master still takes writes.
    assert sorted(texts(await one_down.master.messages())) == ["m0", "m1", "m2"]
    (await one_down.master.post({"message": "next", "w": 2})).ok(201)
    assert (await one_down.health())["waiting_writes"] == 0


async def test_a_timed_out_write_leaves_no_waiter(one_down):
    (await one_down.master.post({"message": "m", "w": 3, "timeout": 0.1})).error(504)
    assert (await one_down.health())["waiting_writes"] == 0


# -- GET /messages ------------------------------------------------------------------------------------


@pytest.fixture
async def five(cluster):
    (await cluster.master.post({"messages": [f"m{i}" for i in range(1, 6)], "w": 1})).ok(201)
    return cluster


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
        ("?since=9&limit=10", []),
    ],
)
async def test_get_messages_since_and_limit(five, query, want):
    msgs = await five.master.messages(query)
    assert seqs(msgs) == want
    assert texts(msgs) == [f"m{s}" for s in want]


async def test_get_messages_of_an_empty_log(cluster):
    assert (await cluster.master.get("/messages")).ok() == {"messages": [], "last_seq": 0}


@pytest.mark.parametrize(
    "query",
    ["?since=-1", "?limit=-1", "?since=1.5", "?limit=1.5", "?since=abc", "?limit=abc", "?since=", "?limit=0x10"],
)
async def test_get_messages_bad_since_or_limit_is_400(five, query):
    (await five.master.get("/messages" + query)).error(400)


# -- GET /health --------------------------------------------------------------------------------------


async def test_health_shows_role_status_seq_quorum_and_each_secondary(cluster):
    for i in range(3):
        (await cluster.master.post({"message": f"m{i}", "w": 1})).ok(201)
    await cluster.wait_converged()

    async def caught_up() -> dict[str, Any] | None:
        h = await cluster.health()
        return h if all(s["seq"] == 3 for s in h["secondaries"]) else None

    h = await cluster.wait_for(caught_up, "the master to see both secondaries at seq 3")
    assert (h["role"], h["status"], h["seq"], h["quorum"]) == ("master", "ok", 3, 2)
    assert [s["url"] for s in h["secondaries"]] == list(cluster.config.secondaries)
    for s, node in zip(h["secondaries"], cluster.secondaries, strict=True):
        assert s["url"] == node.url and not s["url"].endswith("/")
        assert (s["status"], s["seq"], s["lag"]) == ("healthy", 3, 0)
        assert isinstance(s["last_contact"], (int, float)) and s["last_contact"] >= 0


async def test_health_shows_a_down_secondary_and_its_lag(one_down):
    for i in range(4):
        (await one_down.master.post({"message": f"m{i}", "w": 2})).ok(201)
    h = await one_down.health()
    assert (h["status"], h["seq"], h["quorum"]) == ("ok", 4, 2)
    up, down = h["secondaries"]
    assert up["status"] == "healthy"
    assert down["url"] == one_down.config.secondaries[1]
    assert (down["status"], down["seq"], down["lag"]) == ("unhealthy", 0, 4)


async def test_health_goes_suspected_then_unhealthy_when_a_secondary_dies(make_cluster):
    cluster = await make_cluster(suspect_after=2, unhealthy_after=20)
    await cluster.stop(1)
    await cluster.wait_secondaries("healthy", "suspected")
    assert (await cluster.health())["status"] == "ok"
    await cluster.wait_secondaries("healthy", "unhealthy")
    h = await cluster.health()
    assert h["status"] == "ok"  # the master and secondary 0 are a majority
    assert h["secondaries"][1]["last_contact"] >= 0  # when it was last heard of
    (await cluster.master.post({"message": "still writable", "w": 2})).ok(201)


# -- epochs and fencing ----------------------------------------------------------------------------------


async def test_the_master_wins_epoch_1_and_the_secondaries_hold_its_log_under_it(cluster):
    (await cluster.master.post({"message": "a", "w": 3})).ok(201)
    h = await cluster.health()
    assert (h["epoch"], h["recovering"], h["deposed"], h["failed"]) == (1, False, False, None)
    assert isinstance(h["master_id"], str) and h["master_id"]
    assert h["unconsulted"] == []
    for s in h["secondaries"]:
        assert (s["promised"], s["log_epoch"]) == (1, 1), s
    for node in cluster.secondaries:
        sh = await node.api.health()
        assert (sh["promised"], sh["promised_to"], sh["log_epoch"], sh["log"]) == (1, h["master_id"], 1, h["log"])


async def test_a_second_master_fences_the_first_and_keeps_its_acknowledged_writes(cluster):
    (await cluster.master.post({"message": "a1", "w": 2})).ok(201)
    first_id = (await cluster.health())["master_id"]

    second = await cluster.another_master()

    async def writable() -> dict[str, Any] | None:
        h = await second.health()
        return h if h["status"] == "ok" else None

    h2 = await cluster.wait_for(writable, "the second master to take writes")
    assert h2["epoch"] == 2 and h2["master_id"] != first_id
    assert texts(await second.messages()) == ["a1"], "a w=2 write survives a new master"

    async def deposed() -> dict[str, Any] | None:
        h = await cluster.health()
        return h if h["deposed"] else None

    h1 = await cluster.wait_for(deposed, "the first master to learn it was deposed")
    assert h1["status"] == "read_only"
    (await cluster.master.post({"message": "split brain", "w": 1})).error(503, "not_master")

    body = (await second.post({"message": "b2", "w": 3})).ok(201)
    assert (body["seq"], body["acks"]) == (2, 3)
    for node in cluster.secondaries:
        assert texts(await node.api.messages()) == ["a1", "b2"]
        sh = await node.api.health()
        assert (sh["promised"], sh["promised_to"], sh["log_epoch"]) == (2, h2["master_id"], 2)
    assert texts(await cluster.master.messages()) == ["a1"], "the deposed master appended nothing"
