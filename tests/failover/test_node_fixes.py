"""`replog node` defects found in review, each pinned: a node that starts while nobody holds the leader key
refuses older masters (F4); a --etcd that answers 404 does not spin the lease loop (F6); every node serves
/readyz, /metrics and the dashboard for its current role (F3)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from replog.tools.cluster import Node, free_port, http_json, wait_until

TTL = 2


class _Fake(BaseHTTPRequestHandler):
    """Answers every GET and POST with the server's (status, body)."""

    def _answer(self) -> None:
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.server.hits += 1  # type: ignore[attr-defined]
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[Any]:
    """A plain HTTP server on a free port answering every request with server.answer (settable)."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Fake)
    server.answer = (404, {"message": "not found"})  # type: ignore[attr-defined]
    server.hits = 0  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_port}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def start_node(tmp_path: Path, etcd_url: str, name: str, cluster: str, *extra: str) -> Node:
    args = [
        *("--name", name, "--etcd", etcd_url, "--nodes", "3", "--cluster", cluster),
        *("--lease-ttl", str(TTL), "--heartbeat-interval", "0.2", *extra),
    ]
    node = Node("node", free_port(), args, tmp_path / f"{name}.log")
    node.start(wait=False)
    node.wait_listening()
    return node


def test_a_node_started_while_the_leader_key_is_vacant_refuses_an_older_master(
    tmp_path: Path, etcd: Any, fake_server: Any
) -> None:
    # A member with a more up-to-date log (a fake answering /health) keeps the node deferring instead of
    # campaigning, so the leader key stays vacant while the node serves as a fenced secondary.
    fake_server.answer = (
        200,
        {"incarnation": "fake", "seq": 10, "log": "fake-log", "promised": 5, "log_epoch": 5, "hash": "00" * 16,
         "at": 10, "at_hash": "00" * 16},
    )  # fmt: skip
    member = json.dumps({"name": "a-fake", "url": fake_server.url})
    status, _ = http_json(
        "POST", etcd.url + "/v3/kv/put", {"key": _b64("/replog/f4/members/a-fake"), "value": _b64(member)}
    )
    assert status == 200
    node = start_node(tmp_path, etcd.url, "n1", "f4")
    try:
        # Epoch 1 is older than any leader key that can still be created (the put above took revision 2).
        def promise() -> tuple[int, Any] | None:
            req = urllib_request(node.url + "/promise", {"Replog-Epoch": "1", "Replog-Master": "old-master"})
            return req if req[0] != 503 else None  # 503: not fenced yet (the leader key not read)

        status, body = wait_until(promise, timeout=15, interval=0.05, what="the node fenced")
        health = node.health()
        assert health["failover"]["role"] == "secondary" and health["failover"]["leader"] is None, health
        assert status == 409 and body["error"] == "stale_epoch", body
        batch = json.dumps({"log": "old-log", "entries": [], "prev": [0, "00" * 16]}).encode()
        replicate = urllib_request(node.url + "/replicate", {"Replog-Epoch": "1", "Replog-Master": "old-master"}, batch)
        assert replicate[0] == 409 and replicate[1]["error"] == "stale_epoch", replicate
        # Not ready while no master exists: an election is under way (F3).
        status, ready = _get(node.url + "/readyz")
        assert status == 503 and json.loads(ready)["reason"] == "candidate", ready
        assert node.health()["failover"]["role"] == "secondary"
    finally:
        node.kill()


def urllib_request(url: str, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, Any]:
    """POST body with headers; (status, decoded JSON)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    "message",
    ["Not Found", "etcdserver: requested lease not found"],
    ids=["plain-404", "lease-not-found"],
)
def test_an_etcd_url_answering_404_does_not_spin_the_lease_loop(tmp_path: Path, fake_server: Any, message: str) -> None:
    fake_server.answer = (404, {"code": 5, "message": message})
    node = start_node(tmp_path, fake_server.url, "n1", "f6")
    try:
        wait_until(lambda: fake_server.hits > 0, timeout=10, interval=0.05, what="the node asking for a lease")
        hits, cpu, lines = fake_server.hits, _cpu_seconds(node.proc.pid), _lines(node)  # type: ignore[union-attr]
        window = 3.0
        time.sleep(window)  # the measured window itself: what the node does in it, not a wait for a condition
        hits, cpu = fake_server.hits - hits, _cpu_seconds(node.proc.pid) - cpu  # type: ignore[union-attr]
        logged = _lines(node) - lines
        # A lease is asked for a few times a second at most (each call tries an endpoint twice).
        assert hits <= 40, f"{hits} etcd calls in {window}s"
        assert logged <= 12, f"{logged} log lines in {window}s"
        assert cpu < 0.5 * window, f"{cpu:.2f}s CPU in {window}s"
        assert node.running
    finally:
        node.kill()


