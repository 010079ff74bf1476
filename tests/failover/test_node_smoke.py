"""`replog node` end to end, smallest whole: etcd and three nodes, a w=2 write, SIGKILL of the master,
a new master that takes writes and still holds the old write. (The heavier scenarios live beside it.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from replog.tools.cluster import Node, free_port, http_json, wait_until

TTL = 2


def start_nodes(tmp_path: Path, etcd_url: str, count: int = 3) -> list[Node]:
    nodes = []
    for i in range(count):
        port = free_port()
        name = f"n{i}"
        args = [
            *("--name", name, "--etcd", etcd_url, "--nodes", str(count), "--cluster", "smoke"),
            *("--lease-ttl", str(TTL), "--heartbeat-interval", "0.2", "--data-dir", str(tmp_path / name)),
        ]
        node = Node("node", port, args, tmp_path / f"{name}.log")
        nodes.append(node)
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_listening()
    return nodes


@pytest.fixture
def nodes(tmp_path: Path, etcd) -> Iterator[list[Node]]:
    started = start_nodes(tmp_path, etcd.url)
    try:
        yield started
    finally:
        for node in started:
            node.kill()


def the_master(nodes: list[Node]) -> Node | None:
    """The one live node that answers as a master taking writes (recovered, not deposed)."""
    found = []
    for node in nodes:
        if not node.running:
            continue
        try:
            health = node.health(timeout=1.0)
        except OSError:
            continue
        if health.get("role") == "master" and health.get("status") == "ok" and not health.get("recovering"):
            found.append(node)
    assert len(found) <= 1, f"two masters take writes: {[n.url for n in found]}"
    return found[0] if found else None


def texts(node: Node) -> list[str] | None:
    """What the node shows, or None while it answers 503 (changing roles)."""
    status, body = http_json("GET", node.url + "/messages", timeout=5)
    return [m["text"] for m in body["messages"]] if status == 200 else None


def test_a_killed_master_is_replaced_and_its_acknowledged_write_survives(nodes: list[Node]) -> None:
    master = wait_until(lambda: the_master(nodes), timeout=30, interval=0.1, what="a master taking writes")
    status, body = http_json("POST", master.url + "/messages", {"message": "before", "w": 2})
    assert status == 201, body
    assert body["acks"] >= 2

    # A secondary answers a write with not_master and names the master (once it has read the leader key).
    secondary = next(n for n in nodes if n is not master)

    def misdirected() -> dict | None:
        status, body = http_json("POST", secondary.url + "/messages", {"message": "misdirected", "w": 2})
        assert status == 503 and body["error"] == "not_master", body
        return body if body["master"] is not None else None

    assert wait_until(misdirected, timeout=5, what="the secondary to name the master")["master"] == master.url

    # `replog post` sent to a secondary follows not_master to the master.
    out = subprocess.run(
        [sys.executable, "-m", "replog", "post", "followed", "-w", "2", "--json", "--master", secondary.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["acks"] >= 2

    master.kill()
    survivors = [n for n in nodes if n is not master]
    successor = wait_until(lambda: the_master(survivors), timeout=TTL * 6 + 10, interval=0.1, what="a new master")
    status, body = http_json("POST", successor.url + "/messages", {"message": "after", "w": 2})
    assert status == 201, body
    assert successor.health()["epoch"] > 0
    assert [m["text"] for m in successor.messages()] == ["before", "followed", "after"]
    for node in survivors:
        wait_until(
            lambda n=node: texts(n) == ["before", "followed", "after"], timeout=10, what=f"{node.url} to catch up"
        )


def test_a_deposed_master_rolls_back_its_unreplicated_tail_into_the_rollback_file(
    nodes: list[Node], tmp_path: Path
) -> None:
    """The old master holds w=1 writes no other node has; cut off past its lease, it is replaced, and when it
    comes back it rejoins as a secondary: its tail goes to DATA_DIR/rollback/, its log becomes the new one."""
    master = wait_until(lambda: the_master(nodes), timeout=30, interval=0.1, what="a master taking writes")
    status, body = http_json("POST", master.url + "/messages", {"message": "kept", "w": 3})
    assert status == 201, body
    others = [n for n in nodes if n is not master]
    for node in others:
        node.kill()  # the master's w=1 writes reach no one (a killed node drops what was in flight to it)
    for i in range(3):
        status, body = http_json("POST", master.url + "/messages", {"message": f"tail{i}", "w": 1})
        assert status == 201, body
    master.pause()
    for node in others:
        node.start(wait=False)
    successor = wait_until(lambda: the_master(others), timeout=TTL * 6 + 10, interval=0.1, what="a new master")
    status, body = http_json("POST", successor.url + "/messages", {"message": "new", "w": 2})
    assert status == 201, body
    master.resume()  # past its deadline: it answers no write, steps down and rejoins
    wait_until(
        lambda: texts(master) == ["kept", "new"], timeout=TTL * 6 + 10, what="the old master to hold the new log"
    )
    data_dir = Path(master.args[master.args.index("--data-dir") + 1])
    files = list((data_dir / "rollback").glob("*.jsonl"))
    assert len(files) == 1, files
    rolled = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [(r["seq"], r["text"]) for r in rolled] == [(2, "tail0"), (3, "tail1"), (4, "tail2")]
    events = [e["event"] for e in master.events()]
    assert "rejoined_as_secondary" in events and "rolled_back" in events


def bump_revision(etcd_url: str, times: int) -> None:
    """Advance etcd's revision (each put is one revision), as a long-lived cluster's etcd has."""
    key = base64.b64encode(b"/scratch/bump").decode()
    for _ in range(times):
        status, body = http_json("POST", etcd_url + "/v3/kv/put", {"key": key, "value": key})
        assert status == 200, body


def test_a_wiped_etcd_hands_out_stale_epochs_which_are_refused_and_logged(nodes: list[Node], etcd) -> None:
    """etcd loses its data: its revisions start again below the epochs the cluster used. No node takes
    writes at such an epoch, they say so (etcd_epoch_stale), and writes resume only at a higher epoch."""
    first = wait_until(lambda: the_master(nodes), timeout=30, interval=0.1, what="a master taking writes")
    bump_revision(etcd.url, 40)
    first.kill()  # the next master's epoch is above 40
    first.start(wait=False)
    master = wait_until(lambda: the_master(nodes), timeout=30, interval=0.1, what="a master at a high epoch")
    old_epoch = master.health()["epoch"]
    assert old_epoch > 40
    status, body = http_json("POST", master.url + "/messages", {"message": "before", "w": 3})
    assert status == 201, body
    etcd.wipe()

    def refused() -> bool:
        return any(e.get("event") == "etcd_epoch_stale" for n in nodes for e in n.events())

    def no_stale_master() -> bool:
        for node in nodes:
            try:
                health = node.health(timeout=1.0)
            except OSError:
                continue
            if health.get("role") == "master" and health.get("status") == "ok" and not health.get("recovering"):
                assert health["epoch"] >= old_epoch, f"a master takes writes at stale epoch {health['epoch']}"
        return refused()

    wait_until(no_stale_master, timeout=TTL * 10 + 10, interval=0.1, what="a node to refuse a stale epoch")
    events = [e for n in nodes for e in n.events() if e.get("event") == "etcd_epoch_stale"]
    assert all(e["epoch"] <= e["known"] for e in events)


def test_a_master_without_a_majority_for_a_few_lease_periods_resigns_the_key(nodes: list[Node]) -> None:
    master = wait_until(lambda: the_master(nodes), timeout=30, interval=0.1, what="a master taking writes")
    for node in nodes:
        if node is not master:
            node.kill()

    def resigned() -> bool:
        events = [e.get("event") for e in master.events()]
        return "no_promise_majority" in events and "resigned" in events[events.index("no_promise_majority") :]

    wait_until(resigned, timeout=TTL * 3 + 10, interval=0.1, what="the lone master to resign")
