"""A secondary's reorder-buffer caps over HTTP, against the real secondary app: a request past the gap over
--buffer-max-bytes is a JSON 503 buffer_full that changes nothing, one too far past the end a 400
seq_out_of_window, and the master's transport takes both as failures to retry (never as divergence, nor as
a node that is out for good)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from replog import jsoncodec
from replog.config import SecondaryConfig
from replog.log import GENESIS, chain
from replog.protocol import Fence
from replog.secondary import build_secondary_app
from replog.transport import HttpTransport, Refused, Stale, TransportError, Unavailable

LOG = "b0f1" * 8
JUNK = "5a" * 16


def body(*seqs: int, size: int = 1000) -> bytes:
    """Entries at seqs, each with size characters of text, after a gap (prev is the seq before the first)."""
    entries = [[s, None, "x" * size, 0, JUNK] for s in seqs]
    return jsoncodec.dumps({"log": LOG, "prev": [seqs[0] - 1, "00" * 16], "entries": entries})


@pytest.fixture
async def secondary() -> AsyncIterator[str]:
    app = build_secondary_app(SecondaryConfig(buffer_max_bytes=3000, buffer_max_distance=100))
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def transport(secondary: str) -> AsyncIterator[HttpTransport]:
    async with aiohttp.ClientSession() as session:
        yield HttpTransport(session, secondary, lambda: Fence(1, "m1"), replicate_timeout=5, health_timeout=5)


async def raw(url: str, data: bytes) -> tuple[int, dict[str, object]]:
    headers = {**Fence(1, "m1").headers(), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s, s.post(url + "/replicate", data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_past_the_byte_cap_a_request_is_a_json_503_that_changes_nothing(secondary: str) -> None:
    status, first = await raw(secondary, body(3, 4))  # about 2.4 KB held behind the gap at 1..2
    assert status == 200 and first["seq"] == 0
    async with aiohttp.ClientSession() as s, s.get(secondary + "/health") as resp:
        before = await resp.json()
    status, answer = await raw(secondary, body(5))
    assert status == 503 and answer["error"] == "buffer_full", answer
    assert answer["seq"] == 0 and answer["incarnation"] == before["incarnation"]  # the node's status, as always
    async with aiohttp.ClientSession() as s, s.get(secondary + "/health") as resp:
        after = await resp.json()
    assert after["buffered"] == before["buffered"] == 2
    assert after["buffered_bytes"] == before["buffered_bytes"]
    assert 2000 < after["buffered_bytes"] <= 3000


async def test_the_masters_transport_retries_a_full_buffer_and_an_out_of_window_request(
    transport: HttpTransport,
) -> None:
    await transport.replicate(body(3, 4))
    for refused in (body(5), body(500, size=1)):  # over the byte cap; past the distance cap
        with pytest.raises(TransportError) as caught:
            await transport.replicate(refused)
        assert not isinstance(caught.value, (Unavailable, Refused, Stale)), caught.value
    # The master's own entries fill the gap: they chain onto the log, and the junk held past them is dropped.
    h1 = chain(GENESIS, None, "a", 0)
    h2 = chain(h1, None, "b", 0)
    entries = [[1, None, "a", 0, h1.hex()], [2, None, "b", 0, h2.hex()]]
    reply = await transport.replicate(jsoncodec.dumps({"log": LOG, "prev": [0, GENESIS.hex()], "entries": entries}))
    assert reply.seq == 2
