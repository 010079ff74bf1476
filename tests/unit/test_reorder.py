"""Unit tests for replog.reorder: duplicates dropped, gaps held, only the gap-free prefix shown, and only
entries that chain onto the log (defect 5), in whole client batches (defect 3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.log import BATCH, BATCH_MORE, GENESIS, Log, chain
from replog.reorder import Conflict, ReorderBuffer, WireEntry

LOG_ID = "0123456789abcdef"


def master_log(n: int = 60) -> Log:
    """The master's log: m1..mn, every id generated, every entry a single write."""
    log = Log(LOG_ID)
    for s in range(1, n + 1):
        log.append(f"m{s}")
    return log


MASTER = master_log()


def sent(log: Log, *seqs: int) -> list[WireEntry]:
    """The entries a master holding log sends for seqs, each with its chain value."""
    return [(s, *log.item(s), log.hash(s)) for s in seqs]


def e(seq: int) -> WireEntry:
    """The entry the master would send for seq."""
    return sent(MASTER, seq)[0]


def assert_log_is_1_to(log: Log, k: int, master: Log = MASTER) -> None:
    """The log holds exactly the master's seqs 1..k."""
    assert log.last_seq == k
    assert log.wire(1, k) == master.wire(1, k)


def new_buffer(**kw) -> tuple[Log, ReorderBuffer]:
    log = Log(LOG_ID)
    return log, ReorderBuffer(log, **kw)


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
    log, buf = new_buffer()
    for seqs, k in zip(offers, shown_after_each, strict=True):
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
    log, buf = new_buffer()
    buf.offer([e(s) for s in range(1, held + 1)])
    buf.offer([e(s) for s in pending])
    assert log.last_seq == held
    got = buf.offer([e(s) for s in offer])
    assert got.first == first
    assert got.items == [(None, f"m{s}", 0, MASTER.hash(s)) for s in released]
    assert got.dropped == 0
    assert log.last_seq == held + len(released)


def test_released_items_keep_client_ids_and_chain_values():
    master = Log(LOG_ID)
    master.append("a")
    master.append("b", "k2")
    log, buf = new_buffer()
    buf.offer(sent(master, 2))
    got = buf.offer(sent(master, 1))
    assert got.items == [(None, "a", 0, master.hash(1)), ("k2", "b", 0, master.hash(2))]
    assert log.id_of(2) == "k2"
    assert log.id_of(1) == f"{LOG_ID[:8]}-1"
    assert log.hash(2) == master.hash(2)


def test_pending_never_holds_held_seqs():
    log, buf = new_buffer()
    buf.offer([e(3), e(5), e(1)])
    assert log.last_seq == 1
    assert sorted(buf.pending) == [3, 5]
    buf.offer([e(2)])
    assert log.last_seq == 3
    assert sorted(buf.pending) == [5]


def test_reset_forgets_pending_and_a_resend_fills_in():
    log, buf = new_buffer()
    buf.offer([e(1), e(3), e(4)])
    buf.reset()
    buf.offer([e(2)])
    assert_log_is_1_to(log, 2)  # 3 and 4 were forgotten, not shown
    buf.offer([e(3), e(4)])
    assert_log_is_1_to(log, 4)


def test_too_many_pending_are_dropped_and_resent_later():
    log, buf = new_buffer(max_pending=3)
    buf.offer([e(s) for s in (2, 3, 4)])
    assert len(buf.pending) == 3
    got = buf.offer([e(5)])  # a fourth entry behind the gap: the whole buffer goes
    assert got.dropped == 4
    assert buf.pending == {}
    assert log.last_seq == 0
    buf.offer([e(s) for s in range(1, 6)])
    assert_log_is_1_to(log, 5)


# --- check: conflicts with what the log holds ------------------------------------------


