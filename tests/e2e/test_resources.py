"""Resource bounds of the master, on real processes: memory, file descriptors and waiting writes.

A secondary down for 100,000 writes costs the master the log itself and little more: no task,
future or connection per message piles up, and the secondary catches up when it is back. A client
that goes away while its write waits, and a write that times out, leave nothing behind.

Memory is the master's VmRSS and descriptors are the entries of /proc/<pid>/fd (sockets among them).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from typing import Any

import pytest

from replog.tools.cluster import LocalCluster, http_json, wait_until

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")

TEXT = 16  # characters (ASCII) of each message of the 100,000
# Measured on a busy 2-core machine: the master's RSS grows by 120-155 bytes per 16-byte message beyond the text
# itself (the text's str object, its two list slots, allocator rounding, the batch encoder's cache). 250 bytes leaves
# about 10 MB of the 100,000 messages for noise, yet one leaked future per message (about 160 bytes) breaks it, and
# so would a task (about 1.4 KB with its coroutine), a connection or a buffered request per message.
OVERHEAD_PER_MESSAGE = 250
FD_SLACK = 10  # descriptors beyond the baseline: a few replication and heartbeat connections come and go


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return n


class Peak:
    """Samples a process's RSS, descriptors and sockets every 20 ms in a thread; keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss = self.fds = self.sockets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss = max(self.rss, rss(self.pid))
                self.fds = max(self.fds, fds(self.pid))
                self.sockets = max(self.sockets, sockets(self.pid))
            except (OSError, AssertionError):
                pass  # a descriptor closed between listing and reading
            self._stop.wait(0.02)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def master_pid(c: LocalCluster) -> int:
    assert c.master.proc is not None
    return c.master.proc.pid


def waiting(c: LocalCluster) -> int:
    return c.master.health()["waiting_writes"]


