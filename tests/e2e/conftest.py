"""Fixtures of the end-to-end tests: real `python -m replog` processes on free loopback ports.

`cluster(...)` starts a LocalCluster and returns it; every cluster (and every extra node) a test
made is stopped when the test ends, pass or fail. When a test fails, the report carries the
last lines of every node's log.
"""

from __future__ import annotations

import resource
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from replog.tools.cluster import LocalCluster, Node, free_port

TAIL_LINES = 40


class Clusters:
    """Makes clusters and stand-alone nodes for one test, and stops them all at its end."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.clusters: list[LocalCluster] = []
        self.nodes: list[Node] = []  # stand-alone nodes, started by the test itself

    def __call__(
        self, secondaries: int = 2, *, start: bool = True, skip: Collection[int] = (), **kw: Any
    ) -> LocalCluster:
        """A LocalCluster (heartbeat every 0.2 s unless told otherwise), started unless start=False;
        secondaries whose index is in skip are not started (their ports stay reserved)."""
        cluster = LocalCluster(secondaries, workdir=self._workdir / f"cluster{len(self.clusters)}", **kw)
        self.clusters.append(cluster)
        if start:
            cluster.start(skip=skip)
        return cluster

    def node(
        self,
        role: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        kind: type[Node] = Node,
    ) -> Node:
        """A stand-alone node (of class kind), not started; stopped at the end of the test like the clusters."""
        port = free_port() if port is None else port
        node = kind(role, port, args, self._workdir / f"{role}-{port}.log", env=env)
        self.nodes.append(node)
        return node

    def all_nodes(self) -> list[Node]:
        return [n for c in self.clusters for n in c.nodes] + self.nodes

    def tails(self, lines: int = TAIL_LINES) -> str:
        parts = []
        for node in self.all_nodes():
            state = "running" if node.running else "not running"
            parts.append(f"===== {node.role} {node.url} ({state}, started {node.starts}x), {node.log_path} =====")
            parts.append(node.tail(lines) or "(empty log)")
        return "\n".join(parts)

    def close(self) -> None:
        for node in self.all_nodes():
            node.stop()


CLUSTERS = pytest.StashKey[Clusters]()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Clusters]:
    """Factory: cluster(secondaries=2, delays=..., fail_rates=..., master_args=..., skip=...)."""
    clusters = Clusters(tmp_path)
    request.node.stash[CLUSTERS] = clusters
    try:
        yield clusters
    finally:
        clusters.close()


@pytest.fixture(scope="module")
def enough_descriptors() -> Iterator[None]:
    """The test process opens thousands of sockets: raise its own soft descriptor limit as far as the hard
    one allows (up to 6,000) for the module, then put it back. Modules ask for it with usefixtures."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 6000 if hard == resource.RLIM_INFINITY else min(hard, 6000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for concurrent client requests.

    Not joined at teardown: a request still blocked when a test fails must not hold up the
    cluster's teardown, which is what ends it (its node goes away).
    """
    executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="client")
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, append the tail of every node's log to the report (nodes are still up during 'call')."""
    outcome = yield
    report = outcome.get_result()
    clusters = item.stash.get(CLUSTERS, None)
    if report.failed and clusters is not None and clusters.all_nodes():
        report.sections.append((f"replog node logs, last {TAIL_LINES} lines each ({report.when})", clusters.tails()))
