"""Unit tests for replog.commitment: the quorum seq and the waiters released by it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.commitment import Commitment, majority, reached


@pytest.mark.parametrize(
    ("matches", "w", "seq"),
    [
        ([5, 3, 1], 1, 5),
        ([5, 3, 1], 2, 3),
        ([5, 3, 1], 3, 1),
        ([1, 5, 3], 2, 3),  # order of nodes does not matter
        ([3, 1, 5], 1, 5),
        ([2, 2, 0], 2, 2),
        ([2, 2, 0], 3, 0),
        ([0, 0, 0], 1, 0),
        ([7], 1, 7),
        ([9, 4, 4, 8, 1], 3, 4),
        ([9, 4, 4, 8, 1], 2, 8),
        ([5, 3, 1], 0, 0),  # w out of range: nothing is reached
        ([5, 3, 1], 4, 0),
        ([], 1, 0),
    ],
)
def test_reached_table(matches, w, seq):
    original = list(matches)
    assert reached(matches, w) == seq
    assert matches == original  # the caller's list is not reordered


@pytest.mark.parametrize(("nodes", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(nodes, quorum):
    assert majority(nodes) == quorum
    # any two majorities share a node; one node fewer would not
    assert 2 * quorum > nodes
    assert 2 * (quorum - 1) <= nodes


def test_acks_and_the_quorum_seq_follow_updates():
    c = Commitment(3)
    assert c.nodes == 3
    assert [reached(c.matches, w) for w in (1, 2, 3)] == [0, 0, 0]
    c.update(0, 5)
    c.update(2, 3)
    assert c.matches == [5, 0, 3]
    assert [reached(c.matches, w) for w in (1, 2, 3)] == [5, 3, 0]
    assert [c.acks(s) for s in (1, 3, 4, 5, 6)] == [2, 2, 1, 1, 0]


def test_wait_returns_none_when_already_held():
    c = Commitment(3)
    c.update(0, 4)
    c.update(1, 4)
    assert c.wait(4, 2, "t") is None
    assert c.wait(3, 1, "t") is None
    assert c.waiting == 0
    waiter = c.wait(4, 3, "t")
    assert waiter is not None and waiter.token == "t" and (waiter.seq, waiter.w) == (4, 3)
    assert c.waiting == 1


def test_released_exactly_when_w_nodes_hold_the_seq():
    c = Commitment(3)
    c.update(0, 5)  # the master holds it
    waiter = c.wait(5, 2, "tok")
    assert c.update(1, 4) == []  # one secondary, but behind
    assert c.update(2, 4) == []
    assert c.waiting == 1
    assert c.update(1, 5) == [waiter]
    assert not waiter.live
    assert c.waiting == 0
    assert c.update(2, 9) == []  # never twice
    assert c.update(1, 9) == []


def test_several_w_values_at_once():
    c = Commitment(3)
    c.update(0, 1)
    w2 = c.wait(1, 2, "w2")
    w3 = c.wait(1, 3, "w3")
    assert c.update(1, 1) == [w2]
    assert c.update(2, 1) == [w3]
    assert c.waiting == 0


def test_one_update_releases_every_satisfied_waiter_across_seqs_and_ws():
    c = Commitment(3)
    c.update(0, 10)
    waiters = {(s, w): c.wait(s, w, (s, w)) for s in (2, 5, 10) for w in (2, 3)}
    released = c.update(1, 5)
    assert {x.token for x in released} == {(2, 2), (5, 2)}
    released = c.update(2, 10)
    assert {x.token for x in released} == {(2, 3), (5, 3), (10, 2)}
    assert c.waiting == 1
    assert c.update(1, 10) == [waiters[(10, 3)]]


def test_old_seq_waiter_added_after_a_newer_one_is_released_on_time():
    c = Commitment(3)
    c.update(0, 10)
    newer = c.wait(10, 2, "newer")
    older = c.wait(3, 2, "older")
    assert c.update(1, 3) == [older]  # not held up behind the seq-10 waiter
    assert newer.live
    assert c.update(1, 10) == [newer]


def test_cancel_removes_a_waiter():
    c = Commitment(2)
    c.update(0, 1)
    gone = c.wait(1, 2, "gone")
    kept = c.wait(1, 2, "kept")
    assert c.waiting == 2
    c.cancel(gone)
    assert c.waiting == 1
    c.cancel(gone)  # twice is harmless
    assert c.waiting == 1
    assert c.update(1, 1) == [kept]
    assert c.waiting == 0
    c.cancel(kept)  # cancelling a released waiter changes nothing
    assert c.waiting == 0


def test_compaction_of_many_dead_waiters_keeps_live_ones_correct():
    c = Commitment(3)
    c.update(0, 10_000)
    live = {}
    dead = []
    for seq in range(1, 3001):
        w = 2 + seq % 2
        waiter = c.wait(seq, w, seq)
        if seq % 100 == 0:
            live[seq] = waiter
        else:
            dead.append(waiter)
    for waiter in dead:
        c.cancel(waiter)
    assert c.waiting == len(live) == 30
    # the dead are compacted away, not kept in the heaps
    assert sum(len(heap) for heap in c._heaps.values()) < len(dead)

    # node 1 reaches 1500: w=2 waiters up to 1500 go, w=3 ones stay
    released = c.update(1, 1500)
    assert sorted(x.token for x in released) == [s for s in live if s <= 1500 and s % 2 == 0]
    released = c.update(2, 1500)
    assert sorted(x.token for x in released) == [s for s in live if s <= 1500 and s % 2 == 1]
    released = c.update(1, 3000)
    assert sorted(x.token for x in released) == [s for s in live if s > 1500 and s % 2 == 0]
    released = c.update(2, 3000)
    assert sorted(x.token for x in released) == [s for s in live if s > 1500 and s % 2 == 1]
    assert c.waiting == 0
    assert all(not w.live for w in dead)


def test_cancel_and_wait_interleaved_past_compaction():
    c = Commitment(2)
    kept = []
    for round_ in range(5):
        batch = [c.wait(10 * round_ + 1, 2, None) for _ in range(600)]
        for waiter in batch[:-1]:
            c.cancel(waiter)
        kept.append(batch[-1])
        assert c.waiting == len(kept)
    c.update(0, 100)
    released = c.update(1, 21)
    assert sorted(released, key=lambda x: x.seq) == kept[:3]
    assert c.waiting == 2
    assert c.update(1, 41) == kept[3:]
    assert c.waiting == 0


# --- drain -------------------------------------------------------------------


def test_drain_returns_every_live_waiter_and_leaves_none():
    c = Commitment(3)
    c.update(0, 10)
    waiters = [c.wait(seq, w, (seq, w)) for seq in (1, 4, 9) for w in (2, 3)]
    c.cancel(waiters[1])
    released = c.update(1, 4)  # (1, 2) and (4, 2) are satisfied before the drain
    assert {x.token for x in released} == {(1, 2), (4, 2)}
    drained = c.drain()
    assert {x.token for x in drained} == {(4, 3), (9, 2), (9, 3)}
    assert len(drained) == 3  # each once
    assert all(not x.live for x in waiters)
    assert c.waiting == 0
    assert c.drain() == []
    # nothing drained comes back, and the counter takes new waiters as before
    assert c.update(1, 10) == [] and c.update(2, 10) == []
    later = c.wait(11, 2, "later")
    assert c.waiting == 1
    assert c.update(0, 11) == []
    assert c.update(1, 11) == [later]
    assert c.waiting == 0


def test_drain_of_an_empty_counter_and_after_compaction():
    c = Commitment(2)
    assert c.drain() == []
    kept = []
    for i in range(1500):
        waiter = c.wait(5, 2, i)
        if i % 500 == 0:
            kept.append(waiter)
        else:
            c.cancel(waiter)
    assert c.waiting == 3
    assert sorted(x.token for x in c.drain()) == [0, 500, 1000]
    assert c.waiting == 0
    c.cancel(kept[0])  # cancelling a drained waiter changes nothing
    assert c.waiting == 0
    assert c.update(0, 5) == [] and c.update(1, 5) == []


# --- property ------------------------------------------------------------------


@st.composite
def scenarios(draw):
    nodes = draw(st.integers(1, 5))
    op = st.one_of(
        st.tuples(st.just("wait"), st.integers(1, 12), st.integers(1, nodes)),
        st.tuples(st.just("update"), st.integers(0, nodes - 1), st.integers(0, 12)),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
        st.tuples(st.just("drain")),
    )
    return nodes, draw(st.lists(op, max_size=60))


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_waiter_released_iff_w_matches_reach_its_seq_and_never_twice(scenario):
    nodes, operations = scenario
    c = Commitment(nodes)
    matches = [0] * nodes
    pending = []  # waiters neither released nor cancelled
    issued = []
    released_ids: set[int] = set()
    cancelled_ids: set[int] = set()

    def held_by(seq: int) -> int:
        return sum(1 for m in matches if m >= seq)

    for op in operations:
        if op[0] == "wait":
            _, seq, w = op
            waiter = c.wait(seq, w, len(issued))
            if held_by(seq) >= w:
                assert waiter is None
            else:
                assert waiter is not None
                pending.append(waiter)
                issued.append(waiter)
        elif op[0] == "update":
            _, node, match = op
            matches[node] = match
            released = c.update(node, match)
            ids = [id(x) for x in released]
            assert len(ids) == len(set(ids))
            assert not set(ids) & released_ids, "released twice"
            assert not set(ids) & cancelled_ids, "a cancelled waiter was released"
            due = {id(x) for x in pending if held_by(x.seq) >= x.w}
            assert set(ids) == due
            released_ids.update(ids)
            pending = [x for x in pending if id(x) not in due]
        elif op[0] == "drain":
            drained = c.drain()
            ids = [id(x) for x in drained]
            assert len(ids) == len(set(ids))
            assert set(ids) == {id(x) for x in pending}, "drain returns exactly the live waiters"
            cancelled_ids.update(ids)  # gone: never released afterwards
            pending = []
        elif issued:
            waiter = issued[op[1] % len(issued)]
            c.cancel(waiter)
            if id(waiter) not in released_ids:
                cancelled_ids.add(id(waiter))
                pending = [x for x in pending if x is not waiter]
        assert c.waiting == len(pending)
        assert c.matches == matches
        # nobody left waiting is already satisfied
        assert all(held_by(x.seq) < x.w for x in pending)