def test_a_secondary_down_for_100k_writes_catches_up_and_the_master_stays_bounded(cluster: Any) -> None:
    c = cluster(2)
    s1, s2 = c.secondaries
    pid = master_pid(c)
    s2.kill()  # down for every one of the 100,000 writes
    conn = http.client.HTTPConnection("127.0.0.1", c.master.port, timeout=60)

    def batch(b: int) -> None:
        texts = [f"m{b:03d}-{i:04d}".ljust(TEXT, ".") for i in range(1000)]
        conn.request("POST", "/messages", json.dumps({"messages": texts, "w": 2}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 201 and len(body["entries"]) == 1000, body

    batch(0)  # warms up the code paths that every later batch uses; the baseline comes after it
    base_rss, base_fds, base_sockets = rss(pid), fds(pid), sockets(pid)
    with Peak(pid) as peak:
        started = time.monotonic()
        for b in range(1, 100):
            batch(b)
        wrote = time.monotonic() - started
        assert c.master.health()["seq"] == 100_000
        after_writes = rss(pid)

        s2.start()  # empty: it gets all 100,000, in batches
        wait_until(lambda: c.master.health()["secondaries"][1]["lag"] == 0, 60, 0.1, what="S2 to catch up (lag 0)")
        caught_up = time.monotonic() - started - wrote
        shown = s2.messages(timeout=60)
    conn.close()

    assert len(shown) == 100_000
    assert [m["seq"] for m in shown[:3]] + [shown[-1]["seq"]] == [1, 2, 3, 100_000]
    assert shown[-1]["text"] == "m099-0999".ljust(TEXT, ".")
    growth = max(peak.rss, rss(pid)) - base_rss
    per_message = growth / 99_000
    print(
        f"\n99,000 writes in {wrote:.1f}s, S2 caught up in {caught_up:.1f}s; master RSS {base_rss / 1e6:.1f} MB -> "
        f"{after_writes / 1e6:.1f} MB after the writes, peak {peak.rss / 1e6:.1f} MB: "
        f"{per_message:.0f} bytes per message "
        f"({TEXT} of text); fds {base_fds} -> peak {peak.fds}, sockets {base_sockets} -> peak {peak.sockets}"
    )
    assert per_message < TEXT + OVERHEAD_PER_MESSAGE, f"the master grew {per_message:.0f} bytes per message"
    assert peak.fds <= base_fds + FD_SLACK, f"descriptors {base_fds} -> {peak.fds}: a connection per batch or message?"
    assert peak.sockets <= base_sockets + FD_SLACK


def _post_and_leave(port: int, body: dict[str, Any]) -> socket.socket:
    """Send a whole POST /messages and return the socket without reading the answer."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = b"POST /messages HTTP/1.1\r\nHost: replog\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    s.sendall(head % len(data) + data)
    return s


@pytest.mark.parametrize("how", ["close", "reset"])
def test_clients_that_leave_while_their_write_waits_leave_nothing_behind(cluster: Any, how: str) -> None:
    """200 clients each send a w=3 write (S2 is down, so it waits) and go away: FIN, or RST. The master
    forgets every waiter and closes every connection; the writes themselves stay stored and reach S2."""
    c = cluster(2)
    s1, s2 = c.secondaries
    pid = master_pid(c)
    s2.kill()
    assert http_json("POST", c.master.url + "/messages", {"message": "warm", "w": 2})[0] == 201
    base_fds = fds(pid)
    assert waiting(c) == 0

    clients = [_post_and_leave(c.master.port, {"message": f"left{i}", "w": 3}) for i in range(200)]
    try:
        wait_until(lambda: waiting(c) == 200, 20, 0.05, what="200 writes to wait for S2")
        assert fds(pid) >= base_fds + 190, "the 200 clients are not all connected"
    finally:
        for s in clients:
            if how == "reset":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close -> RST
            s.close()
    wait_until(lambda: waiting(c) == 0, 10, 0.05, what="the master to forget the waiters of clients gone")
    # The replicator may keep up to --replication-window (4) pooled connections to S1 open.
    wait_until(lambda: fds(pid) <= base_fds + 2 + 4, 10, 0.05, what=f"the master's descriptors to return to {base_fds}")
    print(f"\nfds {base_fds} -> {base_fds + 200}+ while waiting -> {fds(pid)} after the clients left ({how})")

    assert c.master.health()["seq"] == 201, "the writes are stored before they wait; leaving does not undo them"
    s2.start()
    wait_until(lambda: len(s2.messages()) == 201, 30, 0.1, what="S2 to receive every write, the abandoned ones too")
    assert waiting(c) == 0


def test_write_concern_timeouts_leave_no_waiters_behind(cluster: Any, pool: Any) -> None:
    """1,200 writes with w=3 and timeout 0.05 while S2 is down: each a 504, and not one waiter left
    (more than the 1,024 dead waiters after which the master compacts its wait queues)."""
    c = cluster(2)
    s1, s2 = c.secondaries
    pid = master_pid(c)
    s2.kill()
    assert http_json("POST", c.master.url + "/messages", {"message": "warm", "w": 2})[0] == 201
    base_fds, base_rss = fds(pid), rss(pid)

    def timed_out(i: int) -> tuple[int, Any]:
        return http_json("POST", c.master.url + "/messages", {"message": f"t{i}", "w": 3, "timeout": 0.05}, timeout=30)

    answers = list(pool.map(timed_out, range(1200)))
    assert {status for status, _ in answers} == {504}, {status for status, _ in answers}
    assert all(body["error"] == "write_concern_timeout" and body["acks"] in (1, 2) for _, body in answers)
    assert waiting(c) == 0, "a timed-out write left its waiter behind"
    # The replicator may keep up to --replication-window (4) pooled connections to S1 open.
    wait_until(lambda: fds(pid) <= base_fds + 2 + 4, 10, 0.05, what=f"the master's descriptors to return to {base_fds}")
    grown = rss(pid) - base_rss
    print(f"\n1,200 504s: waiting_writes 0, fds {base_fds} -> {fds(pid)}, RSS +{grown / 1e6:.1f} MB")
    assert grown < 20e6, f"RSS grew {grown / 1e6:.1f} MB over 1,200 timed-out writes"

    s2.start()
    kept = "S2 to receive the timed-out writes (kept, not rolled back)"
    wait_until(lambda: len(s2.messages()) == 1201, 30, 0.1, what=kept)
    assert waiting(c) == 0
