"""`replog node` against a secured etcd (SPEC "Security", "Automatic failover (etcd)"): etcd's authentication
(a `replog` user whose role may read and write /replog/ only) and TLS (a trustme CA; etcd asks every client for
a certificate). Real etcd processes and real node processes, one single-node cluster (`--nodes 1`) each.

A node with the right credentials registers, wins the leader key and takes writes; one with a wrong password,
no credentials, a CA that did not sign etcd's certificate, or no client certificate stops at start with one
`Error:` line naming the flag. Tokens: etcd forgets its simple tokens when it restarts, and the node gets a new
one and carries on (shown end to end and, on the coordinator alone, call by call).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from click.testing import CliRunner

from replog.cli import main
from replog.coordinator import Coordinator, EtcdAuthError
from replog.tools.cluster import Node, free_port, http_json, wait_until
from replog.tools.etcd import EtcdServer, EtcdTls

PASSWORD = "etcd-password-of-the-replog-user"
ROOT_PASSWORD = "etcd-root-password-never-given-to-nodes"
TTL = 5  # long enough that an etcd restart does not cost the master its lease deadline


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd with authentication on: root, and `replog` with readwrite on /replog/ only."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd-auth"), name="auth", extra_args=("--unsafe-no-fsync",))
    try:
        server.start()
        server.enable_auth("replog", PASSWORD, root_password=ROOT_PASSWORD)
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: etcd's CA, a CA that signed nothing of etcd's, etcd's certificate, a node's client certificate."""
    d = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("replog-node")
    files = {
        "ca": ca.cert_pem,
        "other_ca": stranger.cert_pem,
        "server": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        blob.write_to_path(str(d / f"{name}.pem"))
        paths[name] = str(d / f"{name}.pem")
    return paths


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, str]) -> Iterator[EtcdServer]:
    """An etcd serving https:// only, that wants a client certificate its CA signed (--client-cert-auth)."""
    tls = EtcdTls(
        pki["server"], pki["server_key"], pki["ca"], True, client_cert=pki["client"], client_key=pki["client_key"]
    )
    server = EtcdServer(tmp_path_factory.mktemp("etcd-tls"), name="tls", extra_args=("--unsafe-no-fsync",), tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.kill()


def node_args(name: str, etcd: EtcdServer, cluster: str, data_dir: Path) -> list[str]:
    return [
        *("--name", name, "--etcd", etcd.url, "--nodes", "1", "--cluster", cluster),
        *("--lease-ttl", str(TTL), "--heartbeat-interval", "0.2", "--data-dir", str(data_dir), "--fsync", "never"),
    ]


def start_node(tmp_path: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> Node:
    port = free_port()
    node = Node("node", port, [*args, "--advertise", f"http://127.0.0.1:{port}"], tmp_path / f"{name}.log", env=env)
    node.start(wait=True)
    return node


def wait_master(node: Node) -> dict[str, Any]:
    def taking_writes() -> dict[str, Any] | None:
        try:
            health = node.health(timeout=1.0)
        except OSError:
            return None
        ok = health.get("role") == "master" and health.get("status") == "ok" and not health.get("recovering")
        return health if ok else None

    try:
        return wait_until(taking_writes, timeout=20, interval=0.1, what=f"{node.url} to take writes")
    except Exception:
        print(node.tail())
        raise


def refused(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run `replog node` that must not start: its one stderr line (checked: `Error:`, no traceback)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    proc = subprocess.run(
        [sys.executable, "-m", "replog", "node", "--port", str(free_port()), "--log-format", "json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def post(node: Node, text: str) -> dict[str, Any]:
    status, body = http_json("POST", node.url + "/messages", {"message": text, "w": "majority"}, timeout=10)
    assert status == 201, body
    return body


# -- etcd's authentication ------------------------------------------------------------------------------


def test_a_node_with_the_etcd_user_is_master_and_gets_a_new_token_when_etcd_restarts(
    tmp_path: Path, auth_etcd: EtcdServer
) -> None:
    (tmp_path / "etcd-password").write_text(PASSWORD + "\n")
    args = node_args("a", auth_etcd, "auth", tmp_path / "a")
    node = start_node(
        tmp_path, "a", [*args, "--etcd-user", "replog", "--etcd-password-file", str(tmp_path / "etcd-password")]
    )
    try:
        health = wait_master(node)
        post(node, "with a token")
        # Its keys are in etcd (read as root here): the member key and the leader key, under its lease.
        keys = {kv.key for kv in auth_etcd.range("/replog/auth/")}
        assert keys == {"/replog/auth/members/a", "/replog/auth/leader"}, keys
        epoch = health["failover"]["leader"]["epoch"]

        # etcd keeps simple tokens in memory: after a restart the node's token is refused, and it must
        # authenticate again -- or it could no longer read the leader key nor register.
        auth_etcd.restart()

        def authentications() -> int:
            return len([e for e in node.events() if e.get("event") == "etcd_authenticated"])

        wait_until(lambda: authentications() >= 2, timeout=10, what="the node to authenticate again")
        post(node, "after etcd restarted")
        assert node.health()["failover"]["leader"]["epoch"] == epoch  # still the same master, lease kept
        assert node.texts() == ["with a token", "after etcd restarted"]
        assert PASSWORD not in node.log_path.read_text()  # never logged
    finally:
        node.kill()


def test_a_wrong_password_or_no_credentials_stop_the_node_at_start(tmp_path: Path, auth_etcd: EtcdServer) -> None:
    args = node_args("b", auth_etcd, "auth-refused", tmp_path / "b")
    line = refused([*args, "--etcd-user", "replog"], env={"REPLOG_ETCD_PASSWORD": "not-the-password"})
    assert "--etcd-user replog" in line and "authentication failed" in line, line
    assert "not-the-password" not in line

    line = refused(args)
    assert "etcd requires authentication" in line and "--etcd-user" in line, line

    # The root's password is no way in either: the refusal names the user and the flag to fix.
    line = refused([*args, "--etcd-user", "root"], env={"REPLOG_ETCD_PASSWORD": PASSWORD})
    assert "--etcd-user root" in line, line
    # A user etcd knows, but whose role does not cover /replog/.
    auth_etcd.add_user("elsewhere", PASSWORD, "/other/")
    line = refused([*args, "--etcd-user", "elsewhere"], env={"REPLOG_ETCD_PASSWORD": PASSWORD})
    assert "--etcd-user elsewhere may not read and write /replog/auth-refused/" in line, line
    # Nothing of the refused nodes reached etcd.
    assert auth_etcd.range("/replog/auth-refused/") == []


async def test_the_coordinator_authenticates_again_once_when_etcd_forgets_its_token(auth_etcd: EtcdServer) -> None:
    async with aiohttp.ClientSession() as session:
        c = Coordinator(session, [auth_etcd.url], "component", user="replog", password=PASSWORD)
        await c.grant(TTL)
        await c.register("m", "http://127.0.0.1:1")
        assert c.authentications == 1
        auth_etcd.restart()  # simple tokens live in etcd's memory: this one is gone
        assert set(await c.members()) == {"m"}  # refused once, authenticated again, repeated
        assert c.authentications == 2
        assert set(await c.members()) == {"m"}
        assert c.authentications == 2  # the new token holds

        # The token is what lets it in: without one, etcd refuses; with a wrong password, so does authenticate.
        anonymous = Coordinator(session, [auth_etcd.url], "component")
        with pytest.raises(EtcdAuthError, match="user name is empty"):
            await anonymous.members()
        wrong = Coordinator(session, [auth_etcd.url], "component", user="replog", password="wrong")
        with pytest.raises(EtcdAuthError, match="authentication failed"):
            await wrong.members()
        await c.revoke()


# -- TLS to etcd ----------------------------------------------------------------------------------------


def test_a_node_reaches_etcd_over_mutual_tls(tmp_path: Path, tls_etcd: EtcdServer, pki: dict[str, str]) -> None:
    assert tls_etcd.url.startswith("https://")
    args = node_args("t", tls_etcd, "tls", tmp_path / "t")
    tls = ["--etcd-cert", pki["client"], "--etcd-key", pki["client_key"]]
    node = start_node(tmp_path, "t", [*args, *tls], env={"REPLOG_ETCD_CA": pki["ca"]})
    try:
        wait_master(node)
        post(node, "over tls")
        assert {kv.key for kv in tls_etcd.range("/replog/tls/")} == {"/replog/tls/members/t", "/replog/tls/leader"}
    finally:
        node.kill()


def test_an_etcd_certificate_or_client_certificate_that_does_not_fit_stops_the_node(
    tmp_path: Path, tls_etcd: EtcdServer, pki: dict[str, str]
) -> None:
    args = node_args("u", tls_etcd, "tls-refused", tmp_path / "u")
    client = ["--etcd-cert", pki["client"], "--etcd-key", pki["client_key"]]
    line = refused([*args, "--etcd-ca", pki["other_ca"], *client])
    assert "does not verify against --etcd-ca" in line and "certificate verify failed" in line, line
    line = refused([*args, *client])  # no --etcd-ca: the system's CAs know nothing of this one
    assert "does not verify against --etcd-ca (not given" in line, line
    line = refused([*args, "--etcd-ca", pki["ca"]])  # etcd wants a client certificate
    assert "--etcd-cert/--etcd-key" in line, line
    # A user for an etcd whose authentication is off would protect nothing: said, not ignored.
    line = refused([*args, "--etcd-ca", pki["ca"], *client, "--etcd-user", "replog"], {"REPLOG_ETCD_PASSWORD": "x"})
    assert "authentication is not enabled" in line, line
    assert tls_etcd.range("/replog/tls-refused/") == []


def test_options_that_cannot_work_are_refused_before_etcd_is_asked(tmp_path: Path, pki: dict[str, str]) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["node", "--name", "a", "--nodes", "1", *args], env=env)
        return result.exit_code, result.output

    code, out = run("--etcd", "http://127.0.0.1:1", "--etcd-ca", pki["ca"])
    assert code == 2 and "apply to https:// etcd URLs" in out, out
    code, out = run("--etcd", "https://127.0.0.1:1", "--etcd-cert", pki["client"])
    assert code == 1 and "--etcd-cert and --etcd-key go together" in out, out
    code, out = run("--etcd", "https://127.0.0.1:1", "--etcd-ca", str(tmp_path / "missing.pem"))
    assert code == 1 and "--etcd-ca: no such file" in out, out
    code, out = run("--etcd", "http://127.0.0.1:1", "--etcd-user", "replog")
    assert code == 2 and "--etcd-user" in out and "needs a password" in out, out
    (tmp_path / "pw").write_text("secret-pw\n")
    code, out = run(
        "--etcd",
        "http://127.0.0.1:1",
        "--etcd-user",
        "replog",
        "--etcd-password-file",
        str(tmp_path / "pw"),
        env={"REPLOG_ETCD_PASSWORD": "secret-pw"},
    )
    assert code == 1 and "give the etcd password once" in out and "secret-pw" not in out, out
