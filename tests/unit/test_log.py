"""Unit tests for replog.log: append/extend, reads by (since, limit), batches, ids, identity."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.log import Entry, Log

LOG_ID = "0123456789abcdef0123456789abcdef"


def filled(n: int, log_id: str = LOG_ID) -> Log:
    """A log holding m1..mn, every id generated."""
    log = Log(log_id)
    for i in range(1, n + 1):
        log.append(f"m{i}")
    return log


# --- append / extend ---------------------------------------------------------


def test_empty_log():
    log = Log(LOG_ID)
    assert len(log) == 0
    assert log.last_seq == 0
    assert list(log.entries()) == []
    assert log.dicts() == []
    assert log.batch(1, 10, 1000) == []


def test_append_assigns_consecutive_seqs_from_one():
    log = Log(LOG_ID)
    assert [log.append(t) for t in ["a", "b", "c"]] == [1, 2, 3]
    assert log.last_seq == 3
    assert len(log) == 3
    assert [log.text(s) for s in (1, 2, 3)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("before", "items", "first", "texts_after"),
    [
        (0, [(None, "a")], 1, ["a"]),
        (0, [(None, "a"), ("k", "b"), (None, "c")], 1, ["a", "b", "c"]),
        (2, [(None, "x"), (None, "y")], 3, ["m1", "m2", "x", "y"]),
        (2, [], 3, ["m1", "m2"]),  # an empty extend changes nothing but still names the next seq
    ],
)
def test_extend_appends_consecutive_seqs_and_returns_first(before, items, first, texts_after):
    log = filled(before)
    assert log.extend(items) == first
    assert log.last_seq == len(texts_after)
    assert [e.text for e in log.entries()] == texts_after
    for offset, (id_, text) in enumerate(items):
        assert log.item(first + offset) == (id_, text)


def test_extend_then_append_continues_numbering():
    log = Log(LOG_ID)
    log.extend([(None, "a"), (None, "b")])
    assert log.append("c") == 3
    assert log.extend([(None, "d")]) == 4


# --- ids ---------------------------------------------------------------------


def test_client_id_is_kept_and_generated_id_is_derived_from_log_id_and_seq():
    log = Log(LOG_ID)
    log.append("a")
    log.append("b", id="client-key")
    log.append("c")
    assert log.raw_id(1) is None
    assert log.raw_id(2) == "client-key"
    assert log.id_of(2) == "client-key"
    # generated: log id prefix and seq; distinct per seq
    assert log.id_of(1) == f"{LOG_ID[:8]}-1"
    assert log.id_of(3) == f"{LOG_ID[:8]}-3"


def test_generated_ids_agree_across_nodes_of_one_log_and_differ_across_logs():
    a, b = filled(5, LOG_ID), filled(5, LOG_ID)
    other = filled(5, "fedcba9876543210")
    ids_a = [a.id_of(s) for s in range(1, 6)]
    assert ids_a == [b.id_of(s) for s in range(1, 6)]
    assert len(set(ids_a)) == 5
    assert not set(ids_a) & {other.id_of(s) for s in range(1, 6)}


def test_entry_and_as_dict():
    log = Log(LOG_ID)
    log.append("hello", id="k1")
    assert log.entry(1) == Entry(1, "k1", "hello")
    assert log.entry(1).as_dict() == {"seq": 1, "id": "k1", "text": "hello"}


# --- reads -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "limit", "seqs"),
    [
        (0, None, [1, 2, 3, 4, 5]),
        (-7, None, [1, 2, 3, 4, 5]),  # a negative since reads from the start
        (2, None, [3, 4, 5]),
        (4, None, [5]),
        (5, None, []),
        (9, None, []),
        (0, 0, []),
        (0, 1, [1]),
        (0, 3, [1, 2, 3]),
        (2, 2, [3, 4]),
        (3, 10, [4, 5]),
        (5, 3, []),
    ],
)
def test_entries_since_limit(since, limit, seqs):
    log = filled(5)
    got = list(log.entries(since, limit))
    assert [e.seq for e in got] == seqs
    assert [e.text for e in got] == [f"m{s}" for s in seqs]
    # dicts() is the same read in JSON-ready form
    assert log.dicts(since, limit) == [e.as_dict() for e in got]


def test_dicts_carry_client_and_generated_ids():
    log = Log(LOG_ID)
    log.append("a", id="mine")
    log.append("b")
    assert log.dicts() == [
        {"seq": 1, "id": "mine", "text": "a"},
        {"seq": 2, "id": f"{LOG_ID[:8]}-2", "text": "b"},
    ]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 20),
    since=st.integers(-3, 25),
    limit=st.none() | st.integers(0, 25),
)
def test_entries_and_dicts_agree_with_a_list_slice(n, since, limit):
    log = filled(n)
    expected = list(range(1, n + 1))[max(since, 0) :]
    if limit is not None:
        expected = expected[:limit]
    assert [e.seq for e in log.entries(since, limit)] == expected
    assert [d["seq"] for d in log.dicts(since, limit)] == expected


# --- batch -------------------------------------------------------------------


def test_batch_is_wire_shaped_with_raw_ids():
    log = Log(LOG_ID)
    log.append("a")
    log.append("b", id="k")
    # the generated id travels as None: the secondary derives it from the log id
    assert log.batch(1, 10, 1 << 20) == [[1, None, "a"], [2, "k", "b"]]


@pytest.mark.parametrize(
    ("first", "max_count", "seqs"),
    [
        (1, 1, [1]),
        (1, 3, [1, 2, 3]),
        (1, 100, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (4, 3, [4, 5, 6]),
        (9, 5, [9, 10]),
        (10, 5, [10]),
        (11, 5, []),  # nothing past the end
    ],
)
def test_batch_count_cap(first, max_count, seqs):
    log = filled(10)
    assert [item[0] for item in log.batch(first, max_count, 1 << 20)] == seqs


@pytest.mark.parametrize(
    ("max_bytes", "count"),
    [
        # texts of 1000 chars; the per-entry overhead is small against that
        (1 << 20, 6),
        (3500, 3),
        (2500, 2),
        (1500, 1),
        (1, 1),  # one entry always fits, whatever its size
    ],
)
def test_batch_byte_cap(max_bytes, count):
    log = Log(LOG_ID)
    for i in range(6):
        log.append(str(i) * 1000)
    batch = log.batch(1, 100, max_bytes)
    assert [item[0] for item in batch] == list(range(1, count + 1))


def test_batch_holds_one_huge_entry_even_mid_log():
    log = Log(LOG_ID)
    log.append("small")
    log.append("x" * 100_000)
    log.append("small")
    assert log.batch(2, 10, 1000) == [[2, None, "x" * 100_000]]
    # and the huge one does not ride along behind a small one
    assert log.batch(1, 10, 1000) == [[1, None, "small"]]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=0, max_size=15),
    first=st.integers(1, 17),
    max_count=st.integers(1, 20),
    max_bytes=st.integers(1, 3000),
)
def test_batch_is_a_capped_run_from_first(sizes, first, max_count, max_bytes):
    log = Log(LOG_ID)
    for i, size in enumerate(sizes):
        log.append(chr(ord("a") + i % 26) * size)
    batch = log.batch(first, max_count, max_bytes)
    if first > log.last_seq:
        assert batch == []
        return
    assert batch, "at least one entry whenever first <= last_seq"
    assert [item[0] for item in batch] == list(range(first, first + len(batch)))
    assert all(item[2] == log.text(item[0]) for item in batch)
    assert len(batch) <= max_count
    if len(batch) > 1:
        assert sum(len(item[2]) for item in batch) <= max_bytes


# --- identity ----------------------------------------------------------------


def test_adopt_when_empty_changes_identity_and_generated_ids():
    log = Log("placeholder-identity")
    log.adopt(LOG_ID)
    assert log.log_id == LOG_ID
    log.append("a")
    assert log.id_of(1) == f"{LOG_ID[:8]}-1"


def test_adopt_refused_once_the_log_holds_entries():
    log = filled(1)
    with pytest.raises(ValueError):
        log.adopt("another-identity")
    assert log.log_id == LOG_ID
    assert log.id_of(1) == f"{LOG_ID[:8]}-1"


# -- the running checksum ---------------------------------------------------------


def test_crc_of_seq_zero_is_zero_and_each_entry_extends_the_chain():
    from replog.log import chain

    log = Log(LOG_ID)
    assert log.crc(0) == 0
    log.append("a")
    log.append("b", "client-b")
    assert log.crc(1) == chain(0, None, "a")
    assert log.crc(2) == chain(chain(0, None, "a"), "client-b", "b")


def test_append_and_extend_build_the_same_chain():
    one, many = Log(LOG_ID), Log(LOG_ID)
    items = [(None, "x"), ("id-1", "y"), (None, "")]
    for id_, text in items:
        one.append(text, id_)
    many.extend(items)
    assert [one.crc(s) for s in range(4)] == [many.crc(s) for s in range(4)]


@pytest.mark.parametrize(
    "left, right",
    [
        ([(None, "a"), (None, "b")], [(None, "a"), (None, "c")]),  # other text at the tail
        ([(None, "a"), (None, "b")], [(None, "z"), (None, "b")]),  # other text earlier: the chain carries it
        ([(None, "a")], [("a", "")]),  # generated id vs a client id
        ([("ab", "c")], [("a", "bc")]),  # id/text boundary
        ([(None, "a\x00b")], [("a", "b")]),
    ],
)
def test_different_prefixes_have_different_checksums(left, right):
    a, b = Log(LOG_ID), Log(LOG_ID)
    a.extend(left)
    b.extend(right)
    assert a.crc(a.last_seq) != b.crc(b.last_seq)
