"""Unit tests for replog.progress: position invariants, incarnations, promises and log epochs, what
counts towards acks, divergence, and heartbeat status."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.progress import Progress, Status


def check_invariant(p: Progress) -> None:
    assert 0 <= p.match < p.next_seq, (p.match, p.next_seq)
    if p.status is Status.DIVERGED:
        assert p.match == 0


def healthy(incarnation: str = "A", seq: int = 0, promised: int = 0, log_epoch: int = 0) -> Progress:
    p = Progress()
    p.beat_ok(0.0)
    p.report(incarnation, seq, promised, log_epoch)
    return p


def in_status(status: Status) -> Progress:
    """A progress at seq 9 (promised and log epoch 2, entries up to 12 in flight) that reached status
    through the transitions the replicator drives."""
    p = healthy("A", 9, 2, 2)
    p.sent(12)
    if status is Status.SUSPECTED:
        p.beat_missed(1, 5)
    elif status is Status.UNHEALTHY:
        p.beat_missed(1, 1)
    elif status is Status.DIVERGED:
        p.diverge(None)
    assert p.status is status
    return p


def test_initial_state():
    p = Progress()
    assert (p.match, p.next_seq, p.incarnation, p.promised, p.log_epoch) == (0, 1, None, 0, 0)
    assert (p.missed, p.failures, p.last_contact, p.synced) == (0, 0, None, None)
    assert p.status is Status.UNHEALTHY  # unhealthy until the first answer
    assert not p.available
    check_invariant(p)


# --- report -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "match", "next_seq"),
    [
        # steps: ("report", incarnation, seq, expected return) | ("sent", last)
        ([("report", "A", 0, False)], 0, 1),
        ([("report", "A", 7, False)], 7, 8),  # the first incarnation seen is no rewind, whatever its seq
        ([("report", "A", 5, False), ("report", "A", 3, False)], 5, 6),  # stale lower answer ignored
        ([("report", "A", 3, False), ("report", "A", 5, False)], 5, 6),
        ([("report", "A", 2, False), ("sent", 9), ("report", "A", 4, False)], 4, 10),  # in flight stays
        ([("report", "A", 2, False), ("sent", 9), ("report", "A", 12, False)], 12, 13),
        ([("report", "A", 5, False), ("report", "B", 0, True)], 0, 1),  # restarted empty: rewind
        ([("report", "A", 5, False), ("sent", 9), ("report", "B", 2, True)], 2, 3),
        ([("report", "A", 5, False), ("report", "B", 8, True)], 8, 9),  # new incarnation, further on
        # A new process at the same seq lost what was in flight to the old one: resend it.
        ([("report", "A", 5, False), ("sent", 9), ("report", "B", 5, True)], 5, 6),
        ([("report", "A", 5, False), ("report", "B", 2, True), ("report", "B", 1, False)], 2, 3),
        ([("report", "A", 5, False), ("report", "B", 2, True), ("report", "A", 1, True)], 1, 2),
    ],
)
def test_report_table(steps, match, next_seq):
    p = Progress()
    for step in steps:
        if step[0] == "report":
            _, incarnation, seq, rewound = step
            assert p.report(incarnation, seq, 0, 0) is rewound
        elif step[0] == "sent":
            p.sent(step[1])
        check_invariant(p)
    assert (p.match, p.next_seq) == (match, next_seq)


@pytest.mark.parametrize(
    ("reports", "promised", "log_epoch"),
    [
        # reports: (incarnation, seq, promised, log_epoch)
        ([("A", 0, 1, 0)], 1, 0),
        ([("A", 0, 1, 0), ("A", 3, 1, 1)], 1, 1),  # took our epoch as its log epoch
        ([("A", 3, 2, 2), ("A", 1, 1, 1)], 2, 2),  # an answer that left before a newer one: stale
        ([("A", 3, 2, 1), ("A", 3, 1, 2)], 2, 2),  # each number keeps its own max
        ([("A", 3, 5, 4), ("B", 3, 0, 0)], 0, 0),  # a new process with another data dir: believed, downwards
        ([("A", 3, 5, 4), ("B", 3, 6, 4), ("B", 3, 5, 3)], 6, 4),
    ],
)
def test_report_keeps_the_max_promise_and_log_epoch_within_an_incarnation(reports, promised, log_epoch):
    p = Progress()
    for incarnation, seq, prom, epoch in reports:
        p.report(incarnation, seq, prom, epoch)
        check_invariant(p)
    assert (p.promised, p.log_epoch) == (promised, log_epoch)


def test_new_incarnation_lower_rewinds_even_below_what_was_sent():
    p = Progress()
    p.report("inc-1", 100, 3, 3)
    p.sent(150)
    assert p.next_seq == 151
    assert p.report("inc-2", 0, 0, 0) is True
    assert (p.incarnation, p.match, p.next_seq, p.promised, p.log_epoch) == ("inc-2", 0, 1, 0, 0)


def test_same_incarnation_lower_answer_is_stale():
    p = Progress()
    p.report("b", 10, 2, 2)
    assert p.report("b", 4, 2, 2) is False
    assert (p.incarnation, p.match, p.next_seq) == ("b", 10, 11)


# --- counted: what a node holds for acks under an epoch ------------------------------


@pytest.mark.parametrize(
    ("promised", "log_epoch", "match", "diverged", "epoch", "start_end", "counted"),
    [
        (3, 3, 7, False, 3, 0, 7),
        (3, 3, 7, False, 3, 7, 7),  # covers the start-up log exactly
        (3, 3, 7, False, 3, 8, 0),  # not yet past the log the master started with
        (3, 3, 0, False, 3, 0, 0),
        (3, 2, 7, False, 3, 0, 0),  # promised, but its log is not yet known to be a prefix of ours
        (2, 2, 7, False, 3, 0, 0),  # has not promised our epoch
        (4, 3, 7, False, 3, 0, 0),  # promised a newer master: our acks no longer count there
        (4, 4, 7, False, 3, 0, 0),
        (3, 3, 7, False, 4, 0, 0),  # an older epoch's positions are not ours
        (3, 3, 7, True, 3, 0, 0),  # diverged: never counted
    ],
)
def test_counted_table(promised, log_epoch, match, diverged, epoch, start_end, counted):
    p = healthy("A", match, promised, log_epoch)
    if diverged:
        p.diverge(None)
    assert p.counted(epoch, start_end) == counted
    check_invariant(p)


def test_counted_follows_reports():
    p = healthy("A", 5, 1, 1)
    assert p.counted(2, 0) == 0
    p.report("A", 5, 2, 1)  # promised 2
    assert p.counted(2, 0) == 0
    p.report("A", 6, 2, 2)  # took log epoch 2
    assert p.counted(2, 0) == 6
    assert p.counted(2, 6) == 6
    p.report("B", 3, 0, 0)  # restarted on another (older) data dir: counts nothing until it promises again
    assert p.counted(2, 0) == 0


# --- needs_epoch / sync_sent -------------------------------------------------------


@pytest.mark.parametrize(
    ("promised", "log_epoch", "epoch", "needs"),
    [
        (2, 2, 2, False),
        (2, 1, 2, True),
        (2, 0, 2, True),
        (1, 1, 2, True),
        (3, 3, 2, True),  # another master's: we ask, and learn stale_epoch
        (0, 0, 0, False),
    ],
)
def test_needs_epoch_table(promised, log_epoch, epoch, needs):
    p = healthy("A", 4, promised, log_epoch)
    assert p.needs_epoch(epoch) is needs


def test_one_epoch_only_request_per_position():
    p = healthy("A", 4, 2, 1)
    assert p.needs_epoch(2)
    p.sync_sent()
    assert p.synced == ("A", 4)
    assert not p.needs_epoch(2)  # sent for this position: wait for its answer, do not repeat
    p.report("A", 4, 2, 1)  # answered without taking the epoch (its log is not yet a prefix of ours)
    assert not p.needs_epoch(2)
    p.report("A", 6, 2, 1)  # a new position: another try may succeed
    assert p.needs_epoch(2)
    p.sync_sent()
    assert not p.needs_epoch(2)
    p.report("B", 6, 2, 1)  # a new process at the same seq: ask it too
    assert p.needs_epoch(2)
    p.report("B", 6, 2, 2)
    assert not p.needs_epoch(2)
    check_invariant(p)


# --- sent / failed / rewind / succeeded ----------------------------------------------


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
    p.report("b", match, 0, 0)
    p.sent(sent)
    assert p.next_seq == next_seq
    check_invariant(p)


@pytest.mark.parametrize(("match", "sent"), [(0, 0), (0, 10), (4, 4), (4, 20)])
def test_failed_and_rewind_resend_everything_not_acknowledged(match, sent):
    for method in ("failed", "rewind"):
        p = Progress()
        p.report("b", match, 0, 0)
        p.sent(sent)
        getattr(p, method)()
        assert p.next_seq == match + 1
        assert p.match == match
        assert p.failures == (1 if method == "failed" else 0)
        check_invariant(p)


def test_failures_count_until_a_success():
    p = Progress()
    for i in range(1, 4):
        p.failed()
        assert p.failures == i
    p.succeeded(7.5)
    assert p.failures == 0
    assert p.last_contact == 7.5


# --- diverge / rejoin ------------------------------------------------------------------


@pytest.mark.parametrize("before", [Status.HEALTHY, Status.SUSPECTED, Status.UNHEALTHY])
def test_diverge_forgets_the_position_and_is_reported_once(before):
    p = in_status(before)
    assert p.diverge("B") is True
    assert (p.status, p.incarnation, p.match, p.next_seq) == (Status.DIVERGED, "B", 0, 1)
    assert not p.available
    assert p.counted(2, 0) == 0
    check_invariant(p)
    assert p.diverge(None) is False  # already diverged: nothing new to say
    assert p.incarnation == "B"  # None leaves the incarnation as it was
    assert p.diverge("C") is False
    assert p.incarnation == "C"
    check_invariant(p)


def test_rejoin_judges_a_new_process_afresh():
    p = healthy("A", 9, 2, 2)
    p.sync_sent()
    p.diverge("B")
    p.rejoin()
    assert (p.status, p.incarnation, p.match, p.next_seq, p.synced) == (Status.HEALTHY, None, 0, 1, None)
    assert p.available
    # whatever the new process reports is its first report: no rewind
    assert p.report("C", 4, 2, 2) is False
    assert (p.match, p.next_seq) == (4, 5)
    assert p.counted(2, 0) == 4
    check_invariant(p)


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
    p.diverge(None)
    for _ in range(10):
        assert p.beat_missed(2, 5) is False
        assert p.status is Status.DIVERGED
    assert p.beat_ok(3.0) is False
    assert p.status is Status.DIVERGED
    assert p.last_contact == 3.0
    assert not p.available


# --- unavailable: the secondary says it cannot do its job ------------------------------


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        (Status.HEALTHY, Status.UNHEALTHY, True),
        (Status.SUSPECTED, Status.UNHEALTHY, True),
        (Status.UNHEALTHY, Status.UNHEALTHY, False),
        (Status.DIVERGED, Status.DIVERGED, False),  # diverged says more than unavailable
    ],
)
def test_unavailable_takes_it_out_of_the_quorum_at_once(before, after, changed):
    p = in_status(before)
    assert p.unavailable() is changed
    assert p.status is after
    assert not p.available
    check_invariant(p)
    # an answered heartbeat brings a merely unavailable node back
    assert p.beat_ok(9.0) is (after is Status.UNHEALTHY)
    assert p.available is (after is not Status.DIVERGED)


def test_status_str_is_its_json_value():
    assert [str(s) for s in Status] == ["healthy", "suspected", "unhealthy", "diverged"]


# --- property ------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("report"),
            st.sampled_from(["A", "B", "C"]),
            st.integers(0, 30),
            st.integers(0, 3),
            st.integers(0, 3),
        ),
        st.tuples(st.just("sent"), st.integers(0, 40)),
        st.tuples(st.just("failed")),
        st.tuples(st.just("rewind")),
        st.tuples(st.just("succeeded")),
        st.tuples(st.just("sync_sent")),
        st.tuples(st.just("diverge"), st.sampled_from([None, "A", "B", "D"])),
        st.tuples(st.just("rejoin")),
        st.tuples(st.just("unavailable")),
        st.tuples(st.just("beat_ok")),
        st.tuples(st.just("beat_missed")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_transitions_keep_0_le_match_lt_next_seq(operations):
    p = Progress()
    # a model of what match must be: the current incarnation's highest report, 0 after a divergence
    incarnation, match = None, 0
    for op in operations:
        if op[0] == "report":
            if p.status is Status.DIVERGED:
                continue  # the replicator reports only what a node agreeing with us says (after rejoin)
            _, inc, seq, promised, log_epoch = op
            rewound = p.report(inc, seq, promised, log_epoch)
            if inc != incarnation:
                assert rewound is (incarnation is not None)
                incarnation, match = inc, seq
            else:
                assert rewound is False
                match = max(match, seq)
            if rewound:
                assert p.next_seq == match + 1
        elif op[0] == "sent":
            before_next = p.next_seq
            p.sent(op[1])
            assert p.next_seq == max(before_next, op[1] + 1)
        elif op[0] in ("failed", "rewind"):
            getattr(p, op[0])()
            assert p.next_seq == match + 1
        elif op[0] == "succeeded":
            p.succeeded(1.0)
            assert p.failures == 0
        elif op[0] == "sync_sent":
            p.sync_sent()
            assert p.synced == (incarnation, match)
        elif op[0] == "diverge":
            p.diverge(op[1])
            if op[1] is not None:
                incarnation = op[1]
            match = 0
            assert p.status is Status.DIVERGED
        elif op[0] == "rejoin":
            p.rejoin()
            incarnation, match = None, 0
        elif op[0] == "unavailable":
            p.unavailable()
            assert p.status in (Status.UNHEALTHY, Status.DIVERGED)
        elif op[0] == "beat_ok":
            diverged = p.status is Status.DIVERGED
            p.beat_ok(2.0)
            assert p.status is (Status.DIVERGED if diverged else Status.HEALTHY)
        else:
            p.beat_missed(2, 4)
        assert (p.incarnation, p.match) == (incarnation, match)
        assert p.available is (p.status in (Status.HEALTHY, Status.SUSPECTED))
        if p.status is Status.DIVERGED:
            assert p.counted(p.promised, 0) == 0
        check_invariant(p)
