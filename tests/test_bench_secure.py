"""Smoke test of `replog bench --secure`: plain and [TLS] rows of the same scenarios, with their ratio, from one
tiny run as a real subprocess. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "replog", "bench", *args], capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(150)
def test_secure_alternates_rounds_on_a_plain_and_a_tls_cluster_and_shows_the_median() -> None:
    proc = run_bench(
        "--secure", "--rounds", "3", "--requests", "150", "--batch-requests", "4", "--batch-size", "20", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = report["scenarios"]
    assert [r["name"] for r in rows] == ["all", "all", "batch", "batch"]
    for plain, secure in (rows[0:2], rows[2:4]):
        assert plain["errors"] == 0 and secure["errors"] == 0, (plain, secure)
        assert secure["title"] == plain["title"] + " [TLS]"
        assert "secure_ratio" not in plain
        # The pair shown is the round with the median ratio of the three, each round a plain and a TLS row.
        ratios = secure["secure_ratios"]
        assert len(ratios) == 3 and secure["secure_ratio"] == sorted(ratios)[1]
        assert secure["secure_ratio"] == pytest.approx(secure["rate"] / plain["rate"], abs=1e-3)
        assert "median of 3 rounds" in secure["note"]
    # The CPU footer counts every round run, not only the rows shown.
    shown = sum(r["loadgen_cpu_s"] for r in rows)
    assert report["cpu"]["loadgen_cpu_s"] > shown


def test_secure_refuses_an_external_master_and_scenarios_it_cannot_run() -> None:
    proc = run_bench("--secure", "--master", "http://127.0.0.1:9")
    assert proc.returncode != 0 and "--secure" in proc.stderr
    proc = run_bench("--secure", "--scenario", "catchup")
    assert proc.returncode != 0 and "catchup" in proc.stderr


def test_rounds_need_secure() -> None:
    proc = run_bench("--rounds", "3", "--scenario", "all")
    assert proc.returncode != 0 and "--rounds" in proc.stderr and "Traceback" not in proc.stderr


def test_node_loop_runs_the_local_nodes_on_that_loop() -> None:
    proc = run_bench("--node-loop", "uvloop", "--scenario", "w1", "--requests", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["cluster"].endswith("nodes on uvloop")  # read from the master process's mapped libraries
    assert report["scenarios"][0]["errors"] == 0
    proc = run_bench("--scenario", "w1", "--requests", "100", "--json")
    assert json.loads(proc.stdout)["cluster"].endswith("nodes on asyncio")  # the nodes' default
    proc = run_bench("--node-loop", "uvloop", "--master", "http://127.0.0.1:9")
    assert proc.returncode != 0 and "--node-loop" in proc.stderr and "Traceback" not in proc.stderr
