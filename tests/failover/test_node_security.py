"""`replog node` under the cluster key (SPEC "Security", "Automatic failover (etcd)"): a real etcd and three
real node processes (replog.tools.failover.FailoverCluster) started with --cluster-key-file.

The nodes' own calls to each other (promises, replication, heartbeats, recovery reads, a candidate's position
reads) must present the key, or no master could ever take a w=majority write; a stranger's forged internal
request is refused before it is read. One cluster serves the module's tests, in order: the SIGKILL is last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from replog.protocol import EPOCH_HEADER, MASTER_HEADER
from replog.tools.cluster import ClusterTls, Node, free_port, wait_until
from replog.tools.failover import FailoverCluster

KEY = "node-security-test-key-0123456789"
WRONG = "another-key-of-the-same-length-00"
READ_TOKEN = "read-token-of-the-keyed-cluster"
WRITE_TOKEN = "write-token-given-by-a-reload"


@pytest.fixture(scope="module")
def fc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailoverCluster]:
    workdir = tmp_path_factory.mktemp("keyed")
    (workdir / "tokens").write_text(f"read {READ_TOKEN}\n")
    tokens = ["--token-file", str(workdir / "tokens")]
    # The harness's own calls present the key, which is good wherever a token is.
    cluster = FailoverCluster(3, lease_ttl=2, workdir=workdir, cluster_key=KEY, node_args=tokens)
    try:
        cluster.start(timeout=30)
        yield cluster
    except BaseException:
        print(cluster.tails())
        raise
    finally:
        cluster.cleanup()


def raw(method: str, url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    """One request with exactly these headers (a forger's); (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def state(node: Node) -> dict[str, Any]:
    """What a forged internal request would change on a node: its role, promise, log and position."""
    h = node.health()
    fields = ("role", "promised", "promised_to", "log_epoch", "log", "seq", "hash", "incarnation")
    return {k: h.get(k) for k in fields} | {"leader": h["failover"]["leader"]}


def test_a_keyed_failover_cluster_elects_a_master_and_takes_majority_writes(fc: FailoverCluster) -> None:
    master = fc.wait_master()
    for i in range(5):
        status, body = fc.post(f"keyed-{i}", w="majority", timeout=10)
        assert status == 201, body
        assert body["acks"] >= 2
    converged = fc.wait_converged(timeout=15)
    assert [m["text"] for m in converged][-5:] == [f"keyed-{i}" for i in range(5)]
    assert fc.master() is master


@pytest.mark.parametrize("credential", [None, WRONG], ids=["no-key", "wrong-key"])
def test_forged_internal_requests_to_a_keyed_node_are_refused_and_change_nothing(
    fc: FailoverCluster, credential: str | None
) -> None:
    master = fc.wait_master()
    secondary = next(n for n in fc.nodes if n is not master)
    epoch = master.health()["failover"]["leader"]["epoch"]
    # A newer epoch than the cluster's: without the guard, /promise would be kept and depose the master,
    # /replicate would store the entry, /rollback would truncate the log.
    headers = {EPOCH_HEADER: str(epoch + 1000), MASTER_HEADER: "forger"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    entry = {"entries": [{"seq": 1, "id": "x", "text": "forged", "ts": 1, "hash": "00" * 32}]}
    forged = [
        ("/promise", {}),
        ("/replicate", entry),
        ("/rollback", {"keep": 0, "hash": "00" * 32}),
    ]
    for target in (secondary, master):
        before = state(target)
        for path, body in forged:
            status, answer = raw("POST", target.url + path, body, headers)
            assert status == 401, (target.url, path, status, answer)
            assert answer["error"] == "unauthorized"
        assert state(target) == before, target.url
    assert fc.master() is master
    assert "forged" not in {m["text"] for m in master.messages()}


def test_a_keyed_node_guards_its_client_api_with_tokens_reloaded_on_sighup(fc: FailoverCluster) -> None:
    master = fc.wait_master()
    write = {"message": "by-token", "w": "majority"}
    assert raw("GET", master.url + "/messages", None, {})[0] == 401
    assert raw("GET", master.url + "/messages", None, {"Authorization": f"Bearer {READ_TOKEN}"})[0] == 200
    assert raw("POST", master.url + "/messages", write, {"Authorization": f"Bearer {READ_TOKEN}"})[0] == 403
    assert raw("POST", master.url + "/messages", write, {"Authorization": f"Bearer {WRITE_TOKEN}"})[0] == 401
    assert raw("GET", master.url + "/livez", None, {})[0] == 200  # probes stay open
    (fc.workdir / "tokens").write_text(f"read {READ_TOKEN}\nwrite {WRITE_TOKEN}\n")
    for node in fc.nodes:
        node.signal(signal.SIGHUP)
    wait_until(
        lambda: raw("POST", master.url + "/messages", write, {"Authorization": f"Bearer {WRITE_TOKEN}"})[0] == 201,
        10,
        what="the reloaded write token to be taken",
    )


def test_a_sigkilled_master_of_a_keyed_cluster_is_replaced_and_keeps_the_acked_writes(fc: FailoverCluster) -> None:
    old = fc.wait_master()
    acked: dict[int, str] = {}
    for i in range(5):
        status, body = fc.post(f"before-kill-{i}", w="majority", timeout=10)
        assert status == 201, body
        acked[body["seq"]] = f"before-kill-{i}"
    fc.kill(old)
    new = fc.wait_master(timeout=20, exclude=[old])
    status, body = fc.post("after-kill", w="majority", timeout=20)
    assert status == 201, body
    acked[body["seq"]] = "after-kill"
    listed = {m["seq"]: m["text"] for m in fc.wait_converged(timeout=20, nodes=[n for n in fc.nodes if n is not old])}
    assert {seq: listed.get(seq) for seq in acked} == acked
    assert fc.master() is new


def test_a_keyed_failover_cluster_over_mutual_tls_takes_majority_writes(tmp_path: Path) -> None:
    """Every node verifies the others with --tls-ca (a throwaway CA the system does not trust) and presents
    its --tls-cert to their internal endpoints (--tls-client-ca): otherwise no promise majority, no master."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tls = ClusterTls(str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), mutual=True)
    cluster = FailoverCluster(3, lease_ttl=2, workdir=tmp_path / "fc", cluster_key=KEY, tls=tls)
    try:
        cluster.start(timeout=30)
        master = cluster.wait_master()
        assert master.url.startswith("https://")
        status, body = cluster.post("over-tls", w="majority", timeout=10)
        assert status == 201 and body["acks"] >= 2, body
    except BaseException:
        print(cluster.tails())
        raise
    finally:
        cluster.cleanup()


def test_replog_node_beyond_loopback_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    port = free_port()
    args = ["--host", "0.0.0.0", "--port", str(port), "--name", "n1", "--advertise", f"http://127.0.0.1:{port}"]
    args += ["--etcd", "http://127.0.0.1:9", "--nodes", "3", "--data-dir", str(tmp_path / "n1")]
    done = subprocess.run(
        [sys.executable, "-m", "replog", "node", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1, done.stderr
    assert "--cluster-key-file" in done.stderr and "0.0.0.0" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # The refusal is protected mode, not some other error: with --insecure the same node starts.
    node = Node("node", port, [*args[4:], "--insecure"], tmp_path / "n1.log", "0.0.0.0")
    node.url = f"http://127.0.0.1:{port}"
    try:
        node.start(wait=False)
        wait_until(lambda: '"insecure"' in node.log_path.read_text(), 15, what="the node's insecure warning")
    finally:
        node.stop()
