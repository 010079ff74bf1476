"""`python -m replog.tools.floor`, the relay that measures the floor under the producer row, run for real
(four processes per transport) on a few hundred messages. No timing assertions: it must relay every
message, give each caller its own seq, and report a rate for each transport."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from replog.tools.floor import TRANSPORTS


def floor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replog.tools.floor", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(150)
def test_every_transport_relays_every_message_once() -> None:
    proc = floor("--messages", "320", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["transport"] for r in rows] == list(TRANSPORTS)
    for row in rows:
        assert row["messages"] == 320 and row["distinct_seqs"] == 320, row
        assert row["rate"] > 0 and row["batch_ms"] > 0, row
        assert set(row["cpu_ms_per_batch"]) == {"client", "master", "secondary"}


def test_too_few_messages_is_a_one_line_error() -> None:
    proc = floor("--messages", "5")
    assert proc.returncode != 0
    assert "--messages" in proc.stderr and "Traceback" not in proc.stderr
