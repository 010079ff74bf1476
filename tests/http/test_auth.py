"""Who may call what (SPEC "Security"), on the real master and secondary apps: every client endpoint with no
token, a wrong one, a read token, a write token and the cluster key; every internal endpoint with client
tokens; and the nodes without secrets, whose every endpoint stays open."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from replog.auth import Guard, SecretError, is_loopback, parse_tokens
from replog.config import MasterConfig, SecondaryConfig
from replog.master_app import build_master_app
from replog.protocol import EPOCH_HEADER, MASTER_HEADER
from replog.secondary import build_secondary_app

KEY = secrets.token_hex(32)
WRITER = secrets.token_hex(16)
READER = secrets.token_hex(16)
FENCE = {EPOCH_HEADER: "1", MASTER_HEADER: "m1"}

# (method, path, headers, body) of each client endpoint, and what it needs: "read" or "write".
CLIENT_ENDPOINTS: list[tuple[str, str, str]] = [
    ("POST", "/messages", "write"),
    ("GET", "/messages", "read"),
    ("GET", "/messages?since=0&limit=1", "read"),
    ("GET", "/messages/stream", "read"),
    ("GET", "/health", "read"),
    ("GET", "/log", "read"),
    ("HEAD", "/messages", "read"),
]
INTERNAL_ENDPOINTS = [("POST", "/replicate"), ("POST", "/promise"), ("GET", "/entries"), ("GET", "/health?at=0")]
OPEN_ENDPOINTS = [("GET", "/livez"), ("GET", "/openapi.json"), ("GET", "/"), ("GET", "/ui/app.js")]


def bearer(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret is not None else {}


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"# the clients\nwrite {WRITER}\n\n   read {READER}   \n")
    return str(path)


async def serve(app: web.Application) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def master(token_file: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    config = MasterConfig(secondaries=(), cluster_key=KEY, token_file=token_file, new_cluster=True)
    async for pair in serve(build_master_app(config)):
        yield pair


@pytest.fixture
async def secondary(token_file: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async for pair in serve(build_secondary_app(SecondaryConfig(cluster_key=KEY, token_file=token_file))):
        yield pair


async def call(
    node: tuple[aiohttp.ClientSession, str], method: str, path: str, headers: dict[str, str]
) -> tuple[int, Any]:
    """Status and JSON body (None for a HEAD, a stream or the dashboard's files: only the status matters there)."""
    session, url = node
    body = b'{"message": "m", "w": 1}' if method == "POST" else None
    async with session.request(method, url + path, headers=headers, data=body) as resp:
        if method == "HEAD" or resp.content_type != "application/json":
            return resp.status, None
        return resp.status, await resp.json()


def expect(need: str, secret: str | None) -> int | None:
    """The refusal a caller presenting secret gets on an endpoint that needs need; None: let through."""
    if secret == KEY or secret == WRITER or (secret == READER and need == "read"):
        return None
    return 403 if secret == READER else 401


@pytest.mark.parametrize("role", ["master", "secondary"])
@pytest.mark.parametrize("method,path,need", CLIENT_ENDPOINTS)
async def test_client_endpoints_follow_the_token_roles(
    role: str, method: str, path: str, need: str, master: Any, secondary: Any
) -> None:
    node = master if role == "master" else secondary
    for secret in (None, "", "not-a-token", READER, WRITER, KEY, READER + WRITER):
        status, body = await call(node, method, path, bearer(secret))
        refusal = expect(need, secret)
        if refusal is None:
            assert status not in (401, 403), (secret, status, body)
        else:
            assert status == refusal, (secret, status, body)
            if body is not None:
                assert body["error"] == ("unauthorized" if refusal == 401 else "forbidden"), body
                assert body["detail"]


async def test_internal_endpoints_refuse_client_tokens(secondary: Any) -> None:
    """A write token is no cluster key: 401 on every internal endpoint, as without any secret (SPEC)."""
    for method, path in INTERNAL_ENDPOINTS:
        assert (await call(secondary, method, path, FENCE))[0] == 401
        status, body = await call(secondary, method, path, {**FENCE, **bearer(WRITER)})
        assert status == 401 and body["error"] == "unauthorized", (path, status, body)
        status, body = await call(secondary, method, path, {**FENCE, **bearer(KEY)})
        assert status not in (401, 403), (path, status, body)


@pytest.mark.parametrize("role", ["master", "secondary"])
async def test_probes_and_the_api_description_stay_open(role: str, master: Any, secondary: Any) -> None:
    for method, path in OPEN_ENDPOINTS:
        assert (await call(master if role == "master" else secondary, method, path, {}))[0] == 200


async def test_unknown_routes_are_404_for_anyone(secondary: Any) -> None:
    status, body = await call(secondary, "GET", "/nope", {})
    assert status == 404 and body["error"] == "not_found"


async def test_without_secrets_every_endpoint_is_open() -> None:
    """No key, no token file: the API of the tree before issue 9, loopback only (protected mode)."""
    async for node in serve(build_secondary_app(SecondaryConfig())):
        for method, path, _ in CLIENT_ENDPOINTS:
            assert (await call(node, method, path, {}))[0] not in (401, 403), path
        for method, path in INTERNAL_ENDPOINTS:
            assert (await call(node, method, path, FENCE))[0] not in (401, 403), path


def test_token_file_format() -> None:
    assert parse_tokens("# c\n\nwrite a1\nread  b2 \n", "f") == {b"a1": 2, b"b2": 1}
    for text, says in [
        ("write\n", "line 1"),
        ("write a b\n", "line 1"),
        ("admin a\n", "line 1"),
        ("# only comments\n\n", "holds no token"),
        ("write a\nread a\n", "line 2"),
        ("write caf\u00e9\n", "printable ASCII"),
    ]:
        with pytest.raises(SecretError, match=says):
            parse_tokens(text, "f")


def test_a_bad_reload_keeps_the_tokens_in_force(token_file: str) -> None:
    guard = Guard(KEY, token_file)
    Path(token_file).write_text("read\n")
    assert guard.reload() is False
    assert guard.grant(f"Bearer {WRITER}") == 2
    Path(token_file).write_text(f"read {WRITER}\n")
    assert guard.reload() is True
    assert guard.grant(f"Bearer {WRITER}") == 1 and guard.grant(f"Bearer {READER}") is None
    assert KEY not in repr(guard) and KEY not in repr(MasterConfig(cluster_key=KEY))


@pytest.mark.parametrize(
    "host,loopback",
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_a_token_file_without_a_key_leaves_the_masters_calls_open(token_file: str) -> None:
    """The master's position read (?at=, unfenced at start-up) and heartbeat are internal: with no cluster key
    they need nothing, even on a secondary whose client API asks for tokens."""
    async for node in serve(build_secondary_app(SecondaryConfig(token_file=token_file))):
        assert (await call(node, "GET", "/health?at=0", {}))[0] == 200
        assert (await call(node, "GET", "/health", FENCE))[0] == 200
        assert (await call(node, "GET", "/health", {}))[0] == 401
