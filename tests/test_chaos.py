"""The chaos suite's CI part: a fixed seed set of short runs, each with zero invariant violations.

Each run is a real cluster (replog processes on loopback) under concurrent writers at mixed w
while a seeded nemesis kills, pauses, partitions and restarts nodes; see tests/chaos/. A failing
run's message holds its seed, its summary and the command that reproduces it. Longer soaks:
`python -m tests.chaos.harness --soak MINUTES`.
"""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from replog.cluster import wait_until

try:
    from tests.chaos.harness import RunConfig, run
    from tests.chaos.proxy import Mode, Proxy
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from chaos.harness import RunConfig, run  # type: ignore[no-redef]
    from chaos.proxy import Mode, Proxy  # type: ignore[no-redef]

# Seeds picked so that together they inject every fault kind (see the summary each run prints):
# in memory: kills (quick and slow), a partition with a restart behind it, drops, resets;
# on disk: master kills and recovery, a partition with a restart, pauses, latency;
# three flaky, slow secondaries (--fail-rate 0.2, --delay 0.05): kills, pauses, latency, partitions;
# overlapping faults on disk (quorum lost at times: 503s): master kills during secondary faults, replays.
RUNS = [
    pytest.param(RunConfig(seed=10, duration=12), id="memory-seed10"),
    pytest.param(RunConfig(seed=17, duration=12, data_dirs=True), id="data-dirs-seed17"),
    pytest.param(RunConfig(seed=27, duration=10, secondaries=3, fail_rate=0.2, delay=0.05), id="flaky-3-secondaries-seed27"),
    pytest.param(RunConfig(seed=20, duration=10, secondaries=3, data_dirs=True, overlap=True), id="overlap-data-dirs-seed20"),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("config", RUNS)
def test_no_invariant_violation_under_faults(config: RunConfig) -> None:
    result = run(config)
    assert sum(result.faults.values()) > 0, result.summary()
    assert result.outcomes["ok"] > 0, result.summary()
    assert result.ok, f"seed {config.seed}: {len(result.violations)} violations\n{result.summary()}"


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
