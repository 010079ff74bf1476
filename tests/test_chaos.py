"""The chaos suite's CI part: a fixed seed set of short runs, each with zero invariant violations.

Each run is a real cluster (replog processes on loopback) under concurrent writers at mixed w
while a seeded nemesis kills, pauses, partitions and restarts nodes, and delivers a dead master's
replication requests late; see tests/chaos/. A failing run's message holds its seed, its summary
and the command that reproduces it. Longer soaks: `python -m tests.chaos.harness --soak MINUTES`.
Besides: two masters over the same secondaries, and the checker's and the proxy's own tests.
"""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any

import pytest

from replog.tools.cluster import wait_until

try:
    from tests.chaos.checker import History
    from tests.chaos.harness import RunConfig, run
    from tests.chaos.proxy import Mode, Proxy
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from chaos.checker import History  # type: ignore[no-redef]
    from chaos.harness import RunConfig, run  # type: ignore[no-redef]
    from chaos.proxy import Mode, Proxy  # type: ignore[no-redef]

# Seeds picked so that together they inject every fault kind (see the summary each run prints):
# in memory: kills, pauses, drops, replays, and a late delivery (copies of requests that went through)
#   after the master restarted without its log;
# on disk: kills, pauses, drops, and a late delivery of requests held back from s1 after the master
#   restarted with its data dir wiped;
# three flaky, slow secondaries (--fail-rate 0.2, --delay 0.05): kills, pauses, a cut;
# overlapping faults on disk (quorum lost at times: 503s): master kills during secondary faults, resets,
#   latency, partitions, a restart behind a partition.
RUNS = [
    pytest.param(RunConfig(seed=10, duration=12), id="memory-seed10"),
    pytest.param(RunConfig(seed=17, duration=12, data_dirs=True), id="data-dirs-seed17"),
    pytest.param(
        RunConfig(seed=27, duration=10, secondaries=3, fail_rate=0.2, delay=0.05), id="flaky-3-secondaries-seed27"
    ),
    pytest.param(
        RunConfig(seed=20, duration=10, secondaries=3, data_dirs=True, overlap=True), id="overlap-data-dirs-seed20"
    ),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("config", RUNS)
def test_no_invariant_violation_under_faults(config: RunConfig) -> None:
    result = run(config)
    assert sum(result.faults.values()) > 0, result.summary()
    assert result.outcomes["ok"] > 0, result.summary()
    assert result.ok, f"seed {config.seed}: {len(result.violations)} violations\n{result.summary()}"


@pytest.mark.timeout(90)
def test_two_masters_never_both_acknowledge_a_majority_write() -> None:
    """A second in-memory master over the same secondaries while the first takes writes: the later one
    fences the first, no seq shows two entries, no write acknowledged with w >= majority is lost."""
    config = RunConfig(seed=3, duration=6, two_masters=True, converge_timeout=15)
    result = run(config)
    assert result.faults["second_master"] == 1, result.summary()
    assert result.outcomes["ok"] > 0, result.summary()
    assert result.ok, f"two masters, seed {config.seed}: {len(result.violations)} violations\n{result.summary()}"


# -- the checker's rule "no seq with two entries across nodes at any sample" ---------------------------


def entries(*pairs: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"seq": seq, "id": None, "text": text} for seq, text in pairs]


def kinds(history: History) -> list[str]:
    return [v[1 : v.index("]")] for v in history.violations]


def test_two_nodes_with_other_entries_at_one_seq_are_reported_with_both() -> None:
    h = History(0.0)
    h.observe("master", entries((1, "a"), (2, "b")), 0)
    h.observe("s1", entries((1, "a"), (2, "B")), 0)
    assert kinds(h) == ["seq-conflict"]
    assert "seq 2" in h.violations[0] and "'B'" in h.violations[0] and "'b'" in h.violations[0]
    assert "s1@" in h.violations[0] and "master@" in h.violations[0]


