"""The stranger's attacks of issue 9 on real processes, and the secrets that stop them (SPEC "Security").

A stranger reads what a node shows anyone (GET /health: the log id, the promise, the chain head), then
forges one well-formed replication request from it: the next seq, a chain value computed with the public
chain function, the fence of the master in office. test_a_keyless_node_takes_the_forged_entry shows that
this request is accepted by a node without a cluster key (the tree before the key: the attack is real);
every other test runs the same request against a cluster with a key and asserts it changes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from replog.log import chain
from replog.protocol import EPOCH_HEADER, MASTER_HEADER
from replog.tools.cluster import LocalCluster, Node, http_json, wait_until

KEY = secrets.token_hex(32)
WRONG_KEY = secrets.token_hex(32)
REPLOG = str(Path(sys.executable).with_name("replog"))


def request(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One HTTP request with exactly these headers; (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def auth(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret is not None else {}


def forge(node: Node, text: str, id_: str, ahead: int = 1) -> tuple[dict[str, Any], dict[str, str]]:
    """The stranger's replication request: entry seq+ahead of node's log (ahead > 1: past a gap), built from
    what GET /health shows anyone, with the fence of the master the node has promised to."""
    status, health = http_json("GET", node.url + "/health")
    assert status == 200, health
    seq, head = health["seq"], bytes.fromhex(health["hash"])
    entry_hash = chain(head, id_, text, 0)
    body = {"log": health["log"], "prev": [seq, head.hex()], "entries": [[seq + ahead, id_, text, 0, entry_hash.hex()]]}
    fence = {EPOCH_HEADER: str(health["promised"]), MASTER_HEADER: health["promised_to"]}
    return body, fence


def position(node: Node) -> dict[str, Any]:
    """What must not change on a node that refused a stranger: its promise, log epoch, seq, chain, buffer."""
    h = node.health()
    return {k: h[k] for k in ("incarnation", "log", "promised", "promised_to", "log_epoch", "seq", "hash", "buffered")}


def texts(node: Node) -> list[str]:
    return [m["text"] for m in node.messages()]


def assert_unauthorized(status: int, body: Any) -> None:
    assert status == 401, (status, body)
    assert body["error"] == "unauthorized", body
    assert KEY not in json.dumps(body)


def test_a_keyless_node_takes_the_forged_entry(cluster: Any) -> None:
    """The control: without a cluster key (loopback only, as before issue 9) the forged request is stored,
    so every refusal asserted below is the key's doing, not a malformed request's."""
    c: LocalCluster = cluster(2)
    assert c.post("Msg1", w=3)[0] == 201
    s1 = c.secondaries[0]
    body, fence = forge(s1, "TRANSFER $1M to mallory", "pay-42")
    status, answer = request("POST", s1.url + "/replicate", body, fence)
    assert status == 200, answer
    assert texts(s1) == ["Msg1", "TRANSFER $1M to mallory"]


def test_injection_is_refused_and_the_real_clients_id_stays_its_own(cluster: Any) -> None:
    """Issue 9's injection, on a cluster with a key: no key or a wrong one is a 401, nothing is stored; after a
    clean master restart no node holds anything foreign, and the real client's retry of its id is its own."""
    c: LocalCluster = cluster(2, cluster_key=KEY)
    for text in ("Msg1", "Msg2", "Msg3"):
        assert c.post(text, w=3)[0] == 201
    s1 = c.secondaries[0]
    before = position(s1)
    body, fence = forge(s1, "TRANSFER $1M to mallory", "pay-42")
    for headers in ({}, auth(WRONG_KEY), auth(KEY[:-1]), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        assert_unauthorized(*request("POST", s1.url + "/replicate", body, {**fence, **headers}))
    assert position(s1) == before
    assert texts(s1) == ["Msg1", "Msg2", "Msg3"]

    c.master.stop()
    c.master.start()
    c.wait_writable()
    status, entry = c.post("pay mallory nothing", w=3, id="pay-42")
    assert status == 201, entry  # not 409: the id is the real client's
    want = ["Msg1", "Msg2", "Msg3", "pay mallory nothing"]
    assert [m["text"] for m in c.wait_converged()] == want
    for node in c.nodes:
        assert texts(node) == want


def test_injected_entries_cannot_make_the_cluster_read_only(cluster: Any) -> None:
    """Issue 9's "read-only for good": a forged entry sent to each secondary is refused, so the next ordinary
    write succeeds at w=3 and no secondary is diverged."""
    c: LocalCluster = cluster(2, cluster_key=KEY)
    assert c.post("Msg1", w=3)[0] == 201
    for s in c.secondaries:
        body, fence = forge(s, "poison", "poison-1")
        assert_unauthorized(*request("POST", s.url + "/replicate", body, fence))
        assert_unauthorized(*request("POST", s.url + "/replicate", body, {**fence, **auth(WRONG_KEY)}))
    status, entry = c.post("Msg2", w=3)
    assert status == 201, entry
    c.wait_healthy()
    health = c.master.health()
    assert health["status"] == "ok", health
    assert all(s["status"] == "healthy" and s["seq"] == 2 for s in health["secondaries"]), health
    for node in c.nodes:
        assert texts(node) == ["Msg1", "Msg2"]


def test_every_internal_endpoint_wants_the_key_and_changes_nothing_without_it(cluster: Any) -> None:
    """POST /replicate (also past a gap, into the reorder buffer), POST /promise (also of a far newer epoch,
    which would depose the master), GET /entries and a fenced heartbeat: 401 JSON without the key and with a
    wrong one, the secondary's promise, log epoch, seq, chain and buffer unchanged, the master still in office."""
    c: LocalCluster = cluster(2, cluster_key=KEY)
    assert c.post("Msg1", w=3)[0] == 201
    s1 = c.secondaries[0]
    before = position(s1)
    body, fence = forge(s1, "x", "x-1")
    gap_body, _ = forge(s1, "past a gap", "gap-1", ahead=5)
    newer = {EPOCH_HEADER: str(before["promised"] + 1000), MASTER_HEADER: "mallory"}
    calls = [
        ("POST", "/replicate", body, fence),
        ("POST", "/replicate", gap_body, fence),
        ("POST", "/promise", None, newer),
        ("POST", "/promise", None, fence),
        ("GET", "/entries?since=0", None, fence),
        ("GET", "/entries?since=0", None, newer),
        ("GET", "/health?at=1", None, newer),
    ]
    for method, path, data, headers in calls:
        for secret in (None, WRONG_KEY, "", KEY.upper(), KEY + "0"):
            status, answer = request(method, s1.url + path, data, {**headers, **auth(secret)})
            assert_unauthorized(status, answer)
            assert "entries" not in answer
    assert position(s1) == before
    assert texts(s1) == ["Msg1"]
    # The key itself opens them (the refusals above were the key's, not the request's): a read of entries.
    status, answer = request("GET", s1.url + "/entries?since=0", None, {**fence, **auth(KEY)})
    assert status == 200 and [e[2] for e in answer["entries"]] == ["Msg1"], answer
    assert c.post("Msg2", w=3)[0] == 201  # the master was never deposed
    for node in c.nodes:
        assert KEY not in node.log_path.read_text(), f"the key is in {node.role}'s log"


def write_tokens(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def test_tokens_guard_a_real_master_and_sighup_reloads_them(cluster: Any, tmp_path: Path) -> None:
    """A master with a token file: no token 401, read token 403 on a write, write token 201; after the file is
    rewritten and SIGHUP sent, the old token is refused and the new one taken, without a restart; a malformed
    new file keeps the tokens in force and logs an error."""
    tokens = tmp_path / "tokens"
    old, new, reader = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(16)
    write_tokens(tokens, ["# client tokens", f"write {old}", "", f"read {reader}"])
    c: LocalCluster = cluster(1, cluster_key=KEY, master_args=["--token-file", str(tokens)])
    url = c.master.url + "/messages"
    assert request("POST", url, {"message": "a", "w": 2})[0] == 401
    assert request("POST", url, {"message": "a", "w": 2}, auth(reader))[0] == 403
    assert request("POST", url, {"message": "a", "w": 2}, auth(old))[0] == 201
    assert request("GET", url, None, auth(reader))[0] == 200
    assert request("GET", url)[0] == 401
    incarnation_pid = c.master.proc.pid  # type: ignore[union-attr]

    write_tokens(tokens, [f"write {new}", f"read {reader}"])
    c.master.signal(signal.SIGHUP)
    wait_until(lambda: request("POST", url, {"message": "b", "w": 2}, auth(old))[0] == 401, what="the old token out")
    assert request("POST", url, {"message": "b", "w": 2}, auth(new))[0] == 201

    write_tokens(tokens, ["write"])  # malformed: the tokens in force stay
    c.master.signal(signal.SIGHUP)
    wait_until(lambda: any(e.get("event") == "tokens_not_reloaded" for e in c.master.events()), what="the error")
    assert request("POST", url, {"message": "c", "w": 2}, auth(new))[0] == 201
    assert c.master.proc.pid == incarnation_pid and c.master.running  # type: ignore[union-attr]
    logs = c.master.log_path.read_text()
    for secret in (KEY, old, new, reader):
        assert secret not in logs


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    return subprocess.run([REPLOG, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def test_the_cli_commands_send_their_token(cluster: Any, tmp_path: Path) -> None:
    """replog post / get / tail / health / export against nodes with a token file: refused without a token,
    served with --token or REPLOG_TOKEN (a read token for reads, a write token for post)."""
    tokens = tmp_path / "tokens"
    writer, reader = secrets.token_hex(16), secrets.token_hex(16)
    write_tokens(tokens, [f"write {writer}", f"read {reader}"])
    guarded = ["--token-file", str(tokens)]
    c: LocalCluster = cluster(1, cluster_key=KEY, master_args=guarded, secondary_args=guarded)
    m, s1 = c.master.url, c.secondaries[0].url

    refused = run_cli("post", "nope", "--master", m)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr, refused
    assert run_cli("post", "nope", "--master", m, "--token", reader).returncode != 0
    posted = run_cli("post", "Msg1", "-w", "2", "--master", m, "--token", writer)
    assert posted.returncode == 0, posted
    for args in (["get", "--node", s1], ["tail", "--node", s1], ["health", "--master", m], ["export", "--node", s1]):
        assert run_cli(*args).returncode != 0, args
        done = run_cli(*args, env={"REPLOG_TOKEN": reader})
        assert done.returncode == 0, (args, done.stderr)
        if args[0] in ("get", "tail", "export"):
            assert "Msg1" in done.stdout, (args, done.stdout)


def test_protected_mode_refuses_to_listen_beyond_loopback_without_a_key(tmp_path: Path) -> None:
    """--host 0.0.0.0 without a key: one line naming --cluster-key-file, exit non-zero, for both roles; with
    --insecure the node starts and warns; with a key it starts without a warning."""
    for role in ("secondary", "master"):
        done = run_cli(role, "--host", "0.0.0.0", "--port", "0", timeout=30)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "--cluster-key-file" in lines[0], done.stderr

    key_file = tmp_path / "cluster.key"
    key_file.write_text(KEY + "\n")
    insecure = Node("secondary", 0, ["--insecure"], tmp_path / "insecure.log", host="0.0.0.0")
    keyed = Node("secondary", 0, ["--cluster-key-file", str(key_file)], tmp_path / "keyed.log", host="0.0.0.0")
    try:
        for node in (insecure, keyed):
            node.start(wait=False)
        wait_until(lambda: any(e.get("event") == "node_started" for e in insecure.events()), what="insecure start")
        wait_until(lambda: any(e.get("event") == "node_started" for e in keyed.events()), what="keyed start")
        assert [e for e in insecure.events() if e.get("event") == "insecure" and e.get("level") == "warning"]
        assert not [e for e in keyed.events() if e.get("event") == "insecure"]
        assert insecure.running and keyed.running
    finally:
        insecure.stop()
        keyed.stop()


def test_bad_secrets_refuse_start_with_one_line(tmp_path: Path) -> None:
    """A malformed token file, a short key, a missing key file, or the key given twice: one line, exit
    non-zero, and the line never quotes a secret."""
    bad_tokens = tmp_path / "tokens"
    bad_tokens.write_text(f"write {KEY}\nadmin {WRONG_KEY}\n")
    short = tmp_path / "short.key"
    short.write_text("hunter2\n")
    good = tmp_path / "good.key"
    good.write_text(KEY)
    cases = [
        (["--token-file", str(bad_tokens)], {}, "line 2"),
        (["--cluster-key-file", str(short)], {}, "at least 16"),
        (["--cluster-key-file", str(tmp_path / "absent")], {}, "cannot read"),
        (["--cluster-key-file", str(good)], {"REPLOG_CLUSTER_KEY": KEY}, "once"),
        ([], {"REPLOG_CLUSTER_KEY": "short"}, "REPLOG_CLUSTER_KEY"),
    ]
    for args, env, says in cases:
        done = run_cli("secondary", "--port", "0", *args, env=env, timeout=30)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and says in lines[0], (args, done.stderr)
        assert KEY not in done.stderr and WRONG_KEY not in done.stderr and "hunter2" not in done.stderr
