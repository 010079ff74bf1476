"""Bounded by default, on real processes: no client can take a node's descriptors or memory.

- Half-open connections (a request line, then nothing) do not starve the master, even when its descriptor
  limit is low: it holds at most --max-connections, displaces the longest-waiting idle one at the cap,
  and drops heads and bodies that stall past --read-timeout with a JSON 408.
- 2,000 idle and 2,000 slow connections, renewed as the node drops them, while a client writes and reads:
  every answer within seconds, the node's descriptors near its cap.
- When client requests hold their share of the connections (90%), a new one gets a JSON 503 overloaded at once.
- Entries past a gap totalling more than 1 GiB keep a secondary's RSS bounded: past --buffer-max-bytes the
  request gets 503 buffer_full, and replication carries on afterwards.

Descriptors are the entries of /proc/<pid>/fd; memory is VmRSS of /proc/<pid>/status.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import socket
import threading
import time
from typing import Any

import pytest

from replog.tools.cluster import Node, http_json, wait_until

pytestmark = [
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc"),
    pytest.mark.usefixtures("enough_descriptors"),
]

HEAD = b"POST /messages HTTP/1.1\r\n"  # a request line, and never the rest
SLOW_HEAD = b"GET /messages HTTP/1.1\r\nX-Slow: "  # what a slow connection sends, a byte every half second


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """Samples a process's descriptors and RSS every 20 ms in a thread; keeps the highest of each."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fds = self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.fds = max(self.fds, fds(self.pid))
                self.rss = max(self.rss, rss(self.pid))
            except (OSError, AssertionError):
                pass
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class LimitedNode(Node):
    """A node started with a hard descriptor limit of NOFILE, as on a host whose ulimit -n is low."""

    NOFILE = 256

    def command(self) -> list[str]:
        cmd = super().command()  # [python, -m, replog, role, ...]
        n = self.NOFILE
        boot = (
            f"import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "
            "from replog.cli import main; main(prog_name='replog')"
        )
        return [cmd[0], "-c", boot, *cmd[3:]]