def test_check_accepts_identical_resends_and_unheld_seqs():
    master = Log(LOG_ID)
    master.append("a")
    master.append("b", "k")
    log, buf = new_buffer()
    buf.offer(sent(master, 1, 2))
    buf.check(sent(master, 1, 2))
    buf.check([e(3), (99, "anything", "x", 0, bytes(16))])  # not held: nothing to contradict


def other(prev: bytes, seq: int, id_: str | None, text: str, flags: int = 0) -> WireEntry:
    """An entry of another log whose chain value before seq is prev."""
    return (seq, id_, text, flags, chain(prev, id_, text, flags))


@pytest.mark.parametrize(
    ("entry", "seq"),
    [
        (other(GENESIS, 1, None, "other text"), 1),
        (other(GENESIS, 1, "k", "m1"), 1),  # same text, a client id where ours is generated
        (other(GENESIS, 1, None, "m1", BATCH), 1),  # same text and id, other flags
        ((1, None, "m1", 0, bytes(16)), 1),  # our content, but a chain value that is not ours
        ((2, None, "m2", 0, MASTER.hash(1)), 2),
    ],
)
def test_check_raises_conflict_and_changes_nothing(entry, seq):
    log, buf = new_buffer()
    buf.offer([e(1), e(2), e(4)])
    with pytest.raises(Conflict) as info:
        buf.check([e(3), entry])
    assert info.value.seq == seq
    assert log.last_seq == 2
    assert sorted(buf.pending) == [4]


# --- defect 5: entries of another chain never slip in behind a gap ------------------------


def diverged_log(common: int, n: int) -> Log:
    """A log equal to MASTER up to common, then other entries (a dead master's tail) up to n."""
    log = Log(LOG_ID)
    log.extend([MASTER.item(s) for s in range(1, common + 1)])
    for s in range(common + 1, n + 1):
        log.append(f"old{s}")
    return log


def test_a_late_batch_of_another_chain_behind_a_gap_is_dropped_when_the_gap_fills():
    """Defect 5. S holds 1..3; a dead master's late request (its own 4, then 5 and 6) reaches S as
    5 and 6 behind the gap at 4. The real 4 arrives: S shows 1..4 of the real log, and 5 and 6 of the
    other chain are dropped, not released after the real 4 (before issue 8: 4 = new4, 5 = old5, 6 = old6)."""
    old = diverged_log(3, 6)  # differs from MASTER at seq 4
    assert old.hash(3) == MASTER.hash(3) and old.hash(4) != MASTER.hash(4)
    log, buf = new_buffer()
    buf.offer([e(1), e(2), e(3)])
    late = sent(old, 5, 6)
    buf.check(late)  # nothing held contradicts it: it can only wait behind the gap
    got = buf.offer(late)
    assert (log.last_seq, sorted(buf.pending)) == (3, [5, 6])

    got = buf.offer([e(4)])
    assert got.first == 4
    assert got.items == [(None, "m4", 0, MASTER.hash(4))]
    assert got.dropped == 2
    assert buf.pending == {}
    assert_log_is_1_to(log, 4)  # a prefix of the real log

    # the master resends its own 5 and 6, which chain onto the real 4
    got = buf.offer([e(5), e(6)])
    assert (got.first, got.dropped, len(got.items)) == (5, 0, 2)
    assert_log_is_1_to(log, 6)


def test_a_foreign_entry_right_after_the_log_is_dropped_with_everything_behind_it():
    old = diverged_log(3, 6)
    log, buf = new_buffer()
    buf.offer([e(1), e(2), e(3), e(7), e(8)])
    buf.offer(sent(old, 5))  # the dead master's 5 waits behind the gap at 4, with the real 7 and 8
    got = buf.offer([e(4)])
    assert got.items == [(None, "m4", 0, MASTER.hash(4))]
    assert got.dropped == 3  # old 5, and the real 7 and 8 behind it: suspect, resent by the master
    assert buf.pending == {}
    assert_log_is_1_to(log, 4)


def test_an_entry_that_does_not_chain_onto_an_empty_log_is_never_released():
    log, buf = new_buffer()
    got = buf.offer([other(bytes(range(16)), 1, None, "m1")])
    assert (got.items, got.dropped, log.last_seq, buf.pending) == ([], 1, 0, {})


