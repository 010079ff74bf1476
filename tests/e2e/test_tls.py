"""A whole cluster over TLS, on real processes, with certificates from a throwaway CA (trustme).

Every node serves HTTPS; the master verifies its secondaries against --tls-ca; clients verify with --ca.
A node whose certificate another CA signed is refused: the master never counts it, and a client that
trusts another CA gets one clear error. With --tls-client-ca, internal endpoints also want the caller's
certificate (mutual TLS), while clients still read without one. Bad TLS files refuse to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from replog.client import Client, ReplogError
from replog.tools.cluster import ClusterError, ClusterTls, http_json, wait_until


@dataclass(frozen=True)
class Pki:
    ca: str  # the cluster's CA
    cert: str  # a node certificate for 127.0.0.1 and localhost, signed by ca ...
    key: str
    other_ca: str  # another CA
    other_cert: str  # ... and one signed by the other CA
    other_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    files: list[str] = []
    for name in ("ours", "other"):
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(d / f"{name}-ca.pem"))
        leaf.private_key_pem.write_to_path(str(d / f"{name}-key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(d / f"{name}-cert.pem"))
        files += [str(d / f"{name}-ca.pem"), str(d / f"{name}-cert.pem"), str(d / f"{name}-key.pem")]
    return Pki(*files)


def tls(pki: Pki, **kw: object) -> ClusterTls:
    return ClusterTls(pki.ca, pki.cert, pki.key, **kw)  # type: ignore[arg-type]


def replog(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    return subprocess.run(
        [sys.executable, "-m", "replog", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_a_cluster_over_tls_takes_writes_at_every_w_and_a_restarted_secondary_catches_up(cluster, pki):
    c = cluster(2, tls=tls(pki))
    assert c.master.url.startswith("https://") and all(s.url.startswith("https://") for s in c.secondaries)
    c.wait_healthy()
    for w in (1, 2, 3):
        status, body = c.post(f"w{w}", w=w)
        assert status == 201 and body["acks"] >= w, body
    c.wait_converged()

    s1 = c.secondaries[0]
    s1.stop()
    for i in range(5):
        status, body = c.post(f"while-down-{i}", w=2)
        assert status == 201, body
    s1.start()
    want = [f"w{w}" for w in (1, 2, 3)] + [f"while-down-{i}" for i in range(5)]
    wait_until(lambda: s1.texts() == want, 20, what="the restarted secondary to catch up over TLS")
    status, body = c.post("after", w=3)
    assert status == 201 and body["acks"] == 3, body

    async def through_the_client() -> list[str]:
        async with Client(c.master.url, ca=pki.ca, retry_for=5) as log:
            await log.append("from the client", w=3)
            return [e.text for e in await log.read()]

    assert asyncio.run(through_the_client())[-2:] == ["after", "from the client"]
    got = replog("get", "--node", s1.url, "--ca", pki.ca)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1].split("\t")[-1] == "from the client"
    exported = replog("export", "--node", s1.url, "--ca", pki.ca)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout.splitlines()[-1])["text"] == "from the client"
    refused = replog("export", "--node", s1.url, "--ca", pki.other_ca)
    assert refused.returncode == 1 and "certificate" in refused.stderr, refused.stderr


def test_a_secondary_whose_certificate_another_ca_signed_is_never_counted(cluster, pki):
    # A brand-new cluster: the master's own vote and the first secondary's promise are a majority.
    c = cluster(
        2, tls=tls(pki, node_certs={2: (pki.other_cert, pki.other_key, pki.other_ca)}), master_args=["--new-cluster"]
    )
    status, body = c.post("reaches two", w=2)
    assert status == 201, body
    write = {"message": "needs three", "w": 3, "timeout": 1.5}
    status, body = http_json("POST", c.master.url + "/messages", write, context=c.master.ssl_context)
    assert status == 504 and body["acks"] == 2, body
    rows = {s["url"]: s for s in c.master.health()["secondaries"]}
    assert rows[c.secondaries[1].url]["status"] != "healthy", rows
    assert rows[c.secondaries[1].url]["seq"] == 0 and rows[c.secondaries[1].url]["last_contact"] is None, rows
    # It runs and serves its own (other-CA) certificate: nothing reached it.
    assert c.secondaries[1].messages() == []


def test_a_client_that_trusts_another_ca_fails_with_one_clear_error(cluster, pki):
    c = cluster(1, tls=tls(pki))

    async def append() -> None:
        async with Client(c.master.url, ca=pki.other_ca, retry_for=0) as log:
            await log.append("never stored")

    with pytest.raises(ReplogError, match="certificate verify failed"):
        asyncio.run(append())
    got = replog("post", "never stored", "--master", c.master.url, "--ca", pki.other_ca)
    assert got.returncode == 1
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "certificate" in lines[0], got.stderr
    with pytest.raises(OSError):
        http_json("GET", c.master.url + "/messages", context=ssl.create_default_context(cafile=pki.other_ca))
    assert c.master.messages() == []


def test_mutual_tls_internal_endpoints_want_the_masters_certificate_clients_need_none(cluster, pki):
    c = cluster(2, tls=tls(pki, mutual=True))
    c.wait_healthy()
    status, body = c.post("both hold it", w=3)
    assert status == 201 and body["acks"] == 3, body
    s1 = c.secondaries[0]
    before = s1.health()
    # A caller that verifies the node but presents no certificate: reads yes, internal endpoints no.
    status, data = http_json("GET", s1.url + "/messages", context=s1.ssl_context)
    assert status == 200 and [m["text"] for m in data["messages"]] == ["both hold it"]
    for method, path, body_ in (("POST", "/replicate", {}), ("POST", "/promise", None), ("GET", "/entries", None)):
        status, data = http_json(method, s1.url + path, body_, context=s1.ssl_context)
        assert status == 403 and data["error"] == "client_certificate_required", (path, data)
    after = s1.health()
    assert {k: after[k] for k in ("seq", "promised", "promised_to")} == {
        k: before[k] for k in ("seq", "promised", "promised_to")
    }
    # A certificate of another CA does not get through the handshake at all.
    rogue = ssl.create_default_context(cafile=pki.ca)
    rogue.load_cert_chain(pki.other_cert, pki.other_key)
    with pytest.raises(OSError):
        http_json("POST", s1.url + "/replicate", {}, context=rogue)


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (lambda p, d: ["--tls-cert", str(d / "missing.pem"), "--tls-key", p.key], "no such file"),
        (lambda p, d: ["--tls-cert", p.cert, "--tls-key", p.other_key], "does not match"),
        (lambda p, d: ["--tls-cert", p.cert], "--tls-key"),
        (lambda p, d: ["--tls-cert", p.cert, "--tls-key", p.key, "--tls-ca", p.key], "--tls-ca"),
    ],
    ids=["missing-cert", "key-mismatch", "no-key", "ca-not-a-ca"],
)
def test_bad_tls_files_refuse_to_start_with_one_line(pki, tmp_path: Path, files, says):
    got = replog("secondary", "--port", "0", *files(pki, tmp_path), timeout=20)
    assert got.returncode != 0
    lines = [ln for ln in got.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("Error:") and says in lines[0], got.stderr


def test_cluster_tooling_reaches_tls_nodes_only_with_the_ca(cluster, pki):
    c = cluster(1, tls=tls(pki))
    plain = ssl.create_default_context()  # the system's CAs: the test CA is not among them
    with pytest.raises((OSError, ClusterError)):
        http_json("GET", c.master.url + "/health", context=plain)


def test_on_uvloop_every_fresh_connection_completes_its_handshake(cluster, pki):
    """`--loop uvloop` (the `fast` extra) starts reading a connection as soon as it is accepted: the client's
    first handshake bytes must reach the TLS layer, not be taken for request bytes (which left the handshake
    waiting until the read timeout dropped it)."""
    loop = ["--loop", "uvloop"]
    c = cluster(2, tls=tls(pki), master_args=loop, secondary_args=loop)
    c.wait_healthy()
    context = ssl.create_default_context(cafile=pki.ca)
    for node in (c.master, *c.secondaries):
        for _ in range(30):  # a new connection (and handshake) each, each given 2 s
            status, body = http_json("GET", node.url + "/health", context=context, timeout=2.0)
            assert status == 200, body
    status, body = c.post("on uvloop", w=3)
    assert status == 201 and body["acks"] == 3, body