def open_half(port: int, n: int) -> list[socket.socket]:
    """n connections that send a request line and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(HEAD)
        socks.append(s)
    return socks


def timed(fn: Any) -> tuple[float, Any]:
    started = time.monotonic()
    out = fn()
    return time.monotonic() - started, out


def test_300_half_open_connections_do_not_starve_a_master_with_a_low_descriptor_limit(cluster: Any) -> None:
    master = cluster.node("master", ["--new-cluster", "--log-format", "json"], kind=LimitedNode)
    master.start()
    wait_until(lambda: master.health().get("status") == "ok", 15, what="the master to take writes")
    assert master.proc is not None
    pid = master.proc.pid
    with Sampler(pid) as peak:
        socks = open_half(master.port, 300)
        try:
            took, (status, body) = timed(lambda: http_json("POST", master.url + "/messages", {"message": "m"}, 5))
            assert status == 201, body
            assert took < 3, f"a write took {took:.1f}s beside 300 half-open connections"
            took, (status, body) = timed(lambda: http_json("GET", master.url + "/health", timeout=5))
            assert status == 200 and took < 3, (took, body)
        finally:
            for s in socks:
                s.close()
    assert peak.fds < LimitedNode.NOFILE, f"the master held {peak.fds} descriptors of its {LimitedNode.NOFILE}"
    started = [e for e in master.events() if e.get("event") == "max_connections_lowered"]
    assert started and started[0]["max_connections"] < LimitedNode.NOFILE, "the cap was not fitted to the limit"


class Attack:
    """Keeps `idle` connections that send nothing and `slow` ones that send a request head one byte every
    half second; every half second it also opens a new connection for each one the node dropped. Runs in a
    thread until stopped."""

    def __init__(self, port: int, idle: int, slow: int) -> None:
        self.port = port
        self.idle = idle
        self.slow = slow
        self.renewed = 0
        self.answers: dict[bytes, int] = {}  # status lines of what the node sent before dropping a connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sel = selectors.DefaultSelector()
        self._slow: dict[socket.socket, int] = {}  # slow connection -> bytes of its head sent
        self._dropped: list[bool] = []  # connections the node dropped since the last round (True: a slow one)

    def _connect(self, slow: bool) -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        self._sel.register(s, selectors.EVENT_READ, slow)
        if slow:
            self._slow[s] = 0

    def _drop(self, s: socket.socket, slow: bool) -> None:
        self._sel.unregister(s)
        self._slow.pop(s, None)
        s.close()
        self.renewed += 1
        self._dropped.append(slow)  # renewed at the next half second

    def _run(self) -> None:
        for i in range(self.idle + self.slow):
            self._connect(i >= self.idle)
        next_byte = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 "):
                    line = data.split(b"\r\n", 1)[0]
                    self.answers[line] = self.answers.get(line, 0) + 1
                self._drop(s, key.data)  # type: ignore[arg-type]
            if time.monotonic() >= next_byte:
                next_byte += 0.5
                dropped, self._dropped = self._dropped, []
                for slow in dropped:
                    self._connect(slow)
                for s, sent in list(self._slow.items()):
                    byte = SLOW_HEAD[sent : sent + 1] or b"a"  # then a header value that never ends
                    try:
                        s.send(byte)
                        self._slow[s] = sent + 1
                    except OSError:
                        pass  # not connected yet, or dropped: the selector sees it

    def __enter__(self) -> Attack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()


def test_2000_idle_and_2000_slow_connections_while_a_client_writes_and_reads(cluster: Any) -> None:
    cap = 1000
    c = cluster(1, master_args=["--max-connections", str(cap), "--read-timeout", "3"])
    c.wait_healthy()
    assert c.master.proc is not None
    pid = c.master.proc.pid
    took_all: list[float] = []
    texts = []
    with Sampler(pid) as peak, Attack(c.master.port, idle=2000, slow=2000) as attack:
        wait_until(lambda: attack.renewed >= 2000, 30, 0.1, what="the master to drop connections past its cap")
        deadline = time.monotonic() + 8
        i = 0
        while time.monotonic() < deadline:
            took, (status, body) = timed(lambda: c.post(f"m{i}", w=2, timeout=10))  # noqa: B023
            assert status == 201, body
            texts.append(f"m{i}")
            took2, (status, data) = timed(lambda: http_json("GET", c.master.url + "/messages", timeout=10))
            assert status == 200 and data["messages"][-1]["text"] == f"m{i}", data
            took_all += [took, took2]
            i += 1
        renewed = attack.renewed
        answers = dict(attack.answers)
    took_all.sort()
    slowest, median = took_all[-1], took_all[len(took_all) // 2]
    print(
        f"\n{i} writes and reads beside 4,000 idle/slow connections: median {median:.2f}s, slowest {slowest:.2f}s; master "
        f"descriptors peak {peak.fds} (cap {cap}); connections dropped and renewed {renewed}; answers {answers}"
    )
    # The attack renews what the node drops twice a second, from this same (shared, 2-core) machine: the master
    # spends much of its CPU accepting and dropping connections, and a client still gets its answers.
    assert slowest < 6 and median < 2, f"answers took {median:.1f}s (median), {slowest:.1f}s at most"
    assert peak.fds <= cap + 64, f"the master held {peak.fds} descriptors with a cap of {cap} connections"
    assert i >= 3, f"only {i} writes and reads in 8 s"
    assert c.wait_converged()[-1]["text"] == texts[-1]


def test_stalled_heads_and_bodies_get_a_json_408_and_a_busy_node_a_json_503(cluster: Any) -> None:
    master = cluster.node("master", ["--new-cluster", "--max-connections", "5", "--read-timeout", "1"])
    master.start()
    wait_until(lambda: master.health().get("status") == "ok", 15, what="the master to take writes")

    def answer(s: socket.socket) -> tuple[int, dict[str, Any]]:
        s.settimeout(5)
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    slow_head = socket.create_connection(("127.0.0.1", master.port))
    slow_head.sendall(HEAD)
    slow_body = socket.create_connection(("127.0.0.1", master.port))
    slow_body.sendall(
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    took, (status, body) = timed(lambda: answer(slow_head))
    assert status == 408 and body["error"] == "request_timeout" and took < 4, (took, body)
    status, body = answer(slow_body)
    assert status == 408 and body["error"] == "request_timeout", body

    # Four long-polls hold the client share of the five connections (90%, and one kept free for a master's
    # connections): a further client request gets 503 overloaded at once.
    polls = []
    for _ in range(4):
        conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=30)
        conn.request("GET", "/messages?since=1000&wait=20")
        polls.append(conn)
    wait_until(lambda: _overloaded(master.port), 10, what="four long-polls to hold the client share")
    took, overloaded = timed(lambda: _overloaded(master.port))
    assert overloaded and took < 2, took
    for conn in polls:
        conn.close()
    wait_until(lambda: http_json("GET", master.url + "/health")[0] == 200, 10, what="the master to take connections")


def _overloaded(port: int) -> bool:
    try:
        status, body = http_json("GET", f"http://127.0.0.1:{port}/health", timeout=5)
    except OSError:
        return False
    return status == 503 and body == {
        "error": "overloaded",
        "detail": "this node holds as many connections as it accepts; try again shortly",
    }


KEY = "k" * 32  # the cluster key of the flooded cluster
ENTRY = 32_000_000  # characters of each entry sent past the gap
REQUESTS = 34  # 34 x 32 MB: more than 1 GiB in all
# Baseline (~47 MB) + the 64 MiB buffer cap + one 32 MB request in flight (its body, and its text once parsed) and
# the allocator's slack: measured peak 212 MB. Without the byte cap the secondary held all 1.09 GB.
RSS_BOUND = 300 << 20


def test_entries_past_a_gap_totalling_1_gib_keep_a_secondarys_memory_bounded(cluster: Any) -> None:
    # The sender holds the cluster key (without it the secondary answers 401 and reads nothing): whoever holds it
    # can do anything (docs/security.md), and the buffer's cap still bounds what a master's requests can hold.
    c = cluster(1, cluster_key=KEY)
    c.wait_healthy()
    for i in range(3):
        assert c.post(f"before-{i}", w=2)[0] == 201
    s1 = c.secondaries[0]
    assert s1.proc is not None
    pid = s1.proc.pid
    h = s1.health()
    fence = {
        "Replog-Epoch": str(h["promised"]),
        "Replog-Master": h["promised_to"],
        "Content-Type": "application/json",
        "Authorization": f"Bearer {KEY}",
    }
    big = b"x" * ENTRY
    conn = http.client.HTTPConnection("127.0.0.1", s1.port, timeout=60)
    statuses = []
    base = rss(pid)
    with Sampler(pid) as peak:
        for i in range(REQUESTS):
            seq = h["seq"] + 2 + i  # past the gap at seq + 1
            body = b"".join(
                [
                    b'{"log":"' + h["log"].encode() + b'","prev":[' + str(seq - 1).encode() + b',"' + b"0" * 32,
                    b'"],"entries":[[' + str(seq).encode() + b',null,"',
                    big,
                    b'",0,"' + b"5a" * 16 + b'"]]}',
                ]
            )
            conn.request("POST", "/replicate", body, fence)
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            statuses.append((resp.status, answer.get("error")))
            del body
        held = s1.health()
    conn.close()
    counts = {f"{st} {err}": statuses.count((st, err)) for st, err in sorted(set(statuses), key=str)}
    print(
        f"\nRSS {base / 1e6:.0f} MB -> peak {peak.rss / 1e6:.0f} MB; answers {counts}; held {held['buffered_bytes']} B"
    )
    assert statuses[0] == (200, None)
    assert statuses[-1] == (503, "buffer_full")
    assert statuses.count((503, "buffer_full")) >= REQUESTS - 2
    assert held["buffered_bytes"] <= 64 << 20
    assert peak.rss < RSS_BOUND, f"the secondary reached {peak.rss / 1e6:.0f} MB"
    # Replication carries on: the master fills the gap, the junk held past it is dropped, and resent entries land.
    for i in range(3):
        status, body = c.post(f"after-{i}", w=2)
        assert status == 201, body
    assert [m["text"] for m in c.wait_converged()][-3:] == [f"after-{i}" for i in range(3)]
    assert s1.health()["buffered_bytes"] == 0
