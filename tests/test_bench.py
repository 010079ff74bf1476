"""Smoke test of `replog bench`: a tiny run as a real subprocess. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from replog.tools.bench import SCENARIOS

TINY = [
    "--requests",
    "200",
    "--batch-requests",
    "5",
    "--batch-size",
    "20",
    "--catchup-messages",
    "500",
    "--heartbeat-interval",
    "0.2",
    "--idle-streams",
    "20",
]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "replog", "bench", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(90)
def test_json_has_every_scenario_without_errors() -> None:
    proc = run_bench(*TINY, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = {r["name"]: r for r in report["scenarios"]}
    assert list(rows) == list(SCENARIOS)
    for name, row in rows.items():
        assert row["errors"] == 0, (name, row["error_sample"], row["statuses"])
        assert row["rate"] > 0, name
        if row["unit"] != "entries/s":
            assert row["writes_per_s"] > 0, name
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], name
        assert set(row["rss_peak_mb"]) == {"master", "s1", "s2"}, name
        assert row["loadgen_cpu_s"] >= 0 and row["master_cpu_s"] is not None, name
    catchup = rows["catchup"]
    assert catchup["caught_up_entries"] >= 500 and catchup["catchup_s"] >= 0
    assert rows["read"]["entries"] == rows["read"]["log_seq"]
    assert rows["replay"]["requests"] == rows["read"]["entries"]  # the whole log, through the stream
    assert "x the Client.append row" in rows["producer"]["note"]
    assert rows["stream"]["p50_ms"] > 0 and rows["stream"]["after_answer_p99_ms"] is not None
    assert rows["idle"]["streams"] == 20 and "vs the w=all row" in rows["idle"]["note"]
    assert report["machine"]["python"] and report["machine"]["cores"]
    assert "loadgen_cpu_s" in report and "master_cpu_s" in report


@pytest.mark.timeout(90)
def test_text_mode_prints_a_table() -> None:
    proc = run_bench("--requests", "100", "--scenario", "w1", "--scenario", "read")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("machine: ")
    header = " ".join(line for line in out.splitlines() if line.startswith("scenario"))  # one per table
    for column in ("rate", "p50 ms", "p99 ms", "max ms", "errors", "peak RSS MB"):
        assert column in header
    assert "POST w=1" in out and "writes/s" in out and "GET /messages" in out
    assert "load generator CPU" in out


def test_external_master_refuses_catchup() -> None:
    proc = run_bench("--master", "http://127.0.0.1:9", "--scenario", "catchup")
    assert proc.returncode != 0
    assert "catch-up" in proc.stderr


def test_a_cluster_that_does_not_start_is_a_clear_error(tmp_path) -> None:
    import click

    from replog.tools.bench import _start_cluster

    with pytest.raises(click.ClickException, match="did not start with --data-dir"):
        _start_cluster(str(tmp_path), "never", None, ("--no-such-option",))


def test_the_command_offers_exactly_the_scenarios_the_bench_runs() -> None:
    from replog.cli import BENCH_SCENARIOS

    assert BENCH_SCENARIOS == SCENARIOS


def test_no_node_module_nor_the_cli_imports_the_tools() -> None:
    """`replog master` and `replog secondary` load only modules outside replog.tools; importing all of
    them, in a fresh interpreter, must leave replog.tools unloaded."""
    code = (
        "import importlib, pkgutil, sys, replog\n"
        "names = [m.name for m in pkgutil.iter_modules(replog.__path__) if m.name != 'tools']\n"
        "assert 'cli' in names and 'master' in names and 'secondary' in names, names\n"
        "for name in names: importlib.import_module('replog.' + name)\n"
        "print(' '.join(sorted(n for n in sys.modules if n.startswith('replog.tools'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