def test_the_same_entries_everywhere_and_again_are_fine() -> None:
    h = History(0.0)
    for node in ("master", "s1", "s2", "master", "s1"):
        h.observe(node, entries((1, "a"), (2, "b")), 0)
        h.observe(node, entries((2, "b"), (3, "c")), 1)
    assert h.violations == []


def test_what_a_node_showed_before_it_restarted_empty_still_counts() -> None:
    h = History(0.0)
    h.observe("s1", entries((1, "a"), (2, "b")), 0)
    h.lost("s1")  # restarted without its log; the master still holds seq 2 = b
    h.observe("master", entries((1, "a"), (2, "b")), 0)
    h.observe("s1", entries((1, "a"), (2, "x")), 0)
    assert kinds(h) == ["seq-conflict"]
    h2 = History(0.0)
    h2.observe("s1", entries((1, "a"), (2, "b")), 0)
    h2.lost("s1")
    h2.observe("s1", entries((1, "a"), (2, "x")), 0)  # nobody holds b any more: nothing contradicts x
    assert h2.violations == []


def test_an_entry_only_a_lost_master_held_may_be_replaced_but_one_a_secondary_holds_may_not() -> None:
    h = History(0.0)
    h.observe("master", entries((1, "a"), (2, "b"), (3, "c")), 0)
    h.observe("s1", entries((1, "a"), (2, "b")), 0, generation=0)
    h.lost("master")  # restarted in memory: seq 3 = c was only in its log
    h.observe("master", entries((1, "a"), (2, "b"), (3, "d"), (4, "c")), 0)  # c retried by id after the restart
    assert h.violations == []
    h.observe("master", entries((1, "a"), (2, "e")), 0)  # but s1 still holds 2 = b
    assert kinds(h) == ["seq-conflict"]


def test_a_read_sent_before_the_loss_counts_for_the_old_log() -> None:
    h = History(0.0)
    h.lost("master")
    h.observe("master", entries((1, "a")), 0, generation=0)  # answered by the process killed since
    h.observe("s1", entries((1, "b")), 0)
    assert h.violations == []


def test_duplicates_and_gaps_are_still_reported() -> None:
    h = History(0.0)
    h.observe("master", entries((1, "a"), (2, "a"), (4, "c")), 0)
    assert sorted(kinds(h)) == ["duplicate", "gap"]


# -- the proxy's capture and late delivery ------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    got: list[tuple[int, str, bytes]] = []  # (client port, path, body) of every request, in arrival order

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.append((self.client_address[1], self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def request(body: bytes) -> bytes:
    head = b"POST /replicate HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


@pytest.mark.timeout(30)
def test_held_requests_reach_the_secondary_only_when_delivered_byte_for_byte_on_fresh_connections() -> None:
    _Recorder.got = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = Proxy(server.server_address[1], seed=1).start()
    try:
        sent = [request(b'{"entries": [[1, null, "a"]]}'), request(b'{"entries": [[2, null, "b"], [3, null, "c"]]}')]
        proxy.start_capture()
        proxy.set_mode(Mode.HOLD)
        with socket.create_connection(("127.0.0.1", proxy.port)) as master:
            master.sendall(sent[0] + sent[1])  # two requests pipelined on one connection, as a sender that dies
            wait_until(lambda: proxy.stats["captured"] >= 2, 10, what="the proxy to read both requests")
        captured = proxy.stop_capture()
        proxy.heal()
        assert captured == sent
        assert _Recorder.got == []  # held: nothing went through
        assert proxy.deliver(captured) == 2
        assert sorted(body for _, _, body in _Recorder.got) == sorted(r.split(b"\r\n\r\n", 1)[1] for r in sent)
        assert {path for _, path, _ in _Recorder.got} == {"/replicate"}
        assert len({port for port, _, _ in _Recorder.got}) == 2  # one connection each
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()
