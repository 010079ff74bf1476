"""In-process clusters for the HTTP tests: the real master and secondary apps on loopback test servers.

A cluster is a master and secondaries, each a real app on an aiohttp TestServer. A secondary
can be down from the start (its URL points at a reserved port where nothing listens), taken
down (its server closed) and brought back (a new, empty secondary app on the same port).

Test modules import nothing from here: the fixtures hand out objects whose methods do the
talking (`Api.post`, `Api.get`, ...) and whose answers check themselves (`Reply.ok`, `Reply.error`).

aiohttp's TestServer always runs with handler_cancellation=True (since aiohttp 3.9 its
start_server passes it to the AppRunner; passing it again is a TypeError, and the server_kwargs
of the aiohttp_client fixture go to TestServer.__init__, which drops them). So a client that
goes away cancels its handler here, as under the production CLI's web.run_app.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer, unused_port

from replog.config import MasterConfig, SecondaryConfig
from replog.master_app import build_master_app
from replog.secondary import build_secondary_app

# Runner kwargs of every test server: a closing server waits at most this long for handlers in flight.
SERVER_KW = {"shutdown_timeout": 0.5}
DEADLINE = 10.0  # seconds an awaited condition may take before the test fails


async def wait_for(cond: Callable[[], Awaitable[Any]], what: str, timeout: float = DEADLINE) -> Any:
    """Await cond() until it returns something truthy, and return that; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: its status, headers and decoded JSON body (every answer of a node is JSON)."""

    status: int
    body: Any
    headers: Any

    def ok(self, status: int = 200) -> Any:
        assert self.status == status, (self.status, self.body)
        return self.body

    def error(self, status: int, code: str | None = None) -> dict[str, Any]:
        """Assert an error answer of the spec: the status, and {"error": code, "detail": a sentence}."""
        body = self.body
        assert self.status == status, (self.status, body)
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
        if code is not None:
            assert body["error"] == code, body
        return body


Fence = tuple[Any, str]  # (epoch, master id) as an internal request carries them
TEST_MASTER: Fence = (1, "test-master")  # the fence of internal requests that name none


def fence_headers(fence: Fence | None) -> dict[str, str]:
    """The headers of an internal request from the master of this epoch and id (none for None)."""
    if fence is None:
        return {}
    epoch, master = fence
    return {"Replog-Epoch": str(epoch), "Replog-Master": master}


class Api:
    """Speaks HTTP to one node by base URL."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if json_body is not None:
            data = json.dumps(json_body).encode()
        headers = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
        async with self.session.request(method, self.url + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            assert resp.content_type == "application/json", (resp.status, resp.content_type, raw[:200])
            return Reply(resp.status, json.loads(raw), resp.headers)

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)

    async def post(self, body: Any = None, *, data: bytes | None = None) -> Reply:
        """POST /messages with body as JSON, or raw bytes in data."""
        return await self.request("POST", "/messages", data=data, json_body=body if data is None else None)

    async def replicate(
        self, body: Any = None, *, data: bytes | None = None, fence: Fence | None = TEST_MASTER
    ) -> Reply:
        """POST /replicate of body as JSON (or raw bytes in data), from the master of fence."""
        return await self.request(
            "POST", "/replicate", data=data, json_body=body if data is None else None, headers=fence_headers(fence)
        )

    async def promise(self, fence: Fence | None = TEST_MASTER) -> Reply:
        """POST /promise (no body) from the master of fence."""
        return await self.request("POST", "/promise", headers=fence_headers(fence))

    async def internal(self, path: str, fence: Fence | None = TEST_MASTER) -> Reply:
        """GET path (GET /entries, or a master's GET /health) with the fence of a master."""
        return await self.request("GET", path, headers=fence_headers(fence))

    async def messages(self, query: str = "") -> list[dict[str, Any]]:
        return (await self.get("/messages" + query)).ok()["messages"]

    async def health(self) -> dict[str, Any]:
        return (await self.get("/health")).ok()


@dataclass
class Node:
    """One secondary of a cluster: a fixed URL, and a server while it is up."""

    url: str
    port: int
    config: SecondaryConfig
    api: Api
    server: TestServer | None = None

    @property
    def up(self) -> bool:
        return self.server is not None


