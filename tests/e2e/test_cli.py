"""The `replog` command against real processes: the client commands print their documented
lines and exit 0; failures print one line starting with "Error:" and exit non-zero; every
option can come from a REPLOG_* environment variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from replog.tools.cluster import Node, free_port, wait_until

REPLOG = str(Path(sys.executable).with_name("replog"))  # the console script of this venv


def run(*args: str, env: dict[str, str] | None = None, module: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `replog ARGS` (or `python -m replog ARGS`) with no REPLOG_* variables but those given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    base.update(env or {})
    cmd = [sys.executable, "-m", "replog", *args] if module else [REPLOG, *args]
    return subprocess.run(cmd, env=base, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_client_commands_against_a_cluster(cluster):
    c = cluster(2)
    s1, s2 = c.secondaries
    m = c.master.url

    out = run("post", "hello world", "-w", "3", "--master", m)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"stored seq=1 id=\S+ w=3 acks=3\n", out.stdout), out.stdout

    out = run("post", "again", "--id", "k-1", "-w", "2", "--master", m)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"stored seq=2 id=k-1 w=2 acks=[23]\n", out.stdout), out.stdout
    out = run("post", "again", "--id", "k-1", "-w", "2", "--master", m)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"already stored seq=2 id=k-1 w=2 acks=[23]\n", out.stdout), out.stdout

    c.wait_converged()
    for node in c.nodes:
        out = run("get", "--node", node.url)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "1\thello world\n2\tagain\n"

    wait_until(lambda: all(s["lag"] == 0 for s in c.master.health()["secondaries"]), 20, what="no lag")
    out = run("health", "--master", m)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "master ok seq=2 quorum=2/3"
    assert len(lines) == 3
    for line, s in zip(lines[1:], c.secondaries, strict=False):
        assert re.fullmatch(rf"\s+{re.escape(s.url)}\s+healthy\s+seq=2\s+lag=0\s+contact=\d+\.\d+s ago", line), line

    # A w above the number of nodes: the master's 400, as one line; nothing appended.
    line = one_error_line(run("post", "x", "-w", "9", "--master", m))
    assert "400" in line
    assert run("post", "x", "-w", "lots", "--master", m).returncode != 0  # refused by the CLI itself
    assert [msg["text"] for msg in c.master.messages()] == ["hello world", "again"]


def test_client_commands_against_a_dead_port():
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (("post", "x", "--master", dead), ("get", "--node", dead), ("health", "--master", dead)):
        result = run(*args)
        one_error_line(result)
        assert result.stdout == ""


def test_help_of_python_m_replog():
    out = run("--help", module=True)
    assert out.returncode == 0, out.stderr
    for command in ("master", "secondary", "post", "get", "health"):
        assert re.search(rf"^\s+{command}\s", out.stdout, re.M), out.stdout
    out = run("master", "--help", module=True)
    assert out.returncode == 0 and "--secondary" in out.stdout, out.stderr


class EnvNode(Node):
    """A node whose port (and secondaries) come from REPLOG_* variables only, not options."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "replog", self.role, *self.args]


def test_environment_variables_are_honoured(cluster):
    s_port, m_port = free_port(), free_port()
    s_url, m_url = f"http://127.0.0.1:{s_port}", f"http://127.0.0.1:{m_port}"
    secondary = cluster.node("secondary", port=s_port, env={"REPLOG_PORT": str(s_port)}, kind=EnvNode)
    master = cluster.node(
        "master",
        port=m_port,
        env={"REPLOG_PORT": str(m_port), "REPLOG_SECONDARY": s_url, "REPLOG_HEARTBEAT_INTERVAL": "0.2"},
        kind=EnvNode,
    )
    secondary.start()
    master.start()
    wait_until(lambda: master.health()["status"] == "ok", 20, what="the master to accept writes")
    assert [s["url"] for s in master.health()["secondaries"]] == [s_url]

    out = run("post", "from env", env={"REPLOG_MASTER": m_url, "REPLOG_W": "2"})
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"stored seq=1 id=\S+ w=2 acks=2\n", out.stdout), out.stdout
    out = run("get", env={"REPLOG_NODE": s_url})
    assert (out.returncode, out.stdout) == (0, "1\tfrom env\n"), out.stderr
    out = run("health", env={"REPLOG_MASTER": m_url})
    assert out.returncode == 0 and out.stdout.startswith("master ok seq=1 quorum=2/2\n"), out
