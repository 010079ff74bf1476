"""Unit tests for replog.progress: position invariants, boots, and heartbeat status."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.progress import Progress, Status


def check_invariant(p: Progress) -> None:
    assert 0 <= p.match < p.next_seq, (p.match, p.next_seq)


def test_initial_state():
    p = Progress()
    assert (p.match, p.next_seq, p.boot) == (0, 1, None)
    assert p.status is Status.UNHEALTHY  # unhealthy until the first answer
    assert not p.available
    check_invariant(p)


# --- report -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "match", "next_seq"),
    [
        # steps: ("report", boot, seq) | ("sent", last) | ("failed",); each with the expected return
        ([("report", "A", 0, False)], 0, 1),
        ([("report", "A", 7, False)], 7, 8),  # the first boot seen is no rewind, whatever its seq
        ([("report", "A", 5, False), ("report", "A", 3, False)], 5, 6),  # stale lower answer ignored
        ([("report", "A", 3, False), ("report", "A", 5, False)], 5, 6),
        ([("report", "A", 2, False), ("sent", 9), ("report", "A", 4, False)], 4, 10),  # in flight stays
        ([("report", "A", 2, False), ("sent", 9), ("report", "A", 12, False)], 12, 13),
        ([("report", "A", 5, False), ("report", "B", 0, True)], 0, 1),  # restarted empty: rewind
        ([("report", "A", 5, False), ("sent", 9), ("report", "B", 2, True)], 2, 3),
        ([("report", "A", 5, False), ("report", "B", 8, False)], 8, 9),  # new boot, further on
        ([("report", "A", 5, False), ("report", "B", 2, True), ("report", "B", 1, False)], 2, 3),
        ([("report", "A", 5, False), ("report", "B", 2, True), ("report", "A", 1, True)], 1, 2),
    ],
)
def test_report_table(steps, match, next_seq):
    p = Progress()
    for step in steps:
        if step[0] == "report":
            _, boot, seq, rewound = step
            assert p.report(boot, seq) is rewound
        elif step[0] == "sent":
            p.sent(step[1])
        check_invariant(p)
    assert (p.match, p.next_seq) == (match, next_seq)


def test_new_boot_lower_rewinds_even_below_what_was_sent():
    p = Progress()
    p.report("boot-1", 100)
    p.sent(150)
    assert p.next_seq == 151
    assert p.report("boot-2", 0) is True
    assert (p.boot, p.match, p.next_seq) == ("boot-2", 0, 1)


def test_same_boot_lower_answer_is_stale():
    p = Progress()
    p.report("b", 10)
    assert p.report("b", 4) is False
    assert (p.boot, p.match, p.next_seq) == ("b", 10, 11)


# --- sent / failed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "sent", "next_seq"),
    [
        (0, 0, 1),
        (0, 5, 6),
        (3, 5, 6),
        (5, 2, 6),  # an older send never moves next_seq back
    ],
)
def test_sent_moves_next_seq_forward_only(match, sent, next_seq):
    p = Progress()
    p.report("b", match)
    p.sent(sent)
    assert p.next_seq == next_seq
    check_invariant(p)


@pytest.mark.parametrize(("match", "sent"), [(0, 0), (0, 10), (4, 4), (4, 20)])
def test_failed_resends_everything_not_acknowledged(match, sent):
    p = Progress()
    p.report("b", match)
    p.sent(sent)
    p.failed()
    assert p.next_seq == match + 1
    assert p.match == match
    check_invariant(p)


def test_failures_count_until_a_success():
    p = Progress()
    for i in range(1, 4):
        p.failed()
        assert p.failures == i
    p.succeeded()
    assert p.failures == 0


# --- heartbeats --------------------------------------------------------------


@pytest.mark.parametrize(
    ("suspect_after", "unhealthy_after", "statuses"),
    [
        (2, 5, ["healthy", "suspected", "suspected", "suspected", "unhealthy", "unhealthy"]),
        (1, 3, ["suspected", "suspected", "unhealthy", "unhealthy"]),
        (1, 1, ["unhealthy", "unhealthy"]),
        (3, 3, ["healthy", "healthy", "unhealthy", "unhealthy"]),
        (4, 6, ["healthy", "healthy", "healthy", "suspected", "suspected", "unhealthy", "unhealthy"]),
    ],
)
def test_missed_beats_move_healthy_to_suspected_to_unhealthy(suspect_after, unhealthy_after, statuses):
    p = Progress()
    p.beat_ok(1.0)
    assert p.status is Status.HEALTHY
    for expected in statuses:
        before = p.status
        changed = p.beat_missed(suspect_after, unhealthy_after)
        assert p.status == expected
        assert changed is (p.status is not before)
    assert p.available is (p.status in (Status.HEALTHY, Status.SUSPECTED))


@pytest.mark.parametrize(("misses", "came_back"), [(0, False), (1, False), (2, True), (4, True), (5, True), (9, True)])
def test_first_answer_makes_healthy_and_says_whether_it_came_back(misses, came_back):
    p = Progress()
    p.beat_ok(1.0)
    for _ in range(misses):
        p.beat_missed(2, 5)
    assert p.beat_ok(2.5) is came_back
    assert p.status is Status.HEALTHY
    assert p.missed == 0
    assert p.last_contact == 2.5
    assert p.available


def test_the_very_first_answer_is_a_coming_back():
    p = Progress()
    assert p.beat_ok(0.0) is True
    assert p.status is Status.HEALTHY


def test_miss_count_restarts_after_an_answer():
    p = Progress()
    p.beat_ok(0.0)
    p.beat_missed(2, 5)
    p.beat_ok(1.0)
    assert p.beat_missed(2, 5) is False
    assert p.status is Status.HEALTHY  # one miss again, not two


def test_diverged_stays_diverged_on_beats():
    p = Progress()
    p.beat_ok(0.0)
    p.status = Status.DIVERGED
    for _ in range(10):
        assert p.beat_missed(2, 5) is False
        assert p.status is Status.DIVERGED
    assert p.beat_ok(3.0) is False
    assert p.status is Status.DIVERGED
    assert p.last_contact == 3.0
    assert not p.available


def test_status_str_is_its_json_value():
    assert [str(s) for s in Status] == ["healthy", "suspected", "unhealthy", "diverged"]


# --- property ------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.sampled_from(["A", "B", "C"]), st.integers(0, 30)),
        st.tuples(st.just("sent"), st.integers(0, 40)),
        st.tuples(st.just("failed")),
        st.tuples(st.just("succeeded")),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_random_operations_keep_0_le_match_lt_next_seq(operations):
    p = Progress()
    # a model of what match must be: the last boot's highest report
    boot, match = None, 0
    for op in operations:
        if op[0] == "report":
            _, b, seq = op
            before = match
            rewound = p.report(b, seq)
            if b != boot:
                assert rewound is (boot is not None and seq < before)
                boot, match = b, seq
            else:
                assert rewound is False
                match = max(match, seq)
            if rewound:
                assert p.next_seq == match + 1
        elif op[0] == "sent":
            before_next = p.next_seq
            p.sent(op[1])
            assert p.next_seq == max(before_next, op[1] + 1)
        elif op[0] == "failed":
            p.failed()
            assert p.next_seq == match + 1
        else:
            p.succeeded()
            assert p.failures == 0
        assert (p.boot, p.match) == (boot, match)
        check_invariant(p)
