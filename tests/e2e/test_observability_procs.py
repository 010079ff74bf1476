"""Metrics, readiness and console logs of real `python -m replog` processes.

Metrics are scraped over HTTP and read with prometheus_client's own parser; a secondary is killed with
SIGKILL; a disk fills up for real (a 256 KiB tmpfs); the console format is read as a process manager
(honcho) reads it: through a pipe, not a terminal.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from replog.tools.cluster import Node, http_json, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: Node) -> Samples:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def write(node: Node, text: str, w: int) -> dict:
    status, body = http_json("POST", node.url + "/messages", {"message": text, "w": w, "timeout": 20})
    assert status == 201, (status, body)
    return body


def test_metrics_move_with_writes_and_a_killed_secondary(cluster):
    c = cluster(2, data_dirs=True)
    c.wait_healthy()
    s1, s2 = c.secondaries
    before = scrape(c.master)
    before_s2 = scrape(s2)
    for i in range(3):
        write(c.master, f"m{i}", 3)
    after = scrape(c.master)
    assert value(after, "replog_writes_total", w="3", outcome="created") == 3
    assert value(after, "replog_write_duration_seconds_count", w="3") == 3
    assert value(after, "replog_appended_entries_total") - value(before, "replog_appended_entries_total") == 3
    assert value(after, "replog_fsyncs_total") > value(before, "replog_fsyncs_total")
    assert value(after, "replog_fsync_duration_seconds_count") > value(before, "replog_fsync_duration_seconds_count")
    assert value(after, "replog_disk_log_bytes") > value(before, "replog_disk_log_bytes")
    wait_until(lambda: value(scrape(s2), "replog_durable_seq") == 3, 10, what="S2 to hold the 3 entries")
    got = scrape(s2)
    assert value(got, "replog_received_entries_total") - value(before_s2, "replog_received_entries_total") >= 3
    assert value(got, "replog_fsync_duration_seconds_count") > value(before_s2, "replog_fsync_duration_seconds_count")

    s1.kill()  # SIGKILL
    lags = []
    for i in range(3, 8):
        write(c.master, f"m{i}", 2)  # the master and S2
        lags.append(value(scrape(c.master), "replog_secondary_lag_entries", secondary=s1.url))
    assert lags == sorted(lags) and lags[-1] >= 5, f"the killed secondary's lag grows: {lags}"

    def unhealthy() -> bool:
        got = scrape(c.master)
        return value(got, "replog_secondary_status", secondary=s1.url, status="unhealthy") == 1

    wait_until(unhealthy, 20, what="S1 to turn unhealthy in the metrics")
    got = scrape(c.master)
    assert value(got, "replog_secondary_status", secondary=s1.url, status="healthy") == 0
    assert value(got, "replog_secondary_status", secondary=s2.url, status="healthy") == 1
    assert value(got, "replog_secondary_last_contact_age_seconds", secondary=s1.url) > value(
        got, "replog_secondary_last_contact_age_seconds", secondary=s2.url
    )
    assert value(got, "replog_available_nodes") == 2 and value(got, "replog_read_only") == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted at the end. Ask for it before `cluster`, so that nodes stop first."""
    path = tmp_path / "tiny"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.mark.parametrize("who", ["master", "secondary"])
def test_a_node_whose_disk_filled_up_is_not_ready(tiny_disk, cluster, who):
    c = cluster(2, start=False)
    node = c.master if who == "master" else c.secondaries[0]
    node.args += ["--data-dir", str(tiny_disk)]
    c.start()
    assert http_json("GET", node.url + "/readyz") == (200, {"status": "ready", "role": who})
    pad = "z" * 4000  # 64 of these fill 256 KiB
    for i in range(100):
        status, body = http_json("POST", c.master.url + "/messages", {"message": f"{i}-{pad}", "w": 2, "timeout": 20})
        if status == 503:
            assert body["error"] == "disk_failed", body
            break
        assert status == 201, (status, body)
        if http_json("GET", node.url + "/readyz")[0] == 503:
            break
    status, body = wait_until(
        lambda: (got := http_json("GET", node.url + "/readyz"))[0] == 503 and got, 10, what=f"the {who} not ready"
    )
    assert (body["error"], body["reason"], body["role"]) == ("not_ready", "disk_failed", who), body
    assert "No space left" in body["detail"], body
    assert value(scrape(node), "replog_disk_failed") == 1
    assert http_json("GET", node.url + "/livez") == (200, {"status": "alive"}), "alive, though not ready"


# -- console logs and the process's start and stop ---------------------------------------------------------

ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def test_console_lines_through_a_pipe_are_short_and_carry_no_time(cluster):
    c = cluster(2, start=False)
    for node in c.nodes:
        node.args += ["--log-format", "console"]  # stdout/stderr go to a file: no terminal, as under honcho
    c.start()
    c.wait_healthy()
    write(c.master, "hello", 3)
    c.stop()  # SIGTERM
    assert [n.proc.returncode for n in c.nodes if n.proc is not None] == [0, 0, 0]
    for node in c.nodes:
        lines = node.log_path.read_text().splitlines()
        assert lines, f"{node.role} logged nothing"
        assert not [line for line in lines if ISO_TIME.search(line)], "honcho prints the time already"
        assert max(map(len, lines)) < 120, "\n".join(line for line in lines if len(line) >= 120)
        events = [line.split()[1] for line in lines]
        assert events[0] == "node_started" and events[-2:] == ["node_stopping", "node_stopped"], lines
        assert not [line for line in lines if line.startswith(("[warning]", "[error]", "[critical]"))], lines


def test_a_port_in_use_is_one_error_line_and_exit_1_and_no_node_started(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "replog", "secondary", "--port", str(port), "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 1, done
    assert "node_started" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_the_connection_gate_shows_in_metrics(tmp_path):
    """replog_connections counts what the node holds against replog_connections_max; idle connections
    displaced at the cap are counted in replog_connections_closed_total{reason="displaced"}."""
    from replog.tools.cluster import free_port

    cap = 20
    node = Node("secondary", free_port(), ["--max-connections", str(cap)], tmp_path / "s.log")
    node.start()
    held: list[socket.socket] = []
    try:
        wait_until(lambda: node.health(), 20, what="the secondary to answer")
        first = scrape(node)
        assert value(first, "replog_connections_max") == cap
        assert value(first, "replog_connections_closed_total", reason="displaced") == 0
        for _ in range(10):  # idle: connected, nothing sent
            held.append(socket.create_connection(("127.0.0.1", node.port), timeout=5))
        wait_until(
            lambda: value(scrape(node), "replog_connections", state="open") >= 11,
            10,
            what="10 idle connections counted",
        )
        assert value(scrape(node), "replog_connections", state="idle") >= 10
        for _ in range(cap):  # past the cap: the longest-waiting idle connections make room
            held.append(socket.create_connection(("127.0.0.1", node.port), timeout=5))
        wait_until(
            lambda: value(scrape(node), "replog_connections_closed_total", reason="displaced") >= 10,
            10,
            what="idle connections displaced at the cap",
        )
        assert value(scrape(node), "replog_connections", state="open") <= cap
    finally:
        for s in held:
            s.close()
        node.kill()
