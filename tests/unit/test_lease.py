"""Unit tests for replog.lease: the lease deadline, deferring to a better member, and epochs from revisions."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.lease import (
    DEFAULT_DRIFT,
    DEFAULT_MARGIN,
    Deferral,
    LeaseDeadline,
    boottime,
    campaign_delay,
    epoch_of,
    should_defer,
)
from replog.recovery import Position

# --- boottime ---------------------------------------------------------------------


def test_boottime_is_monotonic_and_counts_seconds():
    a = boottime()
    b = boottime()
    assert b >= a
    m0, t0 = time.monotonic(), boottime()
    time.sleep(0.05)
    m1, t1 = time.monotonic(), boottime()
    assert abs((t1 - t0) - (m1 - m0)) < 0.02  # same rate as the monotonic clock while the machine is up


def test_boottime_falls_back_to_monotonic_without_clock_boottime(monkeypatch):
    monkeypatch.delattr(time, "CLOCK_BOOTTIME", raising=False)
    monkeypatch.setattr(time, "monotonic", lambda: 1234.5)
    assert boottime() == 1234.5


# --- LeaseDeadline -------------------------------------------------------------------


def test_no_deadline_before_the_first_renewal():
    lease = LeaseDeadline(5.0)
    assert lease.deadline() == -math.inf
    assert not lease.valid(0.0)
    assert not lease.valid(-1e9)


def test_deadline_is_send_time_plus_ttl_less_drift_and_margin():
    lease = LeaseDeadline(5.0, drift=0.1, margin=0.5)
    lease.renewed(100.0)
    assert lease.deadline() == pytest.approx(100.0 + 4.5 - 0.5)
    assert lease.valid(103.99)
    assert not lease.valid(104.0)  # at the deadline it is over
    assert lease.remaining(103.0) == pytest.approx(1.0)


def test_defaults_keep_the_deadline_before_expiry_at_etcd():
    lease = LeaseDeadline(5.0)
    assert (lease.drift, lease.margin) == (DEFAULT_DRIFT, DEFAULT_MARGIN)
    lease.renewed(0.0)
    assert 0 < lease.deadline() < 5.0


def test_an_older_keep_alive_answered_late_does_not_move_the_deadline_back():
    lease = LeaseDeadline(2.0, drift=0.0, margin=0.0)
    lease.renewed(10.0)
    lease.renewed(7.0)  # its answer came after the newer one's
    assert lease.deadline() == 12.0


def test_a_lost_lease_has_no_deadline():
    lease = LeaseDeadline(2.0)
    lease.renewed(10.0)
    lease.lost()
    assert not lease.valid(10.0)
    lease.renewed(11.0)
    assert lease.valid(11.0)


@pytest.mark.parametrize(("ttl", "drift", "margin"), [(0, 0.05, 0.1), (-1, 0.05, 0.1), (5, 1.0, 0.1), (5, 0.05, -1)])
def test_nonsense_lease_parameters_are_refused(ttl, drift, margin):
    with pytest.raises(ValueError):
        LeaseDeadline(ttl, drift=drift, margin=margin)


@settings(max_examples=200, deadline=None)
@given(
    ttl=st.floats(0.1, 60),
    drift=st.floats(0, 0.5),
    sends=st.lists(st.floats(0, 1000), min_size=1, max_size=8),
    rate=st.floats(0.5, 1.0),
)
def test_valid_implies_the_lease_holds_at_etcd_for_a_clock_within_drift(ttl, drift, sends, rate):
    """Our clock runs at rate (<= 1) of etcd's, with 1 - rate <= drift: whenever valid(now) says yes, etcd
    (which got the newest keep-alive no earlier than its send time) has not yet expired the lease."""
    if 1 - rate > drift:
        rate = 1 - drift
    lease = LeaseDeadline(ttl, drift=drift, margin=0.0)
    for s in sends:
        lease.renewed(s)
    newest = max(sends)
    # A local instant newest + d is, on etcd's clock, at most newest + d / rate after the send.
    d = lease.deadline() - newest
    assert d / rate <= ttl + 1e-9


# --- should_defer -------------------------------------------------------------------


def pos(log_epoch: int, seq: int, log_id: str | None = "L") -> Position:
    return Position(None, log_id, log_epoch, seq)


@pytest.mark.parametrize(
    ("me", "mine", "others", "defer"),
    [
        ("b", pos(3, 5), {}, False),  # nobody else answered
        ("b", pos(3, 5), {"a": pos(3, 6)}, True),  # a longer log of the same epoch
        ("b", pos(3, 5), {"a": pos(4, 1)}, True),  # a newer log epoch beats any length
        ("b", pos(4, 1), {"a": pos(3, 9)}, False),
        ("b", pos(3, 5), {"a": pos(3, 5)}, True),  # a tie goes to the smaller name
        ("a", pos(3, 5), {"b": pos(3, 5)}, False),
        ("b", pos(3, 5), {"c": pos(3, 5), "d": pos(2, 9)}, False),
        ("b", pos(3, 5), {"b": pos(9, 9)}, False),  # our own entry in the member list
        ("b", pos(3, 5), {"a": pos(9, 9, None)}, False),  # no log at all: nothing to defer to
        ("b", pos(3, 5), {"a": pos(9, 9, "other")}, False),  # another log's identity
        ("b", pos(0, 0, None), {"a": pos(1, 2, "other")}, True),  # an empty node takes any log
        ("b", pos(0, 0, None), {"a": pos(0, 0, None)}, False),  # a brand-new cluster: etcd decides
    ],
)
def test_should_defer(me, mine, others, defer):
    assert should_defer(me, mine, others) is defer


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("abcde"),
        st.tuples(st.integers(0, 3), st.integers(0, 4)),
        min_size=1,
    )
)
def test_exactly_one_member_does_not_defer_when_all_see_all(members):
    """Among members that all reach each other (one log identity), exactly one does not defer: the election
    is not left to etcd's timing when positions tell, and nobody waits on a member that waits too."""
    positions = {n: pos(e, s) for n, (e, s) in members.items()}
    leaders = [n for n in positions if not should_defer(n, positions[n], positions)]
    assert len(leaders) == 1
    best = max(positions, key=lambda n: (positions[n].rank, [-ord(c) for c in n]))
    assert leaders == [best]


# --- Deferral, campaign_delay, epoch_of ----------------------------------------------


def test_deferral_lasts_ttl_plus_jitter_from_the_first_deferral():
    d = Deferral(ttl=5.0, jitter=1.0)
    assert d.may_defer(100.0, lambda: 0.5)
    assert d.may_defer(105.4, lambda: 0.0)  # the limit was drawn once, at the start: 5.5
    assert not d.may_defer(105.5, lambda: 0.0)
    d.reset()
    assert d.may_defer(200.0, lambda: 0.0)
    assert not d.may_defer(205.0, lambda: 0.0)


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 10), st.floats(0, 5), st.floats(0, 0.999999))
def test_campaign_delay_stays_in_its_bounds(base, jitter, r):
    assert base <= campaign_delay(base, jitter, lambda: r) <= base + jitter


@pytest.mark.parametrize(("revision", "promised", "epoch"), [(7, 0, 7), (7, 6, 7), (7, 7, None), (3, 9, None)])
def test_epoch_of_refuses_revisions_that_went_back(revision, promised, epoch):
    assert epoch_of(revision, promised) == epoch
