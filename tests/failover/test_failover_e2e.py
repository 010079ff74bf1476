"""Automatic failover end to end: a real etcd and three real `replog node` processes (SPEC "Automatic
failover (etcd)"), through replog.tools.failover.FailoverCluster.

Each test kills, pauses or cuts off a node (the master, typically), waits for conditions with deadlines,
and checks what the SPEC promises: writes resume under a new master; no write acknowledged with
w = majority is lost or moved; a master past its lease acknowledges nothing; a node that was master
rolls back exactly its unreplicated w=1 tail into DATA_DIR/rollback/. Leases are short (LEASE_TTL) to
keep the file fast; the times measured are printed (`pytest -s`), and asserted only loosely.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from replog.tools.cluster import http_json, wait_until
from replog.tools.failover import Ack, FailoverCluster, Writer, is_master

pytestmark = pytest.mark.timeout(120)

LEASE_TTL = 2  # seconds; etcd leases are whole seconds
# How long a failover may take here before a test calls it broken: the SPEC's lease TTL + 2 s, plus a
# wide margin for a loaded 2-core machine (the bench measures the real figure).
FAILOVER_DEADLINE = LEASE_TTL + 2 + 20


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[Callable[..., FailoverCluster]]:
    """Starts FailoverClusters (in tmp_path) and stops them at the end; prints their logs' tails there,
    which pytest shows for a failing test."""
    made: list[FailoverCluster] = []

    def make(nodes: int = 3, **kw: Any) -> FailoverCluster:
        kw.setdefault("lease_ttl", LEASE_TTL)
        fc = FailoverCluster(nodes, workdir=tmp_path / f"fc{len(made)}", **kw)
        made.append(fc)
        fc.start(timeout=60)
        return fc

    try:
        yield make
    finally:
        for fc in made:
            print(fc.tails())
            fc.stop()


def post(url: str, message: str, timeout: float = 10.0, **fields: Any) -> tuple[int, Any]:
    return http_json("POST", url + "/messages", {"message": message, **fields}, timeout=timeout)


def assert_kept(acks: list[Ack], final: list[dict[str, Any]]) -> None:
    """Every acknowledged write is in the final list once, at the seq it was answered with."""
    at = {e["text"]: e["seq"] for e in final}
    assert len(at) == len(final), "a text appears twice in the log"
    missing = [(a.seq, a.text) for a in acks if at.get(a.text) != a.seq]
    assert not missing, f"{len(missing)} acknowledged writes lost or moved (seq, text): {missing[:10]}"


def test_sigkill_of_the_master_under_load_resumes_writes_and_loses_no_majority_write(failover) -> None:
    fc = failover()
    old = fc.wait_master()
    writers = [Writer(fc, tag=f"k{i}").start() for i in range(3)]
    try:
        wait_until(lambda: sum(len(w.acked()) for w in writers) >= 30, 30, what="30 writes before the kill")
        killed = fc.kill(old)
        others = {n.url for n in fc.nodes if n is not old}
        first = min(
            (w.wait_acks_after(killed, 1, FAILOVER_DEADLINE, by=others)[0] for w in writers), key=lambda a: a.at
        )
        print(f"SIGKILL of the master to the first acknowledged write after it: {first.at - killed:.2f}s")
        for w in writers:
            w.wait_acks_after(killed, 10, 30, by=others)
    finally:
        stats = [w.stop() for w in writers]
    acks = [a for s in stats for a in s.acked]
    survivors = [n for n in fc.nodes if n is not old]
    final = fc.wait_converged(30, nodes=survivors)
    assert_kept(acks, final)
    # The old master comes back on its data dir as a secondary and ends with the same list.
    fc.restart(old)
    final = fc.wait_converged(30)
    assert_kept(acks, final)
    assert old.messages() == final


def test_a_master_paused_past_its_lease_acknowledges_nothing_after_it_and_rejoins(failover) -> None:
    fc = failover()
    old = fc.wait_master()
    for i in range(5):
        assert post(old.url, f"before-{i}", w="majority")[0] == 201
    fc.pause(old)
    new = fc.wait_master(FAILOVER_DEADLINE, exclude=[old])
    assert post(new.url, "under-new", w="majority")[0] == 201
    # A write sent to the stopped master waits in its socket (the kernel accepts the connection and takes the
    # bytes); the node reads it only once resumed, past its lease deadline.
    conn = http.client.HTTPConnection(old.host, old.port, timeout=30)
    body = json.dumps({"message": "to-the-paused-master", "w": 1})
    conn.request("POST", "/messages", body, {"Content-Type": "application/json"})
    fc.resume(old)
    try:
        resp = conn.getresponse()
        answer: Any = (resp.status, json.loads(resp.read()))
    except (OSError, http.client.HTTPException) as exc:
        answer = exc
    finally:
        conn.close()
    assert not isinstance(answer, tuple) or answer[0] == 503, f"the deposed master answered {answer}"
    if isinstance(answer, tuple):
        assert answer[1]["error"] == "not_master", answer
    # Once awake it is no master: a write to it is refused, naming the master.
    status, body = post(old.url, "after-resume", w=1)
    assert (status, body["error"]) == (503, "not_master"), body
    assert body.get("master") in (new.url, None), body
    wait_until(lambda: (fc.health(old) or {}).get("role") == "secondary", 30, what="the old master to be a secondary")
    final = fc.wait_converged(30)
    texts = [e["text"] for e in final]
    assert texts[:5] == [f"before-{i}" for i in range(5)] and "under-new" in texts, texts
    assert "to-the-paused-master" not in texts and "after-resume" not in texts, texts
    assert fc.master() is new


def test_a_master_cut_off_from_etcd_only_steps_down_and_another_takes_writes(failover) -> None:
    fc = failover()
    old = fc.wait_master()
    assert post(old.url, "before", w="majority")[0] == 201
    cut = time.monotonic()
    fc.isolate(old)  # its peers and clients still reach it; only etcd does not
    wait_until(lambda: not is_master(fc.health(old)), FAILOVER_DEADLINE, what="the cut-off master to step down")
    stepped_down = time.monotonic() - cut
    new = fc.wait_master(FAILOVER_DEADLINE, exclude=[old])
    print(f"cut off from etcd: stepped down after {stepped_down:.2f}s, new master after {time.monotonic() - cut:.2f}s")
    status, body = post(old.url, "to-the-cut-off-master", w=1)
    assert status == 503 and body["error"] == "not_master", body
    assert post(new.url, "under-new", w="majority")[0] == 201
    fc.heal(old)
    final = fc.wait_converged(30)
    texts = [e["text"] for e in final]
    assert texts[0] == "before" and "under-new" in texts and "to-the-cut-off-master" not in texts, texts


def test_a_new_master_behind_another_node_recovers_the_majority_writes_it_lacks(failover) -> None:
    """The node that wins the leader key lacks the latest majority writes; the one node that holds them was
    cut off from etcd meanwhile (so it could not win, and its member key lapsed): the winner takes no write
    until that node is back and has promised, then copies the writes from it, never rolls them back."""
    fc = failover()
    old = fc.wait_master()
    ahead, behind = [n for n in fc.nodes if n is not old]
    assert post(old.url, "all-have-it", w="all")[0] == 201
    fc.kill(behind)  # killed, not paused: a paused node would read the master's queued requests when resumed
    acked = []
    for i in range(5):
        status, body = post(old.url, f"majority-{i}", w="majority")
        assert status == 201, body
        acked.append((body["seq"], f"majority-{i}"))
    fc.isolate(ahead)
    fc.kill(old)
    fc.restart(behind)

    def behind_holds_the_key() -> bool:
        leader = fc.leader()
        return leader is not None and json.loads(leader.value).get("name") == fc.name(behind)

    wait_until(behind_holds_the_key, FAILOVER_DEADLINE, what=f"{fc.name(behind)} to hold the leader key")
    # Without a promise from the only other live node it has no majority: it must not take writes yet.
    assert fc.master() is None
    fc.heal(ahead)
    new = fc.wait_master(FAILOVER_DEADLINE)
    assert new is behind, f"{fc.name(new)} is master, not {fc.name(behind)}, which held the key"
    assert post(new.url, "under-new", w="majority")[0] == 201
    final = fc.wait_converged(30, nodes=[ahead, behind])
    at = {e["text"]: e["seq"] for e in final}
    assert [(at.get(text), text) for _, text in acked] == acked, final
    assert fc.rollback_files(ahead) == []


def test_a_master_that_cannot_reach_etcd_stops_acknowledging_at_its_own_lease_deadline(failover) -> None:
    """etcd cut off from every node: nobody can be elected, so nobody deposes the master; only its own
    deadline (the send time of its last good keep-alive plus the TTL) stops its w=1 acknowledgements."""
    fc = failover()
    old = fc.wait_master()
    writer = Writer(fc, tag="d", w=1, request_timeout=2.0).start()
    try:
        writer.wait_acks_after(0.0, 10, 30, by={old.url})
        cut = time.monotonic()
        for node in fc.nodes:
            fc.isolate(node)
        wait_until(lambda: not is_master(fc.health(old)), LEASE_TTL + 10, what="the master to stop at its deadline")
        stopped = time.monotonic()
        status, body = post(old.url, "past-the-deadline", w=1)
        assert (status, body.get("error")) == (503, "not_master"), body
    finally:
        stats = writer.stop()
    last = max(a.at for a in stats.acked if a.node == old.url)
    print(f"etcd cut: last w=1 ack {last - cut:.2f}s after the cut, role dropped {stopped - cut:.2f}s after it")
    # (The last keep-alive was sent before the cut; the answer's trip back is the only slack.)
    assert last - cut <= LEASE_TTL + 0.5, f"the master acknowledged a write {last - cut:.2f}s after etcd was cut"
    fc.heal()
    fc.wait_master(FAILOVER_DEADLINE)
    assert fc.post("after-heal", w="majority")[0] == 201
    final = fc.wait_converged(30)
    assert_kept([a for a in stats.acked if a.node == old.url and a.at <= cut], final)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_etcd_restarted_on_its_data_the_cluster_regains_a_master_and_takes_writes(failover, kill: bool) -> None:
    fc = failover()
    fc.wait_master()
    writer = Writer(fc, tag="e").start()
    try:
        writer.wait_acks_after(0.0, 10, 30)
        fc.restart_etcd(kill=kill, down=LEASE_TTL / 2)
        back = time.monotonic()
        writer.wait_acks_after(back, 10, FAILOVER_DEADLINE)
        print(f"etcd back: 10 writes acknowledged {time.monotonic() - back:.2f}s later")
    finally:
        stats = writer.stop()
    final = fc.wait_converged(30)
    assert_kept(stats.acked, final)
    assert fc.leader() is not None, "nobody holds the leader key after etcd came back"


def test_a_node_that_was_master_rolls_back_exactly_its_unreplicated_w1_tail(failover) -> None:
    fc = failover()
    old = fc.wait_master()
    for i in range(3):
        assert post(old.url, f"base-{i}", w="all")[0] == 201
    secondaries = [n for n in fc.nodes if n is not old]
    for node in secondaries:
        fc.pause(node)
    tail: list[tuple[int, str]] = []
    try:
        for i in range(5):
            status, body = post(old.url, f"tail-{i}", w=1, timeout=5.0)
            if status == 201:
                tail.append((body["seq"], f"tail-{i}"))
    finally:
        fc.kill(old)
        # The master's replication requests wait unread in the stopped secondaries' sockets: resumed, they
        # would take the tail (and a new master would keep it). Killed while stopped, they never read them.
        for node in secondaries:
            fc.kill(node)
    assert tail, "the master acknowledged no w=1 write while its secondaries were stopped"
    for node in secondaries:
        fc.restart(node)
    new = fc.wait_master(FAILOVER_DEADLINE)
    for i in range(3):
        assert post(new.url, f"after-{i}", w="majority")[0] == 201
    fc.restart(old)
    final = fc.wait_converged(60)
    texts = [e["text"] for e in final]
    assert texts[:3] == ["base-0", "base-1", "base-2"] and texts[3:6] == ["after-0", "after-1", "after-2"], texts
    assert old.messages() == new.messages() == final
    rolled: list[tuple[int, str]] = []
    for path in fc.rollback_files(old):
        rolled += [(r["seq"], r["text"]) for r in map(json.loads, path.read_text().splitlines())]
    assert rolled == tail, f"rollback files hold {rolled}, the unreplicated w=1 tail was {tail}"
    for node in secondaries:
        assert fc.rollback_files(node) == [], f"{fc.name(node)} rolled back entries it never had to"
