"""`replog bench`'s text report as a pipe gets it: no progress lines, the machine named once, every line
within 100 columns, and the master's CPU stated whenever it was measured."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from replog.tools.bench import WIDTH, machine_info, render_table

PROGRESS = re.compile(r"\d[\d,]*/\d[\d,]*(\s+[\d,]+/s)?\s*$")  # "0/5,000" or "1,200/5,000  3,400/s"


def row(
    name: str, title: str, rate: float, unit: str, note: str = "", master_cpu: float | None = 1.5
) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "clients": 1_000,
        "requests": 10_000_000,
        "rate": rate,
        "unit": unit,
        "p50_ms": 12_345.0,
        "p99_ms": 123_456.0,
        "max_ms": 1_234_567.0,
        "errors": 1_000_000,
        "statuses": {"503": 1_000_000},
        "error_sample": "HTTP 503 " + "no_quorum " * 20,
        "rss_peak_mb": {"master": 12_345.0, "s1": 12_345.0, "s2": 12_345.0},
        "loadgen_cpu_s": 1_234.56,
        "master_cpu_s": master_cpu,
        "note": note,
    }


def report(rows: list[dict[str, Any]], cpu: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": {**machine_info("asyncio"), "cpu": "AMD EPYC 7B13 64-Core Processor with a long marketing name"},
        "cluster": "local, master + 2 secondaries, data dirs under /some/rather/long/directory/name (fsync always)",
        "nodes": 3,
        "command": "replog bench " + " ".join(f"--scenario {n}" for n in ("w1", "majority", "all", "latency") * 3),
        "scenarios": rows,
        "cpu": cpu,
    }


def test_the_widest_rows_fit_in_100_columns() -> None:
    """Titles, rates, latencies, memory and notes as wide as a big run makes them."""
    rows = [
        row("idle", "POST w=3 (all), 100,000 idle streams", 1e6, "writes/s", "master RSS +11.6 MB " * 8),
        row("read", "GET /messages (whole log)", 123_456_789.0, "entries/s", "265,000,000 entries, 14,000.7 MB"),
        row("replay", "stream replay (265,000,000 entries)", 12_345_678.0, "entries/s", "x" * 150),
    ]
    cpu = {
        "loadgen_cpu_s": 1_234.5,
        "master_cpu_s": 12_345.6,
        "single_post_requests": 10_000_000,
        "loadgen_us_per_request": 12_345.0,
        "master_us_per_request": 12_345.0,
        "loadgen_cpu_util": 1.0,
        "master_cpu_util": 1.0,
    }
    text = render_table(report(rows, cpu))
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH and "x" * 101 not in line]
    assert WIDTH == 100 and too_wide == [], "\n".join(too_wide)
    for r in rows:
        assert r["title"] in text
    assert "265,000,000 entries, 14,000.7 MB" in text
    assert text.splitlines()[-1].startswith("    --scenario"), "the command folds with shell continuations"
    assert "unknown" not in text


def test_the_master_cpu_is_unknown_only_when_it_was_not_measured() -> None:
    measured = render_table(report([row("latency", "POST w=3 (all), 1 client", 500.0, "writes/s")], _cpu(0.5)))
    assert "unknown" not in measured
    assert re.search(r"whole run: load generator [\d.]+ s, master 0\.50 s", measured), measured
    external = render_table(
        report([row("latency", "POST w=3 (all), 1 client", 500.0, "writes/s", master_cpu=None)], _cpu(None))
    )
    assert "the master's CPU is unknown for an external cluster" in external


def _cpu(master: float | None) -> dict[str, Any]:
    return {"loadgen_cpu_s": 0.25, "master_cpu_s": master}


@pytest.mark.timeout(120)
def test_through_a_pipe_the_report_is_the_table_alone() -> None:
    """A tiny real run, stdout and stderr into one pipe (as `replog bench 2>&1 | tee`), with the scenarios
    whose notes are longest and no many-client POST row (the run whose footer said the CPU was unknown)."""
    scenarios = ("latency", "catchup", "read", "stream", "idle")
    args = ["--requests", "80", "--batch-size", "20", "--catchup-messages", "400", "--idle-streams", "10"]
    args += ["--heartbeat-interval", "0.2"] + [a for s in scenarios for a in ("--scenario", s)]
    proc = subprocess.run(
        [sys.executable, "-m", "replog", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=100,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("machine: ")
    assert sum(line.startswith("machine: ") for line in lines) == 1, out
    assert [line for line in lines if PROGRESS.search(line)] == [], out
    assert not any(line.startswith("starting a master") for line in lines), out
    assert max(len(line) for line in lines) <= 100, "\n".join(line for line in lines if len(line) > 100)
    assert "unknown" not in out
    assert re.search(r"CPU over the whole run: load generator [\d.]+ s, master [\d.]+ s\.", out), out
    for title in ("POST w=3 (all), 1 client", "catch-up 400 msgs", "GET /messages (whole log)", "10 idle streams"):
        assert title in out
    assert "notes:" in out and "s3" not in out
