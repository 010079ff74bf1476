"""Unit tests for replog.commitment.one_per_process: a process that several slots reach counts once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replog.commitment import one_per_process


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([("a", 5), ("b", 3)], [5, 3]),  # distinct processes: unchanged
        ([("a", 5), ("a", 3)], [5, 0]),  # one process at two URLs: the most advanced slot counts
        ([("a", 3), ("a", 5)], [0, 5]),
        ([("a", 4), ("a", 4)], [4, 0]),  # a tie: the first slot
        ([(None, 0), (None, 0)], [0, 0]),  # no answer yet: nothing to merge
        ([("a", 2), ("b", 7), ("a", 9), ("b", 1)], [0, 7, 9, 0]),
        ([], []),
    ],
)
def test_one_count_per_incarnation(counts, expected):
    assert one_per_process(counts) == expected


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 50)), max_size=8))
def test_each_incarnation_keeps_exactly_its_highest_count(counts):
    got = one_per_process(counts)
    for inc in {i for i, _ in counts if i is not None}:
        mine = [g for (i, _), g in zip(counts, got, strict=True) if i == inc]
        assert sorted(mine)[:-1] == [0] * (len(mine) - 1)
        assert max(mine) == max(c for i, c in counts if i == inc)
    assert [g for (i, _), g in zip(counts, got, strict=True) if i is None] == [c for i, c in counts if i is None]
