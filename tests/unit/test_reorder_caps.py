"""Unit tests for the reorder buffer's byte cap: entries held behind a gap never take more than max_bytes,
a request that cannot fill the gap is refused whole (BufferFull) before anything changes, one that fills it
is always taken, and whatever was refused or forgotten is shown once the master resends it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from replog.log import Log
from replog.reorder import BufferFull, ReorderBuffer, WireEntry, held_size

LOG_ID = "0123456789abcdef"
BIG = "x" * 10_000  # each message of the master below: about 10 KB held


def master_log(n: int = 40) -> Log:
    log = Log(LOG_ID)
    for s in range(1, n + 1):
        log.append(f"{s}:{BIG}")
    return log


MASTER = master_log()
COST = held_size(*MASTER.item(1)[:2])  # every entry of MASTER costs about the same (its seq's digits aside)


def sent(*seqs: int) -> list[WireEntry]:
    return [(s, *MASTER.item(s), MASTER.hash(s)) for s in seqs]


def offer(buf: ReorderBuffer, entries: list[WireEntry]) -> bool:
    """What the secondary does with one request: admit, then offer. False if refused (503 buffer_full)."""
    try:
        buf.admit(entries)
    except BufferFull:
        return False
    buf.offer(entries)
    return True


def test_held_bytes_counts_what_is_held_and_what_is_released():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log, max_bytes=100 * COST)
    buf.offer(sent(3, 4))
    assert buf.held_bytes == sum(held_size(*MASTER.item(s)[:2]) for s in (3, 4))
    buf.offer(sent(4))  # a resend of a held entry counts once
    assert buf.held_bytes == sum(held_size(*MASTER.item(s)[:2]) for s in (3, 4))
    buf.offer(sent(1, 2))
    assert log.last_seq == 4 and buf.held_bytes == 0 and buf.pending == {}


def test_a_request_past_the_gap_over_the_cap_is_refused_whole_and_changes_nothing():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log, max_bytes=int(3.5 * COST))
    assert offer(buf, sent(2, 3))
    before = (dict(buf.pending), buf.held_bytes)
    assert not offer(buf, sent(4, 5))  # 4 entries would be held: over 3.5
    assert (dict(buf.pending), buf.held_bytes) == before
    assert offer(buf, sent(4))  # 3 fit
    assert not offer(buf, sent(6))


def test_a_request_that_fills_the_gap_is_always_taken_and_the_farthest_are_trimmed():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log, max_bytes=int(3.5 * COST))
    assert offer(buf, sent(5, 6, 7))
    # 1 fills the gap; 2 and 10, 11, 12 would be held as well: the buffer forgets the farthest first.
    buf.admit(sent(1, 2, 10, 11, 12))  # raises nothing
    got = buf.offer(sent(1, 2, 10, 11, 12))
    assert log.last_seq == 2
    assert buf.held_bytes <= buf.max_bytes
    assert got.trimmed == 3 and sorted(buf.pending) == [5, 6, 7]
    assert offer(buf, sent(3, 4))
    assert log.last_seq == 7 and buf.held_bytes == 0


def test_reset_forgets_the_bytes_too():
    log = Log(LOG_ID)
    buf = ReorderBuffer(log, max_bytes=10 * COST)
    buf.offer(sent(2, 3))
    buf.reset()
    assert buf.held_bytes == 0 and buf.pending == {}


@settings(max_examples=200, deadline=None)
@given(
    requests=st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=6), min_size=1, max_size=40),
    cap=st.integers(1, 8),
)
def test_any_order_stays_under_the_cap_and_resending_from_the_gap_completes_the_log(
    requests: list[list[int]], cap: int
) -> None:
    """Whatever arrives in whatever order: held bytes never pass the cap, the log is always the master's
    prefix, and a master that resends from the gap-free end, one entry at a time, gets all 30 through."""
    log = Log(LOG_ID)
    buf = ReorderBuffer(log, max_bytes=cap * COST + COST // 2)
    for seqs in requests:
        offer(buf, sent(*seqs))
        assert buf.held_bytes <= buf.max_bytes
        assert buf.held_bytes == sum(held_size(i[0], i[1]) for i in buf.pending.values())
        assert log.wire(1, log.last_seq) == MASTER.wire(1, log.last_seq)
    while log.last_seq < 30:
        assert offer(buf, sent(log.last_seq + 1))
    assert log.wire(1, 30) == MASTER.wire(1, 30)