def test_a_later_offer_at_a_pending_seq_replaces_the_foreign_entry():
    old = diverged_log(3, 6)
    log, buf = new_buffer()
    buf.offer([e(1), e(2), e(3)])
    buf.offer(sent(old, 5, 6))
    got = buf.offer([e(4), e(5), e(6)])  # the master's own request covers the late ones
    assert (got.dropped, len(got.items)) == (0, 3)
    assert_log_is_1_to(log, 6)


# --- defect 3: whole client batches only ------------------------------------------------


def batched_master() -> Log:
    """seq 1 single, 2..4 a client batch (flags 3, 3, 1), 5 single."""
    log = Log(LOG_ID)
    log.append("s1")
    log.extend([("order-7:0", "b2", 3), ("order-7:1", "b3", 3), ("order-7:2", "b4", 1)])
    log.append("s5")
    return log


@pytest.mark.parametrize(
    ("offers", "shown_after_each"),
    [
        ([[1], [2], [3], [4], [5]], [1, 1, 1, 4, 5]),  # the batch shows only once its last entry is in
        ([[1, 2, 3], [4]], [1, 4]),
        ([[4], [3], [1], [2]], [0, 0, 1, 4]),
        ([[1, 2, 4], [3]], [1, 4]),
        ([[1, 2, 3, 5], [4]], [1, 5]),
        ([[2, 3, 4], [1]], [0, 4]),
        ([[5], [2, 3, 4], [1]], [0, 0, 5]),
        ([[1, 2], [2, 3], [3], [4, 5]], [1, 1, 1, 5]),
    ],
)
def test_a_client_batch_arriving_in_pieces_is_released_whole(offers, shown_after_each):
    master = batched_master()
    log, buf = new_buffer()
    for seqs, k in zip(offers, shown_after_each, strict=True):
        got = buf.offer(sent(master, *seqs))
        assert got.dropped == 0
        assert_log_is_1_to(log, k, master)
        assert not log.last_seq or not log.flags(log.last_seq) & BATCH_MORE
        assert all(seq > log.last_seq for seq in buf.pending)


def test_released_holds_the_whole_batch_once_its_last_entry_arrives():
    master = batched_master()
    log, buf = new_buffer()
    buf.offer(sent(master, 1, 2, 3))
    assert (log.last_seq, sorted(buf.pending)) == (1, [2, 3])
    got = buf.offer(sent(master, 4))
    assert got.first == 2
    assert got.items == master.hashed(2, 4)


def test_a_batch_of_one_is_released_at_once():
    master = Log(LOG_ID)
    master.append("x", "k:0", BATCH)
    log, buf = new_buffer()
    assert buf.offer(sent(master, 1)).items == master.hashed(1, 1)


def test_a_batch_whose_last_entry_is_foreign_is_not_released_in_part():
    master = batched_master()
    old = Log(LOG_ID)
    old.extend([master.item(s) for s in (1, 2)])
    old.append("old3", "order-7:1", BATCH | BATCH_MORE)  # another chain from seq 3 on
    old.append("old4", "order-7:2", BATCH)
    log, buf = new_buffer()
    buf.offer(sent(master, 1, 2))
    buf.offer(sent(old, 4))
    got = buf.offer(sent(master, 3))  # 2 and 3 chain, but the batch's end at 4 is the other chain's
    assert (got.items, got.dropped) == ([], 3)
    assert (log.last_seq, buf.pending) == (1, {})  # none of the batch: a client batch is whole or absent
    got = buf.offer(sent(master, 2, 3, 4, 5))
    assert got.items == master.hashed(2, 5)
    assert_log_is_1_to(log, 5, master)


# --- properties ------------------------------------------------------------------