def _lines(node: Node) -> int:
    with open(node.log_path, "rb") as f:
        return sum(1 for _ in f)


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    """GET url (with a bearer token, if given): (status, body as text)."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_every_node_serves_readyz_metrics_and_the_dashboard_for_its_role(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from replog.tools.failover import FailoverCluster

    key = "f3-cluster-key-0123456789"
    workdir = tmp_path / "fc"
    workdir.mkdir()
    (workdir / "tokens").write_text("read f3-read-token\n")
    tokens = ["--token-file", str(workdir / "tokens")]
    with FailoverCluster(3, lease_ttl=TTL, workdir=workdir, cluster_key=key, node_args=tokens) as cluster:
        master = cluster.wait_master()

        def all_ready() -> list[tuple[int, dict[str, Any]]] | None:
            found = [(s, json.loads(b)) for s, b in (_get(n.url + "/readyz") for n in cluster.nodes)]
            return found if all(s == 200 for s, _ in found) else None

        # Open, as on the static roles: a probe needs no token. (Secondaries are ready once they know a master.)
        ready = wait_until(all_ready, timeout=15, interval=0.1, what="every node ready")
        for node, (_, body) in zip(cluster.nodes, ready, strict=True):
            assert body["role"] == ("master" if node is master else "secondary"), body
        for node in cluster.nodes:
            role = "master" if node is master else "secondary"
            assert _get(node.url + "/metrics")[0] == 401  # guarded as a read, like the static roles' /metrics
            status, text = _get(node.url + "/metrics", token="f3-read-token")
            assert status == 200, text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            info = families["replog_node_info"].samples
            assert [s.labels["role"] for s in info] == [role], info
            assert "replog_log_entries" in families
            status, page = _get(node.url + "/")
            assert status == 200 and "<html" in page.lower(), page[:200]
        # The master's write counters are the ones of its role now.
        status, _ = cluster.post("hello", w=2)
        assert status == 201
        status, text = _get(master.url + "/metrics", token=key)
        writes = {f.name: f for f in text_string_to_metric_families(text)}["replog_writes"].samples
        assert any(s.labels.get("outcome") == "created" and s.value >= 1 for s in writes), writes


async def test_shutdown_waits_for_a_step_down_under_way(tmp_path: Path, etcd: Any) -> None:
    """F8: a node stopped while it steps down leaves no step-down running after it (nor its data dir locked)."""
    import asyncio

    from replog.datadir import open_log
    from replog.node import Node as ReplogNode
    from replog.node import NodeConfig

    data_dir = tmp_path / "n1"
    config = NodeConfig(
        name="n1",
        advertise=f"http://127.0.0.1:{free_port()}",
        etcd=(etcd.url,),
        nodes=1,
        cluster="f8",
        lease_ttl=TTL,
        data_dir=str(data_dir),
        fsync=False,
        heartbeat_interval=0.2,
    )
    node = ReplogNode(config)
    run = asyncio.create_task(node.run())
    deadline = asyncio.get_running_loop().time() + 15
    while node.master is None or node.master.recovering:
        assert not run.done() and asyncio.get_running_loop().time() < deadline, "no master in time"
        await asyncio.sleep(0.02)
    node._step_down_soon("test")  # a step-down begins (it rejoins as a secondary, reopening the data dir) ...
    stepping = node._stepping_down
    assert stepping is not None and not stepping.done()
    run.cancel()  # ... and the node is stopped before it is over
    await asyncio.gather(run, return_exceptions=True)
    assert stepping.done(), "the step-down outlived the node"
    assert stepping.exception() is None
    assert node.master is None
    opened = open_log(str(data_dir), fsync=False)  # the data dir's lock was released
    opened.disk.close()  # type: ignore[union-attr]
