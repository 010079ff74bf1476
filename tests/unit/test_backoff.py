"""Unit tests for replog.backoff: capped exponential growth with equal jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.backoff import Backoff


@pytest.mark.parametrize(
    ("base", "cap", "failures", "ceiling"),
    [
        (0.05, 2.0, 0, 0.0),
        (0.05, 2.0, -3, 0.0),
        (0.05, 2.0, 1, 0.05),
        (0.05, 2.0, 2, 0.1),
        (0.05, 2.0, 3, 0.2),
        (0.05, 2.0, 6, 1.6),
        (0.05, 2.0, 7, 2.0),  # 3.2 capped
        (0.05, 2.0, 50, 2.0),
        (1.0, 10.0, 4, 8.0),
        (1.0, 10.0, 5, 10.0),
        (5.0, 1.0, 1, 1.0),  # a base above the cap is capped too
    ],
)
def test_ceiling_table(base, cap, failures, ceiling):
    assert Backoff(base, cap).ceiling(failures) == pytest.approx(ceiling)


def test_defaults():
    b = Backoff()
    assert b.ceiling(1) == pytest.approx(0.05)
    assert b.ceiling(1000) == pytest.approx(2.0)


def test_grows_exponentially_until_the_cap_then_stays():
    b = Backoff(0.01, 5.0)
    ceilings = [b.ceiling(n) for n in range(1, 30)]
    capped_at = next(i for i, c in enumerate(ceilings) if c == 5.0)
    for before, after in zip(ceilings[:capped_at], ceilings[1:capped_at], strict=False):
        assert after == pytest.approx(2 * before)
    assert ceilings[capped_at - 1] < 5.0
    assert all(c == 5.0 for c in ceilings[capped_at:])


@pytest.mark.parametrize(("rand", "fraction"), [(0.0, 0.5), (0.5, 0.75), (1.0, 1.0)])
@pytest.mark.parametrize("failures", [1, 3, 20])
def test_delay_is_equal_jitter_of_the_ceiling(rand, fraction, failures):
    b = Backoff(0.05, 2.0)
    assert b.delay(failures, lambda: rand) == pytest.approx(fraction * b.ceiling(failures))


def test_no_failures_no_delay():
    assert Backoff().delay(0, lambda: 1.0) == 0.0


@pytest.mark.parametrize("failures", [61, 62, 1024, 10**6, 10**18, 10**100])
def test_huge_failure_counts_do_not_overflow(failures):
    b = Backoff(0.05, 2.0)
    assert b.ceiling(failures) == 2.0
    assert 1.0 <= b.delay(failures, lambda: 0.999) <= 2.0


def test_default_rand_stays_in_range():
    b = Backoff(0.05, 2.0)
    random.seed(1234)
    delays = [b.delay(4) for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 1  # jittered, not one fixed value


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(1e-4, 10.0),
    cap=st.floats(1e-3, 100.0),
    failures=st.integers(1, 10**30),
    rand=st.floats(0.0, 1.0),
)
def test_delay_within_half_ceiling_and_ceiling(base, cap, failures, rand):
    b = Backoff(base, cap)
    top = b.ceiling(failures)
    assert 0 < top <= cap
    delay = b.delay(failures, lambda: rand)
    assert top / 2 <= delay <= top
