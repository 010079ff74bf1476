"""A member that comes back under another URL keeps one replication slot, keyed by its name.

The same process reachable under two URLs (its --advertise changed at a restart: 127.0.0.1 and localhost
for one port) must not get two slots, or its acks count twice toward w and the quorum: a w=3 write could
be acknowledged while two processes hold it. And a member that moves to another port must get its slot
back at once, not when the master changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replog.tools.cluster import Node, free_port, http_json, wait_until
from replog.tools.failover import FailoverCluster

TTL = 2


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FailoverCluster]:
    fc = FailoverCluster(3, lease_ttl=TTL, workdir=tmp_path, node_args=("--heartbeat-interval", "0.2"))
    try:
        fc.start()
        yield fc
    except BaseException:
        print(fc.tails())
        raise
    finally:
        fc.cleanup()


def move(node: Node, url: str, port: int, wait: bool = True) -> None:
    """Restart node (gracefully stopped first) advertising url, listening on port."""
    node.stop()
    i = node.args.index("--advertise")
    node.args[i + 1] = url
    node.port = port
    node.url = f"http://127.0.0.1:{port}"  # how the harness reaches it, whatever it advertises
    node.start(wait=wait)


def secondaries(master: Node) -> list[dict[str, Any]]:
    return master.health(timeout=2.0)["secondaries"]


def healthy_at(master: Node, url: str) -> list[dict[str, Any]] | None:
    """The master's secondaries once the one at url answers healthy (None before)."""
    found = secondaries(master)
    return found if any(s["url"] == url and s["status"] == "healthy" for s in found) else None


def post(master: Node, text: str, w: int, timeout: float | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"message": text, "w": w}
    if timeout is not None:
        body["timeout"] = timeout
    return http_json("POST", master.url + "/messages", body, timeout=10)


def holds(node: Node, text: str) -> bool:
    return any(m["text"] == text for m in node.messages(timeout=5.0))


def test_a_member_keeps_one_slot_when_its_url_changes(cluster: FailoverCluster) -> None:
    first = cluster.wait_master()
    # A failover leaves the new master with a free slot: the old master's key went with its lease.
    cluster.kill(first)
    master = cluster.wait_master(exclude=[first])
    mover = next(n for n in cluster.nodes if n not in (first, master))

    # The same process, now advertised as localhost: its slot follows it; no second slot reaches it.
    new_url = f"http://localhost:{mover.port}"
    move(mover, new_url, mover.port)
    found = wait_until(lambda: healthy_at(master, new_url), timeout=15, what="the moved member healthy")
    assert [(s["url"], s["member"]) for s in found] == [(new_url, cluster.name(mover))], found
    # Two processes hold a write: w=3 must not be met.
    status, body = post(master, "only-two", 3, timeout=1.0)
    assert status == 504 and body["acks"] == 2, (status, body)

    # The third process back: w=3 is met, and all three hold the write.
    cluster.restart(first)
    wait_until(lambda: healthy_at(master, first.url), timeout=15, what="the old master back as a secondary")
    assert slots(secondaries(master)) == {cluster.name(first): first.url, cluster.name(mover): new_url}
    status, body = post(master, "all-three", 3, timeout=10.0)
    assert status == 201 and body["acks"] == 3, (status, body)
    for node in cluster.nodes:
        wait_until(lambda node=node: holds(node, "all-three"), timeout=10, what=f"{node.url} to hold the write")

    # The moved process paused: it is one node, so w=3 is not met with it silent.
    cluster.pause(mover)
    try:
        status, body = post(master, "mover-paused", 3, timeout=1.0)
        assert status == 504 and body["acks"] == 2, (status, body)
    finally:
        cluster.resume(mover)

    # A move to another port while every slot is taken: the slot follows it, no "too_many_members".
    port = free_port()
    moved_url = f"http://127.0.0.1:{port}"
    move(mover, moved_url, port)
    found = wait_until(lambda: healthy_at(master, moved_url), timeout=15, what="the member at its new port")
    assert slots(found) == {cluster.name(first): first.url, cluster.name(mover): moved_url}, found
    status, body = post(master, "after-move", 3, timeout=10.0)
    assert status == 201 and body["acks"] == 3, (status, body)
    wait_until(lambda: holds(mover, "after-move"), timeout=10, what="the moved member to hold the write")

    # Two members swap ports: each slot follows its own member (the URLs alone would look unchanged).
    a, b = (first.port, first.url), (mover.port, mover.url)
    first.stop()
    mover.stop()
    move(first, b[1], b[0], wait=False)
    move(mover, a[1], a[0], wait=False)
    first.wait_listening()
    mover.wait_listening()
    want = {cluster.name(first): b[1], cluster.name(mover): a[1]}

    def swapped() -> bool:
        found = secondaries(master)
        return slots(found) == want and all(s["status"] == "healthy" for s in found)

    wait_until(swapped, timeout=15, what="both slots following their members")
    status, body = post(master, "after-swap", 3, timeout=10.0)
    assert status == 201 and body["acks"] == 3, (status, body)


def slots(found: list[dict[str, Any]]) -> dict[str, str]:
    """member name -> URL of its slot, as the master's /health shows them."""
    return {s["member"]: s["url"] for s in found}
