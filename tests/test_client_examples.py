"""The client examples (examples/python_client.py, examples/consume.py) run with --start as real
subprocesses, each on a cluster of its own, and print what the README says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from replog.tools.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent


def run_example(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, timeout=90, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def has(out: str, pattern: str) -> None:
    if not re.search(pattern, out, re.M):
        pytest.fail(f"no line matches {pattern!r} in:\n{out}")


@pytest.mark.timeout(120)
def test_the_python_client_tour() -> None:
    out = run_example("python_client.py", "--start")
    has(out, r"^append: seq=1 w=2 acks=[23]$")
    has(out, r"^retry with the same id: seq=1 created=False$")
    has(out, r"^append_batch: seqs 2\.\.4 acks=[23]$")
    has(out, r"^producer: 1000 appends in \d+ batch writes, [\d.]+ s$")
    has(out, r"^producer: each caller got its own seq: True$")
    has(out, r"^Rejected: invalid_w$")
    has(out, r"^WriteConcernTimeout: ")
    has(out, r"^read: \['hello', 'a', 'b', 'c'\], the node shows up to seq \d+$")
    has(out, r"^health: ok, 2 secondaries$")
    batches = int(re.search(r"in (\d+) batch writes", out).group(1))  # type: ignore[union-attr]
    assert batches < 100, "the producer coalesced the concurrent appends"


@pytest.mark.timeout(120)
def test_the_consumers_see_every_entry_once_in_order() -> None:
    out = run_example("consume.py", "--start")
    has(out, r"^wrote 200 messages at w=all in [\d.]+ s$")
    has(out, r"^follower saw 200, in order and once each: True$")
    has(out, r"^long-poller saw 200, in order and once each: True$")


@pytest.mark.timeout(120)
def test_the_readme_python_client_snippet_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python client") :]
    code = section[
        section.index("```python\n") + len("```python\n") : section.index("\n```", section.index("```python"))
    ]
    with LocalCluster(2) as c:
        code = code.replace("http://127.0.0.1:8000", c.master.url)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert re.fullmatch(r"1 \S+ [23]", lines[0]), lines
        assert lines[1:11] == ["1 hello", "2 a", "3 b"] + [f"{i} m{i - 4}" for i in range(4, 11)], lines
        assert lines[11] == "2 a", lines  # follow(since=1) starts after the stored entry
