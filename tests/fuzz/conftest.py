"""Fuzz tests run against real `replog` processes, started once per module (see each module's fixture).

When a test fails, the report carries the last lines of the log of every node it used.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from replog.tools.cluster import LocalCluster, Node

TAIL_LINES = 40


def _nodes(item: pytest.Item) -> list[Node]:
    """The nodes a test used: its fixtures' values that are nodes or clusters, or hold one as an attribute."""
    found: dict[str, Node] = {}
    for value in getattr(item, "funcargs", {}).values():
        for obj in [value, *getattr(value, "__dict__", {}).values()]:
            for node in obj.nodes if isinstance(obj, LocalCluster) else [obj] if isinstance(obj, Node) else []:
                found.setdefault(node.url, node)
    return list(found.values())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == "call":
        parts = []
        for node in _nodes(item):
            parts.append(f"===== {node.role} {node.url} ({'running' if node.running else 'not running'}) =====")
            parts.append(node.tail(TAIL_LINES) or "(empty log)")
        if parts:
            report.sections.append((f"replog node logs, last {TAIL_LINES} lines each", "\n".join(parts)))
