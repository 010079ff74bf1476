"""Unit tests for replog.recovery: the start-up election of a static master (its epoch, whether its own
vote counts, how many promises it needs, and whose log it recovers from)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.commitment import majority
from replog.recovery import Position, choose_donor, counts_itself, next_epoch, promises_needed

# --- next_epoch ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proposal", "saved", "reported", "epoch"),
    [
        (0, 0, [], 1),  # a brand-new cluster starts at epoch 1
        (1, 0, [], 1),
        (1, 0, [0, 0], 1),
        (0, 3, [], 4),  # above what our own data dir saw
        (1, 3, [], 4),
        (0, 0, [2, 5, 1], 6),  # above every epoch a secondary reports (promised or log epoch)
        (5, 3, [4], 5),  # the proposal is still newer than everything seen: keep it
        (4, 3, [4], 5),  # someone has seen our proposal's epoch: one more
        (7, 9, [2], 10),
        (7, 2, [9], 10),
        (10, 9, [9, 8], 10),
    ],
)
def test_next_epoch(proposal, saved, reported, epoch):
    assert next_epoch(proposal, saved, reported) == epoch


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.lists(st.integers(0, 50), max_size=6))
def test_next_epoch_is_above_everything_seen_and_keeps_a_proposal_that_is(proposal, saved, reported):
    epoch = next_epoch(proposal, saved, iter(reported))  # any iterable, read once
    seen = max([saved, *reported])
    assert epoch > seen
    assert epoch == (proposal if proposal > seen else seen + 1)


# --- counts_itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("had_log", "saved", "reported", "counts"),
    [
        (True, 0, [], True),  # a first start on its own data dir
        (True, 0, [0, 0], True),
        (True, 3, [3, 2], True),  # restarted on its own data dir: nobody has heard of anything newer
        (True, 5, [], True),
        (True, 4, [1, 4], True),
        (True, 2, [3], False),  # an older copy of its data dir: a secondary saw epoch 3
        (True, 2, [0, 3, 1], False),
        (False, 0, [], False),  # no data dir (in memory) or one without a log: never counts
        (False, 9, [], False),
        (False, 9, [1, 2], False),
    ],
)
def test_counts_itself(had_log, saved, reported, counts):
    assert counts_itself(had_log, saved, reported) is counts


# --- promises_needed -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "self_counts", "needed"),
    [
        (1, True, 0),  # alone: its own vote is the majority
        (1, False, 0),  # alone without a vote: nobody to ask, nothing to learn
        (2, True, 1),
        (2, False, 1),  # the only secondary: all there is
        (3, True, 1),
        (3, False, 2),
        (4, True, 2),
        (4, False, 3),
        (5, True, 2),
        (5, False, 3),
    ],
)
def test_promises_needed(nodes, self_counts, needed):
    assert promises_needed(nodes, self_counts) == needed


@pytest.mark.parametrize("nodes", range(1, 10))
def test_promises_needed_make_a_majority_or_ask_everyone(nodes):
    for self_counts in (True, False):
        needed = promises_needed(nodes, self_counts)
        assert 0 <= needed <= nodes - 1
        votes = needed + (1 if self_counts else 0)
        assert votes >= majority(nodes) or needed == nodes - 1


# --- choose_donor ---------------------------------------------------------------------


def own(log_id: str | None, log_epoch: int, seq: int) -> Position:
    return Position(None, log_id, log_epoch, seq)


def node(name: str, log_id: str | None, log_epoch: int, seq: int) -> Position:
    return Position(f"http://{name}", log_id, log_epoch, seq)


@pytest.mark.parametrize(
    ("mine", "answers", "donor"),
    [
        # rank by (log_epoch, seq)
        (own("L", 2, 10), [], None),
        (own("L", 2, 10), [node("s1", "L", 2, 12)], "s1"),  # same epoch, further on
        (own("L", 2, 10), [node("s1", "L", 3, 4)], "s1"),  # a newer log epoch wins over a longer log
        (own("L", 3, 4), [node("s1", "L", 2, 10)], None),
        (own("L", 2, 10), [node("s1", "L", 2, 9), node("s2", "L", 2, 11)], "s2"),
        (own("L", 2, 10), [node("s1", "L", 3, 1), node("s2", "L", 2, 50)], "s1"),
        (own("L", 1, 5), [node("s1", "L", 2, 5), node("s2", "L", 2, 7), node("s3", "L", 1, 9)], "s2"),
        # our own log wins ties
        (own("L", 2, 10), [node("s1", "L", 2, 10)], None),
        (own("L", 2, 10), [node("s1", "L", 2, 10), node("s2", "L", 1, 10)], None),
        # a master holding entries ignores other log identities, however far they go
        (own("L", 2, 10), [node("s1", "M", 5, 100)], None),
        (own("L", 2, 10), [node("s1", "M", 5, 100), node("s2", "L", 2, 11)], "s2"),
        (own("L", 0, 1), [node("s1", "M", 1, 2)], None),
        # nodes without a log have nothing to give; a node at a newer log epoch holds its master's whole
        # start-up log, even an empty one (what we hold past it was never committed), and its identity
        (own("L", 2, 10), [node("s1", None, 9, 0), node("s2", "L", 9, 0)], "s2"),
        (own(None, 0, 0), [node("s1", None, 0, 0)], None),
        (own("L", 0, 0), [node("s1", "L", 4, 0)], "s1"),
        (own(None, 0, 0), [node("s1", "L", 1, 0)], "s1"),
        # an empty master takes any log: the most up-to-date one, whatever its identity
        (own(None, 0, 0), [node("s1", "M", 1, 5)], "s1"),
        (own("L", 0, 0), [node("s1", "M", 1, 5)], "s1"),
        (own(None, 0, 0), [node("s1", "M", 1, 5), node("s2", "N", 2, 1)], "s2"),
        (own(None, 0, 0), [node("s1", "M", 2, 5), node("s2", "N", 2, 1)], "s1"),
        (own(None, 0, 0), [node("s1", None, 0, 0), node("s2", "M", 1, 3)], "s2"),
    ],
)
def test_choose_donor(mine, answers, donor):
    chosen = choose_donor(mine, answers)
    expected = mine if donor is None else next(a for a in answers if a.url == f"http://{donor}")
    assert chosen is expected


def test_position_rank_is_log_epoch_then_seq():
    assert node("a", "L", 2, 1).rank > node("b", "L", 1, 1000).rank
    assert node("a", "L", 2, 7).rank > node("b", "L", 2, 6).rank
    assert node("a", "L", 2, 7).rank == own("L", 2, 7).rank


positions = st.builds(
    Position,
    st.sampled_from(["http://s1", "http://s2", "http://s3", "http://s4"]),
    st.sampled_from([None, "L", "M"]),
    st.integers(0, 4),
    st.integers(0, 6),
)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(Position, st.none(), st.sampled_from([None, "L", "M"]), st.integers(0, 4), st.integers(0, 6)),
    st.lists(positions, max_size=5),
)
def test_choose_donor_takes_the_highest_rank_among_eligible_logs(mine, answers):
    if mine.log_id is None:
        mine = Position(None, None, mine.log_epoch, 0)  # no log, no entries
    chosen = choose_donor(mine, answers)
    eligible = [a for a in answers if a.log_id is not None and (mine.seq == 0 or a.log_id == mine.log_id)]
    assert chosen is mine or chosen in eligible
    assert all(chosen.rank >= a.rank for a in eligible)
    assert chosen.rank >= mine.rank
    if chosen is not mine:
        assert chosen.rank > mine.rank  # our own log wins ties
