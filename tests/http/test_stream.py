"""HTTP tests of GET /messages/stream (Server-Sent Events) on the master and on a secondary.

Every entry once, in order, from since (or after Last-Event-ID) and then live; keep-alive comments on
an idle stream; a secondary's stream never shows an entry held behind a gap; a consumer that reads
nothing makes the node hold only a bounded amount for it; a stream that goes away leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
import pytest

from replog.config import MasterConfig, SecondaryConfig
from replog.log import Log
from replog.master_app import build_master_app
from replog.secondary import build_secondary_app

LOG = "0123456789abcdef0123456789abcdef"


class Events:
    """Reads one event stream block by block: each block is its fields (id, event, data) or its comments."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.raw: list[bytes] = []  # every line read, as it came

    async def block(self, timeout: float = 10.0) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = await self.resp.content.readline()
                if not line:
                    return {"eof": True}
                self.raw.append(line)
                line = line.rstrip(b"\n").decode()
                if not line:
                    if fields:
                        return fields
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if not name:
                    fields.setdefault("comments", []).append(value)
                else:
                    fields[name] = value

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message event (skipping the retry hint and comments): its decoded data, checked against its id."""
        while True:
            block = await self.block(timeout)
            assert "eof" not in block, "the stream ended"
            if block.get("event") == "message":
                data = json.loads(block["data"])
                assert block["id"] == str(data["seq"]), block
                assert set(data) == {"seq", "id", "text"}, data
                return data


async def open_stream(session: aiohttp.ClientSession, url: str, **headers: str) -> Events:
    resp = await session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
    assert resp.status == 200, (resp.status, await resp.text())
    assert resp.content_type == "text/event-stream"
    return Events(resp)


def replication(log: Log, seqs: list[int]) -> dict[str, Any]:
    first = min(seqs)
    return {"log": LOG, "prev": [first - 1, log.hash(first - 1).hex()], "entries": [log.wire(s, s)[0] for s in seqs]}


@pytest.fixture
async def solo(make_cluster):
    return await make_cluster(secondaries=0, stream_keepalive=0.2)


async def streams(api: Any, n: int, wait_for: Any) -> None:
    async def reached() -> bool:
        return (await api.health())["streams"] == n

    await wait_for(reached, f"{n} open streams")


async def test_a_stream_sends_every_entry_after_since_then_live(solo, session):
    (await solo.master.post({"messages": ["a", "b", "c"], "w": 1})).ok(201)
    stream = await open_stream(session, solo.master.url + "/messages/stream?since=1")
    ids = {m["seq"]: m["id"] for m in await solo.master.messages()}
    assert await stream.message() == {"seq": 2, "id": ids[2], "text": "b"}
    assert await stream.message() == {"seq": 3, "id": ids[3], "text": "c"}
    raw = b"".join(stream.raw)
    assert b'id: 2\nevent: message\ndata: {"seq":2,"id":"%s","text":"b"}\n\n' % ids[2].encode() in raw

    body = (await solo.master.post({"message": 'live "one"\nwith a newline', "w": 1})).ok(201)
    assert await stream.message() == {"seq": 4, "id": body["id"], "text": 'live "one"\nwith a newline'}
    stream.resp.close()


async def test_last_event_id_resumes_after_that_seq(solo, session):
    (await solo.master.post({"messages": ["a", "b", "c", "d"], "w": 1})).ok(201)
    stream = await open_stream(session, solo.master.url + "/messages/stream?since=0", **{"Last-Event-ID": "2"})
    assert [(await stream.message())["seq"] for _ in range(2)] == [3, 4]
    stream.resp.close()


@pytest.mark.parametrize(
    ("query", "headers", "code"),
    [
        ("?since=-1", {}, "invalid_since"),
        ("?since=x", {}, "invalid_since"),
        ("", {"Last-Event-ID": "abc"}, "invalid_last_event_id"),
        ("", {"Last-Event-ID": "-3"}, "invalid_last_event_id"),
    ],
)
async def test_a_bad_position_is_400(solo, query, headers, code):
    reply = await solo.master.request("GET", "/messages/stream" + query, headers=headers)
    reply.error(400, code)


async def test_an_idle_stream_gets_keep_alive_comments(solo, session):
    stream = await open_stream(session, solo.master.url + "/messages/stream")
    started = time.monotonic()
    comments = 0
    while comments < 2:
        block = await stream.block()
        comments += "keep-alive" in block.get("comments", [])
    assert time.monotonic() - started >= 0.3  # two intervals of 0.2 s, less the scheduling slack
    (await solo.master.post({"message": "after the comments", "w": 1})).ok(201)
    assert (await stream.message())["text"] == "after the comments"
    stream.resp.close()


async def test_a_closed_stream_leaves_nothing_behind(solo, session):
    opened = [await open_stream(session, solo.master.url + "/messages/stream") for _ in range(3)]
    await streams(solo.master, 3, solo.wait_for)
    assert (await solo.master.health())["waiting_reads"] == 3
    for stream in opened:
        stream.resp.close()
    await streams(solo.master, 0, solo.wait_for)
    assert (await solo.master.health())["waiting_reads"] == 0


async def test_a_secondary_stream_never_shows_an_entry_past_a_gap(secondary, session):
    node = await secondary()
    log = Log(LOG)
    for i in range(1, 5):
        log.append(f"m{i}")
    (await node.replicate(replication(log, [1]))).ok()
    stream = await open_stream(session, node.url + "/messages/stream")
    assert (await stream.message())["seq"] == 1

    (await node.replicate(replication(log, [3, 4]))).ok()  # held behind the gap at 2
    assert (await node.health())["buffered"] == 2
    nothing = asyncio.create_task(stream.message())
    await asyncio.sleep(0.2)  # long enough for an event the node would wrongly send to arrive
    assert not nothing.done()

    (await node.replicate(replication(log, [2]))).ok()
    assert (await nothing)["seq"] == 2
    assert [(await stream.message())["seq"] for _ in range(2)] == [3, 4]
    stream.resp.close()


async def test_a_consumer_that_reads_nothing_is_paced_by_its_socket(aiohttp_server, session):
    """8 MB of entries and a consumer that never reads: the node's buffer for it stays small."""
    server = await aiohttp_server(build_master_app(MasterConfig()), shutdown_timeout=0.5)
    url = str(server.make_url("")).rstrip("/")

    async def writable() -> bool:
        async with session.get(url + "/health") as resp:
            return (await resp.json())["status"] == "ok"

    deadline = time.monotonic() + 10
    while not await writable():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    text = "x" * 1000
    for _ in range(8):
        async with session.post(url + "/messages", json={"messages": [text] * 1000, "w": 1}) as resp:
            assert resp.status == 201

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (server.host, server.port))
    await loop.sock_sendall(sock, b"GET /messages/stream HTTP/1.0\r\n\r\n")
    try:

        def buffered() -> list[int]:
            return [c.transport.get_write_buffer_size() for c in server.runner.server.connections if c.transport]

        # Wait until the stream is stuck on a full socket: its buffer then stops changing.
        sizes: list[list[int]] = []
        deadline = time.monotonic() + 10
        while len(sizes) < 5 or sizes[-1] != sizes[-5] or not sizes[-1]:
            assert time.monotonic() < deadline, sizes[-5:]
            sizes.append(buffered())
            await asyncio.sleep(0.05)
        assert max(sizes[-1]) <= 512 << 10, sizes[-1]  # not the 8 MB behind it

        # The consumer reads after all: every entry arrives, once, in order.
        received = bytearray()  # HTTP/1.0: the body is not chunked, events follow one another
        async with asyncio.timeout(30):
            while not (received.endswith(b"\n\n") and b"\nid: 8000\n" in received[-3000:]):
                received += await loop.sock_recv(sock, 1 << 20)
        ids = [int(line[4:]) for line in bytes(received).split(b"\n") if line.startswith(b"id: ")]
        assert ids == list(range(1, 8_001))
    finally:
        sock.close()


async def test_a_shutdown_ends_streams_and_long_polls_at_once(aiohttp_server, session):
    server = await aiohttp_server(build_secondary_app(SecondaryConfig()), shutdown_timeout=30)
    url = str(server.make_url("")).rstrip("/")
    stream = await open_stream(session, url + "/messages/stream")
    poll = asyncio.create_task(session.get(url + "/messages?wait=60"))
    async with asyncio.timeout(10):
        while (await (await session.get(url + "/health")).json())["waiting_reads"] < 2:
            await asyncio.sleep(0.01)
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 5  # not the 30 s a handler in flight may take
    while "eof" not in await stream.block(timeout=5):
        pass
    resp = await poll
    assert resp.status == 200 and (await resp.json())["messages"] == []
