"""A smoke run of the failover bench (`python -m replog.tools.failbench`): one throughput round of each
kind and one master kill, so that the tool the README's figures come from keeps working. The figures of
so short a run mean nothing; only their presence and the loss check are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(150)
def test_failbench_measures_a_kill_and_both_throughputs(tmp_path: Path) -> None:
    out = tmp_path / "failbench.json"
    args = ["--kills", "1", "--lease-ttl", "1", "--rounds", "1", "--requests", "200", "--clients", "4"]
    proc = subprocess.run(
        [sys.executable, "-m", "replog.tools.failbench", *args, "--writers", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["throughput"]["static"] > 0 and report["throughput"]["failover"] > 0, report
    failover = report["failover"]
    assert len(failover["gaps_s"]) == 1 and failover["missed"] == 0, report
    assert failover["acked_writes"] > 0 and failover["lost_writes"] == 0, report
    assert "first acknowledged write: p50" in proc.stdout, proc.stdout
