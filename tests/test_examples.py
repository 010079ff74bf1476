"""The examples: both self-check scripts run with --start as real subprocesses, and the Procfile.

The scripts start clusters of their own on free ports; nothing here starts honcho, whose ports are fixed.
"""

from __future__ import annotations

import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from honcho.environ import parse_procfile

from replog.cli import main as replog_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def line_index(out: str, pattern: str) -> int:
    """Index of the first output line matching pattern; fails the test, showing the output, if none does."""
    for i, line in enumerate(out.splitlines()):
        if re.search(pattern, line):
            return i
    pytest.fail(f"no line matches {pattern!r} in:\n{out}")


@pytest.mark.timeout(120)
def test_write_concern_selfcheck_passes_with_its_own_cluster() -> None:
    delay = 1.0
    proc = run_example("selfcheck_write_concern.py", "--start", "--delay", str(delay))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "FAIL" not in out and "PASS: all" in out, out

    msg1 = line_index(out, r"Msg1 w=1 -> 201 seq=1 acks=\d in [\d.]+ s")
    msg2 = line_index(out, r"Msg2 w=2 -> 201 seq=2 acks=[23] in [\d.]+ s")
    msg3 = line_index(out, r"Msg3 w=3 -> 201 seq=3 acks=3 in [\d.]+ s")
    msg4 = line_index(out, r"Msg4 w=1 -> 201 seq=4 acks=\d in [\d.]+ s")
    assert msg1 < msg2 < msg3 < msg4
    # The timings themselves, read back from the output: only Msg3 waited for the slow S2.
    took = {n: float(re.search(rf"Msg{n} w=\d -> 201 .* in ([\d.]+) s", out).group(1)) for n in (1, 2, 3, 4)}  # type: ignore[union-attr]
    assert took[3] >= delay - 0.05, took
    assert max(took[1], took[2], took[4]) < delay / 2, took

    lagging = line_index(out, r"lists: master 4, S1 4, S2 3$")  # right after Msg4: S2 is behind
    caught_up = line_index(out, r"S2 shows the master's list [\d.]+ s after Msg4")
    assert msg4 < lagging < caught_up
    for name in ("master", "S1", "S2"):
        line_index(out, rf"{name} +4 entries \[1:Msg1, 2:Msg2, 3:Msg3, 4:Msg4\]$")


@pytest.mark.timeout(120)
def test_rejoin_selfcheck_passes_with_its_own_cluster() -> None:
    proc = run_example("selfcheck_rejoin.py", "--start", "--hold", "0.5")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "FAIL" not in out and "PASS: all" in out, out

    msg1 = line_index(out, r"Msg1 w=1 -> 201 seq=1 acks=\d in ")
    msg2 = line_index(out, r"Msg2 w=2 -> 201 seq=2 acks=[23] in ")
    sent3 = line_index(out, r"Msg3 w=3 sent: the master shows it as seq 3$")
    msg4 = line_index(out, r"Msg4 w=1 -> 201 seq=4 acks=\d in ")
    waiting = line_index(out, r"ok +Msg3 is still waiting 0.5 s later, S2 still down")
    start_s2 = line_index(out, r"starting S2$")
    msg3 = line_index(out, r"Msg3 w=3 -> 201 seq=3 acks=3 in [\d.]+ s \([\d.]+ s after S2 was started\)")
    assert msg1 < msg2 < sent3 < msg4 < waiting < start_s2 < msg3
    for name in ("master", "S1", "S2"):
        line_index(out, rf"{name} +4 entries \[1:Msg1, 2:Msg2, 3:Msg3, 4:Msg4\]$")


class _AlwaysUp(http.server.BaseHTTPRequestHandler):
    """Answers every GET like a live node, so a check that needs S2 down must refuse to go on."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"role": "secondary", "seq": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def live_s2() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysUp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.timeout(60)
def test_a_failed_expectation_is_printed_and_exits_1(live_s2: str) -> None:
    proc = run_example(
        "selfcheck_rejoin.py",
        "--master",
        "http://127.0.0.1:9",
        "--secondary",
        "http://127.0.0.1:9",
        "--secondary",
        live_s2,
        timeout=30,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"FAIL +S2 \(.*\) is down at the start", proc.stdout), proc.stdout
    assert "FAILED: 1 of 1 expectations did not hold" in proc.stdout, proc.stdout


# -- the Procfile ---------------------------------------------------------------------


def procfile_commands() -> dict[str, list[str]]:
    """The Procfile's processes as honcho reads them: name -> argv."""
    processes = parse_procfile((ROOT / "Procfile").read_text()).processes
    return {name: shlex.split(command) for name, command in processes.items()}


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def test_procfile_runs_a_master_and_two_secondaries_on_loopback() -> None:
    commands = procfile_commands()
    assert len(commands) == 3, commands
    assert all(argv[0] == "replog" for argv in commands.values()), "every process runs the console script"
    by_role: dict[str, list[list[str]]] = {}
    for argv in commands.values():
        by_role.setdefault(argv[1], []).append(argv)
    assert sorted(by_role) == ["master", "secondary"] and len(by_role["secondary"]) == 2, commands

    [master] = by_role["master"]
    assert option_values(master, "--port") == ["8000"]
    assert option_values(master, "--secondary") == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]

    secondaries = {option_values(argv, "--port")[0]: argv for argv in by_role["secondary"]}
    assert sorted(secondaries) == ["8001", "8002"]
    assert option_values(secondaries["8001"], "--delay") in ([], ["0"]), "S1 replicates without delay"
    delay = option_values(secondaries["8002"], "--delay")
    assert len(delay) == 1 and float(delay[0]) == 3.0, (
        f"S2 (8002) has a visible delay: {shlex.join(secondaries['8002'])}"
    )

    for argv in commands.values():
        assert option_values(argv, "--host") in ([], ["127.0.0.1"]), "loopback only (the default host)"


@pytest.mark.parametrize("name", ["master", "secondary1", "secondary2"])
def test_procfile_commands_are_valid_replog_command_lines(name: str) -> None:
    argv = procfile_commands()[name]
    command = replog_cli.commands[argv[1]]
    try:
        command.make_context(argv[1], argv[2:])  # parses and checks every option, starts nothing
    except click.ClickException as exc:
        pytest.fail(f"{name}: {shlex.join(argv)}: {exc.format_message()}")