class Cluster:
    """A master and its secondaries, in this process."""

    wait_for = staticmethod(wait_for)

    def __init__(
        self,
        master: Api,
        config: MasterConfig,
        secondaries: list[Node],
        start: Callable[[Node], Awaitable[None]],
        serve_master: Callable[[MasterConfig], Awaitable[Api]],
    ) -> None:
        self.master = master
        self.config = config
        self.secondaries = secondaries
        self._start = start
        self._serve_master = serve_master

    async def another_master(self) -> Api:
        """Start a second master app of the same config (the same secondaries): it must fence the first."""
        return await self._serve_master(self.config)

    async def health(self) -> dict[str, Any]:
        return await self.master.health()

    async def wait_status(self, status: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            h = await self.health()
            return h if h["status"] == status else None

        return await wait_for(reached, f"the master's status to be {status!r}")

    async def wait_secondaries(self, *statuses: str) -> dict[str, Any]:
        """Wait until the master reports secondary i as statuses[i]."""

        async def reached() -> dict[str, Any] | None:
            h = await self.health()
            return h if [s["status"] for s in h["secondaries"]] == list(statuses) else None

        return await wait_for(reached, f"the secondaries to be {statuses}")

    async def wait_waiting_writes(self, n: int) -> None:
        async def reached() -> bool:
            return (await self.health())["waiting_writes"] == n

        await wait_for(reached, f"the master's waiting_writes to be {n}")

    async def wait_converged(self) -> list[dict[str, Any]]:
        """Wait until every secondary that is up shows the master's list; return it."""

        async def same() -> list[dict[str, Any]] | None:
            want = await self.master.messages()
            for node in self.secondaries:
                if node.up and await node.api.messages() != want:
                    return None
            return want

        return await wait_for(same, "every secondary to show the master's list")

    async def stop(self, i: int) -> None:
        """Take secondary i down: close its server (its memory goes with it)."""
        node = self.secondaries[i]
        assert node.server is not None
        await node.server.close()
        node.server = None

    async def start(self, i: int) -> None:
        """Bring secondary i up on its port: a new, empty secondary app."""
        await self._start(self.secondaries[i])


MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


@pytest.fixture
async def make_cluster(aiohttp_server, session) -> MakeCluster:
    """Factory: make_cluster(secondaries=2, down=(indexes not started), wait=True, **MasterConfig fields).

    With wait, returns once the master accepts writes and sees every started secondary healthy.
    The heartbeat interval defaults to 0.05 s so that health is learnt fast.
    """

    async def start(node: Node) -> None:
        assert node.server is None
        node.server = await aiohttp_server(build_secondary_app(node.config), port=node.port, **SERVER_KW)

    async def serve_master(config: MasterConfig) -> Api:
        server = await aiohttp_server(build_master_app(config), **SERVER_KW)
        return Api(session, str(server.make_url("")).rstrip("/"))

    async def make(
        secondaries: int = 2,
        *,
        down: tuple[int, ...] = (),
        wait: bool = True,
        secondary_config: dict[str, Any] | None = None,
        **master_kw: Any,
    ) -> Cluster:
        nodes = []
        for i in range(secondaries):
            port = unused_port()
            url = f"http://127.0.0.1:{port}"
            node = Node(url, port, SecondaryConfig(port=port, **(secondary_config or {})), Api(session, url))
            if i not in down:
                await start(node)
            nodes.append(node)
        master_kw.setdefault("heartbeat_interval", 0.05)
        # A brand-new cluster each time: its master may take writes with secondaries still down.
        config = MasterConfig(secondaries=tuple(n.url for n in nodes), **{"new_cluster": True, **master_kw})
        cluster = Cluster(await serve_master(config), config, nodes, start, serve_master)
        if wait:
            await cluster.wait_status("ok")
            await cluster.wait_secondaries(*("healthy" if n.up else "unhealthy" for n in nodes))
        return cluster

    return make


@pytest.fixture
async def cluster(make_cluster: MakeCluster) -> Cluster:
    """A master and two healthy secondaries."""
    return await make_cluster()


@pytest.fixture
async def secondary(aiohttp_server, session) -> Callable[..., Awaitable[Api]]:
    """Factory: a secondary app on a test server, built from SecondaryConfig fields; returns its Api."""

    async def make(**config: Any) -> Api:
        server = await aiohttp_server(build_secondary_app(SecondaryConfig(**config)), **SERVER_KW)
        return Api(session, str(server.make_url("")).rstrip("/"))

    return make
