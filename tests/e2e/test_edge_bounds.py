"""The connection gate under TLS and under a flood of client streams, on real processes.

- A TLS node counts a connection from its TCP accept, before the handshake: hundreds of connections that never
  start one cannot run it out of descriptors, and /livez over TLS keeps answering.
- Client requests hold at most 90% of --max-connections and a master's connections are never displaced: a
  secondary flooded with streams stays healthy to its master, w=2 writes succeed, excess streams get 503.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from replog.tools.cluster import ClusterTls, Node, http_json, wait_until

pytestmark = [
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc"),
    pytest.mark.usefixtures("enough_descriptors"),
]

NOFILE = 600  # the TLS secondary's hard descriptor limit
SILENT = 700  # TCP connections that never start a handshake: more than NOFILE


class LimitedNode(Node):
    """A node started with a hard descriptor limit of NOFILE (as tests/e2e/test_bounds.py's)."""

    def command(self) -> list[str]:
        cmd = super().command()  # [python, -m, replog, role, ...]
        boot = (
            f"import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
            "from replog.cli import main; main(prog_name='replog')"
        )
        return [cmd[0], "-c", boot, *cmd[3:]]


@dataclass(frozen=True)
class Pki:
    ca: str
    cert: str
    key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d: Path = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(d / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return Pki(str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_silent_tcp_connections_never_run_a_tls_node_out_of_descriptors(cluster: Any, pki: Pki) -> None:
    c = cluster(1, tls=ClusterTls(pki.ca, pki.cert, pki.key), secondary_args=["--max-connections", "50"], start=False)
    secondary = c.secondaries[0]
    secondary.__class__ = LimitedNode
    c.start()
    c.wait_healthy()
    assert secondary.proc is not None
    pid = secondary.proc.pid
    peak = 0
    socks: list[socket.socket] = []
    try:
        for _ in range(SILENT):
            socks.append(socket.create_connection(("127.0.0.1", secondary.port), timeout=5))
            if len(socks) % 50 == 0:
                peak = max(peak, fds(pid))
        # Every connection accepted (or dropped): none waits in the kernel queue any more.
        wait_until(lambda: not _queued(secondary.port), 10, what="the secondary to accept every connection")
        peak = max(peak, fds(pid))
        started = time.monotonic()
        status, body = http_json("GET", secondary.url + "/livez", timeout=5, context=secondary.ssl_context)
        assert status == 200, body
        assert time.monotonic() - started < 3
        peak = max(peak, fds(pid))
        status, body = c.post("beside-silent-connections", w=2)
        assert status == 201, body
    finally:
        for s in socks:
            s.close()
    assert peak < 200, f"the TLS secondary held {peak} descriptors with --max-connections 50"


def _queued(port: int) -> int:
    """Connections waiting in the kernel's accept queue of the listener on port (from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, state, queues = parts[1], parts[3], parts[4]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return int(queues.split(":")[1], 16)
    return 0


def _first_line(s: socket.socket, deadline: float) -> bytes:
    """The status line the node answered on s, or b"" if it closed s first."""
    got = b""
    with selectors.DefaultSelector() as sel:
        sel.register(s, selectors.EVENT_READ)
        while b"\r\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no answer in time: {got!r}")
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return b""
            if not chunk:
                return b""
            got += chunk
    return got.split(b"\r\n", 1)[0]


def test_a_flood_of_client_streams_never_cuts_a_secondary_off_its_master(cluster: Any) -> None:
    c = cluster(1, secondary_args=["--max-connections", "20"])
    c.wait_healthy()
    secondary = c.secondaries[0]
    status, body = c.post("before", w=2)
    assert status == 201, body
    streams: list[socket.socket] = []
    answers: list[bytes] = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", secondary.port), timeout=5)
            s.sendall(b"GET /messages/stream HTTP/1.1\r\nHost: replog\r\n\r\n")
            streams.append(s)
            answers.append(_first_line(s, time.monotonic() + 5))
        streaming = sum(1 for a in answers if a.startswith(b"HTTP/1.1 200"))
        refused = sum(1 for a in answers if a.startswith(b"HTTP/1.1 503"))
        assert streaming == 18, answers  # 90% of 20: the rest stays free for the master
        assert refused == 40 - streaming, answers
        for i in range(10):
            status, body = c.post(f"during-{i}", w=2, timeout=10)
            assert status == 201, body
            states = [s["status"] for s in c.master.health()["secondaries"]]
            assert states == ["healthy"], states
    finally:
        for s in streams:
            s.close()
    want = ["before", *(f"during-{i}" for i in range(10))]
    wait_until(lambda: secondary.texts() == want, 10, what="the secondary to hold every write")
