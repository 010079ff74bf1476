"""replog.Client and its Producer against an in-process cluster: what each call returns, the typed
errors, coalescing with each caller's own entry, not_master following, reads, long-polls and follow().
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

import replog
from replog.client.api import normalize_url


async def test_append_returns_the_stored_entry_and_a_retry_by_id_is_not_stored_twice(cluster):
    async with replog.Client(cluster.master.url) as log:
        first = await log.append("hello", w=3)
        assert (first.seq, first.text, first.w, first.acks, first.created) == (1, "hello", 3, 3, True)
        assert first.id and "-" not in first.id  # client-made, never of the generated form
        again = await log.append("hello", w=3, id=first.id)
        assert (again.seq, again.id, again.created) == (1, first.id, False)
        batch = await log.append_batch(["a", "b"], w=2, id="b-1")
        assert [(e.seq, e.id, e.text) for e in batch.entries] == [(2, "b-1:0", "a"), (3, "b-1:1", "b")]
        assert batch.w == 2 and batch.acks >= 2 and batch.created
    assert [m["text"] for m in await cluster.master.messages()] == ["hello", "a", "b"]


async def test_read_and_long_poll(cluster):
    async with replog.Client(cluster.master.url) as log:
        await log.append_batch(["a", "b", "c"], w=1)
        assert [e.text for e in await log.read()] == ["a", "b", "c"]
        assert [e.seq for e in await log.read(since=1, limit=1)] == [2]
        assert await log.read(since=3, wait=0.1) == []
        poll = asyncio.create_task(log.read(since=3, wait=30))
        await asyncio.sleep(0.05)
        await log.append("d", w=1)
        assert [e.text for e in await asyncio.wait_for(poll, 10)] == ["d"]


async def test_follow_yields_the_backlog_then_live_entries(cluster):
    async with replog.Client(cluster.master.url) as log:
        await log.append_batch(["a", "b"], w=1)
        seen: list[replog.Entry] = []
        follower = log.follow(since=0)
        seen.append(await anext(follower))
        seen.append(await anext(follower))
        later = asyncio.create_task(anext(follower))
        await log.append("c", w=1)
        seen.append(await asyncio.wait_for(later, 10))
        await follower.aclose()
        assert [(e.seq, e.text) for e in seen] == [(1, "a"), (2, "b"), (3, "c")]


async def test_health_is_the_masters(cluster):
    async with replog.Client(cluster.master.url) as log:
        h = await log.health()
        assert h["role"] == "master" and len(h["secondaries"]) == 2


async def test_typed_errors(make_cluster):
    cluster = await make_cluster(down=(1,))
    async with replog.Client(cluster.master.url, retry_for=0.3) as log:
        with pytest.raises(replog.Rejected) as rejected:
            await log.append("x", w=9)
        assert rejected.value.code == "invalid_w" and rejected.value.status == 400

        with pytest.raises(replog.WriteConcernTimeout) as timeout:
            await log.append("stuck", w=3, timeout=0.2)
        assert (timeout.value.seq, timeout.value.acks, timeout.value.w) == (1, 2, 3)

        with pytest.raises(replog.WriteConcernTimeout) as timeout:
            await log.append_batch(["p", "q"], w=3, timeout=0.2)
        assert (timeout.value.seq, timeout.value.acks) == (3, 2)
        assert [e["text"] for e in timeout.value.entries] == ["p", "q"]

        await cluster.stop(0)  # now only the master is up: no majority
        await cluster.wait_status("read_only")
        with pytest.raises(replog.NoQuorum) as no_quorum:
            await log.append("refused", w=1)
        assert no_quorum.value.status == 503 and isinstance(no_quorum.value, replog.Unavailable)

    dead = f"http://127.0.0.1:{unused_port()}"
    async with replog.Client(dead, retry_for=0.2) as log:
        started = time.monotonic()
        with pytest.raises(replog.Unavailable) as unreachable:
            await log.append("nowhere")
        assert unreachable.value.code == "unreachable" and unreachable.value.status is None
        assert time.monotonic() - started < 5


async def test_a_write_to_a_secondary_moves_on_to_the_master(cluster):
    s1 = cluster.secondaries[0].url
    async with replog.Client(s1) as log:
        with pytest.raises(replog.NotMaster) as not_master:
            await log.append("x")  # the only URL is a secondary's: said at once, no retrying
        assert not_master.value.body["role"] == "secondary"
    async with replog.Client([s1, cluster.master.url]) as log:
        stored = await log.append("x", w=1)
        assert stored.seq == 1 and log.master == cluster.master.url
        await cluster.wait_converged()
        assert [e.text for e in await log.read()] == ["x"]  # reads go to the first URL, s1


async def test_a_not_master_answer_that_names_the_master_is_followed(cluster, aiohttp_server):
    async def deposed(request: web.Request) -> web.Response:
        body = {"error": "not_master", "detail": "not me", "master": cluster.master.url}
        return web.json_response(body, status=503)

    app = web.Application()
    app.router.add_post("/messages", deposed)
    server = await aiohttp_server(app)
    async with replog.Client(str(server.make_url(""))) as log:
        stored = await log.append("moved on", w=1)
        assert log.master == cluster.master.url
    assert [m["text"] for m in await cluster.master.messages()] == ["moved on"] and stored.seq == 1


async def test_a_producer_coalesces_concurrent_appends_and_each_caller_gets_its_own_entry(cluster):
    async with replog.Client(cluster.master.url) as log:
        async with log.producer(w=3) as p:
            stored = await asyncio.gather(*(p.append(f"m{i}") for i in range(200)))
        assert [s.text for s in stored] == [f"m{i}" for i in range(200)]
        assert sorted(s.seq for s in stored) == list(range(1, 201))
        assert len({s.id for s in stored}) == 200
        assert all(s.w == 3 and s.acks == 3 for s in stored)
        assert p.appended == 200 and p.batches < 20  # coalesced, not 200 writes
    shown = await cluster.master.messages()
    assert [(m["seq"], m["text"], m["id"]) for m in shown] == [(s.seq, s.text, s.id) for s in stored]


async def test_a_producer_refuses_only_the_message_the_master_refuses(make_cluster):
    cluster = await make_cluster(max_message_bytes=100)
    async with replog.Client(cluster.master.url) as log, log.producer(w=1) as p:
        texts = ["ok0", "x" * 101, "ok2", "ok3"]
        results = await asyncio.gather(*(p.append(t) for t in texts), return_exceptions=True)
    assert isinstance(results[1], replog.Rejected) and results[1].code == "message_too_large"
    assert [r.text for i, r in enumerate(results) if i != 1] == ["ok0", "ok2", "ok3"]
    assert [m["text"] for m in await cluster.master.messages()] == ["ok0", "ok2", "ok3"]


async def test_a_producer_write_concern_timeout_names_each_callers_seq(make_cluster):
    cluster = await make_cluster(down=(1,))
    async with replog.Client(cluster.master.url) as log, log.producer(w=3, timeout=0.2) as p:
        results = await asyncio.gather(*(p.append(f"m{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, replog.WriteConcernTimeout) for r in results), results
    assert sorted(r.seq for r in results) == [1, 2, 3]
    assert all(r.acks == 2 for r in results)


async def test_a_producer_sends_nothing_after_close(cluster):
    async with replog.Client(cluster.master.url) as log:
        p = log.producer()
        with pytest.raises(RuntimeError):
            await p.append("not started")
        async with p:
            await p.append("one")
        with pytest.raises(RuntimeError):
            await p.append("closed")


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        (" https://node.example:8443 ", "https://node.example:8443"),
        ("localhost:8001", "http://localhost:8001"),
    ],
)
def test_urls_without_a_scheme_mean_http(given, url):
    assert normalize_url(given) == url


@pytest.mark.parametrize("given", ["", "ftp://x:1", "http://", "://"])
def test_junk_urls_are_refused(given):
    with pytest.raises(ValueError):
        normalize_url(given)


async def test_the_token_goes_in_every_request(aiohttp_server):
    seen: list[str | None] = []

    async def health(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"role": "master"})

    app = web.Application()
    app.router.add_get("/health", health)
    server = await aiohttp_server(app)
    async with replog.Client(str(server.make_url("")), token="s3cret") as log:
        assert (await log.health())["role"] == "master"
    assert seen == ["Bearer s3cret"]


def test_a_ca_file_is_read_at_once(tmp_path):
    with pytest.raises(OSError):  # the CA file is read: a missing one is an error at once
        replog.Client("https://127.0.0.1:1", ca=str(tmp_path / "missing.pem"))