@st.composite
def logs_with_batches(draw, max_units: int = 15) -> Log:
    """A master log of single writes and client batches of 1 to 4 entries."""
    log = Log(LOG_ID)
    for unit in range(draw(st.integers(0, max_units))):
        size = draw(st.integers(0, 4))  # 0: a single write
        if size == 0:
            log.append(f"s{unit}")
        else:
            log.extend(
                [(f"k{unit}:{i}", f"b{unit}.{i}", BATCH | (BATCH_MORE if i < size - 1 else 0)) for i in range(size)]
            )
    return log


@st.composite
def deliveries(draw):
    """A master log, and its seqs 1..n in any order, each at least once, some duplicated, cut into requests."""
    master = draw(logs_with_batches())
    n = master.last_seq
    extra = draw(st.lists(st.integers(1, max(n, 1)), max_size=n * 2)) if n else []
    order = draw(st.permutations(list(range(1, n + 1)) + extra))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=10)))
    requests, start = [], 0
    for cut in [*cuts, len(order)]:
        requests.append(order[start:cut])
        start = cut
    return master, requests


def releasable(master: Log, offered: set[int]) -> int:
    """The end of the longest gap-free prefix of offered seqs that ends a client batch."""
    k = whole = 0
    while k + 1 in offered:
        k += 1
        if not master.flags(k) & BATCH_MORE:
            whole = k
    return whole


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_any_arrival_order_shows_1_to_n_once_in_order_in_whole_batches(delivery):
    master, requests = delivery
    log, buf = new_buffer()
    offered: set[int] = set()
    for request in requests:
        entries = sent(master, *request)
        buf.check(entries)  # identical resends never conflict
        before = log.last_seq
        got = buf.offer(entries)
        offered.update(request)
        k = releasable(master, offered)
        assert_log_is_1_to(log, k, master)
        assert got.first == before + 1
        assert got.items == master.hashed(before + 1, k)
        assert got.dropped == 0
        assert all(seq > k for seq in buf.pending)
    assert_log_is_1_to(log, master.last_seq, master)
    assert buf.pending == {}


@st.composite
def deliveries_with_foreign_entries(draw):
    """As deliveries(), with entries of another log mixed in: one that agrees with the master's up to
    common and differs at common + 1. The other log's entry at common + 1 never arrives (the node that
    gets it follows that log, which is the fence's business, not the buffer's); its later ones do."""
    master, requests = draw(deliveries())
    n = master.last_seq
    common = draw(st.integers(0, max(n - 1, 0)))
    old = Log(LOG_ID)
    old.extend([master.item(s) for s in range(1, common + 1)])
    old.append("diverges")  # common + 1
    for s in range(common + 2, n + 6):
        old.append(f"old{s}", None, draw(st.sampled_from([0, BATCH])))
    foreign = draw(st.lists(st.integers(common + 2, old.last_seq), max_size=8))
    mixed = [[("master", s) for s in request] for request in requests]
    for s in foreign:
        at = draw(st.integers(0, len(mixed)))
        mixed.insert(at, [("old", s)])
    return master, old, mixed


@settings(max_examples=150, deadline=None)
@given(deliveries_with_foreign_entries())
def test_whatever_foreign_entries_arrive_the_log_is_a_prefix_of_the_masters(case):
    master, old, requests = case
    log, buf = new_buffer()
    for request in requests:
        entries = [sent(master if source == "master" else old, s)[0] for source, s in request]
        try:
            buf.check(entries)
        except Conflict:
            continue  # the secondary refuses the whole request (409), changing nothing
        buf.offer(entries)
        assert log.last_seq <= master.last_seq
        assert log.wire(1, log.last_seq) == master.wire(1, log.last_seq)
        assert not log.last_seq or not log.flags(log.last_seq) & BATCH_MORE
        assert all(seq > log.last_seq for seq in buf.pending)
    # the master resends what the node does not hold: the node ends up with the master's whole log
    buf.offer(sent(master, *range(log.last_seq + 1, master.last_seq + 1)))
    assert_log_is_1_to(log, master.last_seq, master)
