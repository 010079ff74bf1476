"""Unit tests for replog.reorder: duplicates dropped, gaps held, only the gap-free prefix shown."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.log import Log
from replog.reorder import Conflict, ReorderBuffer

LOG_ID = "0123456789abcdef"


def e(seq: int) -> tuple[int, None, str]:
    """The entry the master would send for seq (generated id)."""
    return (seq, None, f"m{seq}")


def shown(log: Log) -> list[int]:
    return [entry.seq for entry in log.entries()]


def assert_log_is_1_to(log: Log, k: int) -> None:
    assert shown(log) == list(range(1, k + 1))
    assert [entry.text for entry in log.entries()] == [f"m{s}" for s in range(1, k + 1)]


@pytest.mark.parametrize(
    ("offers", "shown_after_each"),
    [
        ([[1], [2], [3]], [1, 2, 3]),
        ([[3], [2], [1]], [0, 0, 3]),
        ([[1, 2, 4], [3]], [2, 4]),  # holding 1, 2 and 4 shows 1 and 2; 4 once 3 arrives
        ([[2, 4], [1], [3]], [0, 2, 4]),
        ([[1, 1, 1], [1], [2, 2]], [1, 1, 2]),
        ([[5, 4, 3], [5, 4], [2], [1]], [0, 0, 0, 5]),
        ([[1, 2, 3], [2, 3], [1]], [3, 3, 3]),  # resends of held seqs change nothing
        ([[], [1]], [0, 1]),
    ],
)
def test_offer_table(offers, shown_after_each):
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    for seqs, k in zip(offers, shown_after_each):
        buf.offer([e(s) for s in seqs])
        assert_log_is_1_to(log, k)


@pytest.mark.parametrize(
    ("held", "pending", "offer", "first", "released"),
    [
        (0, [], [1, 2], 1, [1, 2]),
        (0, [], [2], 1, []),
        (2, [4, 5], [3], 3, [3, 4, 5]),
        (2, [5], [3], 3, [3]),
        (3, [], [1, 2, 3], 4, []),
    ],
)
def test_offer_reports_what_became_gap_free(held, pending, offer, first, released):
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    buf.offer([e(s) for s in range(1, held + 1)])
    buf.offer([e(s) for s in pending])
    assert log.last_seq == held
    got = buf.offer([e(s) for s in offer])
    assert got.first == first
    assert got.items == [(None, f"m{s}") for s in released]
    assert log.last_seq == held + len(released)


def test_released_items_keep_client_ids():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    buf.offer([(2, "k2", "b")])
    got = buf.offer([(1, None, "a")])
    assert got.items == [(None, "a"), ("k2", "b")]
    assert log.id_of(2) == "k2"
    assert log.id_of(1) == f"{LOG_ID[:8]}-1"


def test_pending_never_holds_the_next_seq_or_held_seqs():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    buf.offer([e(3), e(5), e(1)])
    assert log.last_seq == 1
    assert sorted(buf.pending) == [3, 5]
    buf.offer([e(2)])
    assert log.last_seq == 3
    assert sorted(buf.pending) == [5]


def test_reset_forgets_pending_and_a_resend_fills_in():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    buf.offer([e(1), e(3), e(4)])
    buf.reset()
    buf.offer([e(2)])
    assert_log_is_1_to(log, 2)  # 3 and 4 were forgotten, not shown
    buf.offer([e(3), e(4)])
    assert_log_is_1_to(log, 4)


def test_too_many_pending_are_dropped_and_resent_later():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log, max_pending=3)
    buf.offer([e(s) for s in (2, 3, 4)])
    assert len(buf.pending) == 3
    buf.offer([e(5)])  # a fourth entry behind the gap: the whole buffer goes
    assert buf.pending == {}
    assert log.last_seq == 0
    buf.offer([e(s) for s in range(1, 6)])
    assert_log_is_1_to(log, 5)


def test_check_accepts_identical_resends_and_unheld_seqs():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    buf.offer([e(1), (2, "k", "b")])
    buf.check([e(1), (2, "k", "b"), e(3), (99, "anything", "x")])


@pytest.mark.parametrize(
    ("entry", "seq"),
    [
        ((1, None, "other text"), 1),
        ((2, None, "b"), 2),  # same text, id differs (generated vs client)
        ((2, "k-other", "b"), 2),
        ((1, "k", "m1"), 1),
    ],
)
def test_check_raises_conflict_and_changes_nothing(entry, seq):
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    buf.offer([e(1), (2, "k", "b"), e(4)])
    with pytest.raises(Conflict) as info:
        buf.check([e(3), entry])
    assert info.value.seq == seq
    assert log.last_seq == 2
    assert sorted(buf.pending) == [4]


# --- property ------------------------------------------------------------------


@st.composite
def deliveries(draw):
    """seqs 1..n in any order, each at least once, some duplicated, cut into batches."""
    n = draw(st.integers(0, 40))
    extra = draw(st.lists(st.integers(1, max(n, 1)), max_size=n * 2)) if n else []
    order = draw(st.permutations(list(range(1, n + 1)) + extra))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=10)))
    batches, start = [], 0
    for cut in cuts + [len(order)]:
        batches.append(order[start:cut])
        start = cut
    return n, batches


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_any_arrival_order_shows_1_to_n_once_in_order(delivery):
    n, batches = delivery
    log = Log(LOG_ID)
    buf = ReorderBuffer(log)
    offered: set[int] = set()
    for batch in batches:
        entries = [e(s) for s in batch]
        buf.check(entries)  # identical resends never conflict
        released = buf.offer(entries)
        offered.update(batch)
        # what the log shows is exactly the gap-free prefix of what was offered
        k = 0
        while k + 1 in offered:
            k += 1
        assert_log_is_1_to(log, k)
        assert all(seq <= k for seq in shown(log))
        assert released.first + len(released.items) - 1 == k
        assert all(seq > k + 1 for seq in buf.pending)
    assert_log_is_1_to(log, n)
    assert buf.pending == {}
