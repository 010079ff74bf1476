"""Unit tests for replog.log: append/extend, reads by (since, limit), replication batches that keep
client batches whole, ids, identity, and the BLAKE2b hash chain (defect 9: a chain no client can forge)."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.log import BATCH, BATCH_MORE, GENESIS, HASH_SIZE, Log, chain

LOG_ID = "0123456789abcdef0123456789abcdef"
BIG = 1 << 20  # a byte cap no test batch reaches


def filled(n: int, log_id: str = LOG_ID) -> Log:
    """A log holding m1..mn, every id generated, every entry a single write."""
    log = Log(log_id)
    for i in range(1, n + 1):
        log.append(f"m{i}")
    return log


def client_batch(key: str | None, texts: list[str]) -> list[tuple[str | None, str, int]]:
    """The items a client batch stores: ids K:0..K:n-1 (or None), BATCH on all, BATCH_MORE on all but the last."""
    return [
        (None if key is None else f"{key}:{i}", text, BATCH | (BATCH_MORE if i < len(texts) - 1 else 0))
        for i, text in enumerate(texts)
    ]


def texts(log: Log) -> list[str]:
    return [log.text(s) for s in range(1, log.last_seq + 1)]


# --- append / extend ---------------------------------------------------------


def test_empty_log():
    log = Log(LOG_ID)
    assert len(log) == 0
    assert log.last_seq == 0
    assert log.dicts() == []
    assert log.wire(1, 0) == []
    assert log.hashed(1, 0) == []
    assert log.batch_end(1, 10, 1000) == 0  # nothing to send: the batch ends before it starts
    assert log.hash(0) == GENESIS == bytes(HASH_SIZE)


def test_append_assigns_consecutive_seqs_from_one():
    log = Log(LOG_ID)
    assert [log.append(t) for t in ["a", "b", "c"]] == [1, 2, 3]
    assert log.last_seq == 3
    assert len(log) == 3
    assert texts(log) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("before", "items", "first", "texts_after"),
    [
        (0, [(None, "a", 0)], 1, ["a"]),
        (0, [(None, "a", 0), ("k", "b", 0), (None, "c", 0)], 1, ["a", "b", "c"]),
        (2, [(None, "x", 0), (None, "y", 0)], 3, ["m1", "m2", "x", "y"]),
        (1, client_batch("k", ["x", "y", "z"]), 2, ["m1", "x", "y", "z"]),
        (2, [], 3, ["m1", "m2"]),  # an empty extend changes nothing but still names the next seq
    ],
)
def test_extend_appends_consecutive_seqs_and_returns_first(before, items, first, texts_after):
    log = filled(before)
    assert log.extend(items) == first
    assert log.last_seq == len(texts_after)
    assert texts(log) == texts_after
    for offset, item in enumerate(items):
        assert log.item(first + offset) == item
        assert log.flags(first + offset) == item[2]


def test_extend_then_append_continues_numbering():
    log = Log(LOG_ID)
    log.extend([(None, "a", 0), (None, "b", 0)])
    assert log.append("c") == 3
    assert log.extend([(None, "d", 0)]) == 4
    assert log.append("e", "k", BATCH) == 5
    assert log.item(5) == ("k", "e", BATCH)


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


@pytest.mark.parametrize(
    ("id_", "seq"),
    [
        (f"{LOG_ID[:8]}-1", 1),
        (f"{LOG_ID[:8]}-42", 42),
        (f"{LOG_ID[:8]}-0", 0),  # the form of a generated id, naming no seq: the caller refuses it
        (f"{LOG_ID[:8]}-999999999999999999", 999999999999999999),
        (f"{LOG_ID[:8]}-05", None),  # not how seq 5's id is written
        (f"{LOG_ID[:8]}-1234567890123456789", None),  # too long to be a seq
        (f"{LOG_ID[:8]}-", None),
        (f"{LOG_ID[:8]}-x", None),
        (f"{LOG_ID[:8]}-٣", None),  # a non-ASCII digit
        (f"{LOG_ID[:8]}-+1", None),
        ("fedcba98-1", None),  # another log's prefix
        (LOG_ID[:8], None),
        ("plain-id", None),
    ],
)
def test_generated_seq(id_, seq):
    assert Log(LOG_ID).generated_seq(id_) == seq


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
def test_dicts_since_limit(since, limit, seqs):
    log = filled(5)
    assert log.dicts(since, limit) == [{"seq": s, "id": f"{LOG_ID[:8]}-{s}", "text": f"m{s}"} for s in seqs]


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
def test_dicts_agree_with_a_list_slice(n, since, limit):
    log = filled(n)
    expected = list(range(1, n + 1))[max(since, 0) :]
    if limit is not None:
        expected = expected[:limit]
    assert [d["seq"] for d in log.dicts(since, limit)] == expected
    assert [d["text"] for d in log.dicts(since, limit)] == [f"m{s}" for s in expected]


def test_item_raw_id_text_flags_and_hashed():
    log = Log(LOG_ID)
    log.append("a")
    log.extend(client_batch("k", ["b", "c"]))
    assert [log.item(s) for s in (1, 2, 3)] == [(None, "a", 0), ("k:0", "b", 3), ("k:1", "c", 1)]
    assert [log.raw_id(s) for s in (1, 2, 3)] == [None, "k:0", "k:1"]
    assert [log.flags(s) for s in (1, 2, 3)] == [0, BATCH | BATCH_MORE, BATCH]
    assert log.hashed(2, 3) == [("k:0", "b", 3, log.hash(2)), ("k:1", "c", 1, log.hash(3))]
    assert log.hashed(1, 3) == [(*log.item(s), log.hash(s)) for s in (1, 2, 3)]


# --- the wire ----------------------------------------------------------------


def test_wire_is_seq_raw_id_text_flags_and_hash_hex():
    log = Log(LOG_ID)
    log.append("a")
    log.append("b", id="k")
    log.extend(client_batch(None, ["c", "d"]))
    # the generated id travels as None: the secondary derives it from the log id
    assert log.wire(1, 4) == [
        [1, None, "a", 0, log.hash(1).hex()],
        [2, "k", "b", 0, log.hash(2).hex()],
        [3, None, "c", BATCH | BATCH_MORE, log.hash(3).hex()],
        [4, None, "d", BATCH, log.hash(4).hex()],
    ]
    assert log.wire(2, 3) == log.wire(1, 4)[1:3]
    assert all(len(item[4]) == 2 * HASH_SIZE for item in log.wire(1, 4))


# --- batch_end: the replication batch ------------------------------------------


@pytest.mark.parametrize(
    ("first", "max_count", "last"),
    [
        (1, 1, 1),
        (1, 3, 3),
        (1, 100, 10),
        (4, 3, 6),
        (9, 5, 10),
        (10, 5, 10),
        (11, 5, 10),  # nothing past the end: last < first
        (3, 0, 2),  # a count of 0 sends nothing
    ],
)
def test_batch_end_count_cap(first, max_count, last):
    assert filled(10).batch_end(first, max_count, BIG) == last


@pytest.mark.parametrize(
    ("max_bytes", "last"),
    [
        # texts of 1000 chars; the per-entry overhead is small against that
        (BIG, 6),
        (3500, 3),
        (2500, 2),
        (1500, 1),
        (1, 1),  # one entry always fits, whatever its size
    ],
)
def test_batch_end_byte_cap(max_bytes, last):
    log = Log(LOG_ID)
    for i in range(6):
        log.append(str(i) * 1000)
    assert log.batch_end(1, 100, max_bytes) == last


def test_batch_end_holds_one_huge_entry_even_mid_log():
    log = Log(LOG_ID)
    log.append("small")
    log.append("x" * 100_000)
    log.append("small")
    assert log.batch_end(2, 10, 1000) == 2
    # and the huge one does not ride along behind a small one
    assert log.batch_end(1, 10, 1000) == 1


def batched_log() -> Log:
    """seq 1 single, 2..4 a client batch (flags 3, 3, 1), 5 single, 6 a batch of one (flags 1), 7 single."""
    log = Log(LOG_ID)
    log.append("s1")
    log.extend(client_batch("order-7", ["b2", "b3", "b4"]))
    log.append("s5")
    log.extend(client_batch("one", ["b6"]))
    log.append("s7")
    assert [log.flags(s) for s in range(1, 8)] == [0, 3, 3, 1, 0, 1, 0]
    return log


@pytest.mark.parametrize(
    ("first", "max_count", "last"),
    [
        (1, 1, 1),
        (1, 2, 4),  # the cap falls inside the client batch 2..4: the batch goes whole
        (1, 3, 4),
        (1, 4, 4),
        (1, 5, 5),
        (2, 1, 4),  # max_count 1 still carries the whole client batch
        (3, 1, 4),  # starting inside a batch (a resend after a partial answer): up to its end
        (4, 1, 4),
        (5, 1, 5),
        (6, 1, 6),  # a batch of one is one entry
        (5, 2, 6),
        (7, 1, 7),
        (8, 1, 7),
    ],
)
def test_batch_end_never_ends_inside_a_client_batch(first, max_count, last):
    assert batched_log().batch_end(first, max_count, BIG) == last


def test_batch_end_byte_cap_never_splits_a_client_batch():
    log = Log(LOG_ID)
    log.append("a" * 1000)
    log.extend(client_batch("k", ["b" * 1000, "c" * 1000, "d" * 1000]))
    log.append("e" * 1000)
    assert log.batch_end(1, 100, 1500) == 1
    assert log.batch_end(2, 100, 1500) == 4  # 3000 chars over a 1500 cap, but whole
    assert log.batch_end(2, 100, 1) == 4


@pytest.mark.parametrize(("seq", "end"), [(1, 1), (2, 4), (3, 4), (4, 4), (5, 5), (6, 6), (7, 7)])
def test_whole_end(seq, end):
    assert batched_log().whole_end(seq) == end


def test_whole_end_stops_at_the_last_seq_of_a_log_holding_part_of_a_batch():
    log = Log(LOG_ID)
    log.extend(client_batch("k", ["a", "b", "c"])[:2])  # as a rollback or a crash could leave it
    assert log.whole_end(1) == 2


@st.composite
def batched_logs(draw):
    """A log of singles and client batches of random sizes and texts."""
    log = Log(LOG_ID)
    for i in range(draw(st.integers(0, 10))):
        sizes = draw(st.lists(st.integers(0, 300), min_size=1, max_size=4))
        if len(sizes) == 1 and draw(st.booleans()):
            log.append("s" * sizes[0])
        else:
            log.extend(client_batch(f"k{i}", ["b" * size for size in sizes]))
    return log


@settings(max_examples=100, deadline=None)
@given(
    log=batched_logs(),
    first=st.integers(1, 45),
    max_count=st.integers(1, 20),
    max_bytes=st.integers(1, 3000),
)
def test_batch_end_is_a_capped_run_of_whole_client_batches(log, first, max_count, max_bytes):
    if first > 1 and first <= log.last_seq and log.flags(first - 1) & BATCH_MORE:
        first = log.whole_end(first) + 1  # replication batches start where a client batch starts
    last = log.batch_end(first, max_count, max_bytes)
    if first > log.last_seq:
        assert last == first - 1
        return
    assert first <= last <= log.last_seq, "at least one entry whenever first <= last_seq"
    assert not log.flags(last) & BATCH_MORE, "never ends inside a client batch"
    # the caps hold up to the end of the client batch the cap fell in
    capped = min(log.last_seq, first + max_count - 1)
    assert last <= log.whole_end(capped)
    # the caps held up to the first entry of the last client batch; only that batch's rest goes past them
    start = last
    while start > first and log.flags(start - 1) & BATCH_MORE:
        start -= 1
    if start > first:
        assert sum(len(log.text(s)) + 64 for s in range(first, start + 1)) <= max_bytes
    assert start - first < max_count


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


# --- the hash chain ------------------------------------------------------------


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def test_chain_is_blake2b_128_over_prev_flags_id_length_id_and_text():
    # the formula of the design notes, written out independently of the code
    prev = bytes(range(16))
    assert chain(prev, None, "héllo", 0) == blake(prev + b"\x00" + b"\x00\x00\x00\x00" + "héllo".encode())
    assert chain(prev, "k:0", "t", 3) == blake(prev + b"\x03" + (4).to_bytes(4, "little") + b"k:0" + b"t")
    assert chain(prev, "", "t", 1) == blake(prev + b"\x01" + (1).to_bytes(4, "little") + b"t")
    assert len(chain(GENESIS, None, "", 0)) == HASH_SIZE


def test_hash_of_seq_zero_is_genesis_and_each_entry_extends_the_chain():
    log = Log(LOG_ID)
    assert log.hash(0) == GENESIS
    log.append("a")
    log.append("b", "client-b", BATCH)
    h1 = chain(GENESIS, None, "a", 0)
    assert log.hash(1) == h1
    assert log.hash(2) == chain(h1, "client-b", "b", BATCH)


def test_append_and_extend_build_the_same_chain():
    one, many = Log(LOG_ID), Log(LOG_ID)
    items = [(None, "x", 0), ("id-1", "y", 0), *client_batch("k", ["", "z"])]
    for id_, text, flags in items:
        one.append(text, id_, flags)
    many.extend(items)
    assert [one.hash(s) for s in range(5)] == [many.hash(s) for s in range(5)]


def test_the_chain_does_not_depend_on_the_log_identity():
    # two nodes compare chain values; generated ids travel as None, so the identity is not hashed
    a, b = filled(3, LOG_ID), filled(3, "fedcba9876543210")
    assert [a.hash(s) for s in range(4)] == [b.hash(s) for s in range(4)]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ([(None, "a", 0), (None, "b", 0)], [(None, "a", 0), (None, "c", 0)]),  # other text at the tail
        ([(None, "a", 0), (None, "b", 0)], [(None, "z", 0), (None, "b", 0)]),  # earlier: the chain carries it
        ([(None, "a", 0)], [("a", "", 0)]),  # generated id vs a client id
        ([(None, "a", 0)], [("", "a", 0)]),  # no id vs an empty id
        ([("ab", "c", 0)], [("a", "bc", 0)]),  # id/text boundary
        ([(None, "a\x00b", 0)], [("a", "b", 0)]),
        ([(None, "a", 0)], [(None, "a", BATCH)]),  # a single vs a batch of one
        ([(None, "a", BATCH | BATCH_MORE), (None, "b", BATCH)], [(None, "a", BATCH), (None, "b", BATCH)]),
        ([(None, "a", 0), (None, "b", 0)], [(None, "b", 0), (None, "a", 0)]),  # order
    ],
)
def test_different_prefixes_have_different_hashes(left, right):
    a, b = Log(LOG_ID), Log(LOG_ID)
    a.extend(left)
    b.extend(right)
    assert a.hash(a.last_seq) != b.hash(b.last_seq)


def crc_collision(text: str) -> str:
    """Another ASCII text of the same length whose CRC-32 equals text's.

    CRC-32 is affine over GF(2): for texts of one length, crc(x) ^ crc(y) depends only on x ^ y.
    So flip bit 0 of some of the characters, choosing which by solving the 32 linear equations that
    make the CRC difference zero. Flipping bit 0 keeps every character ASCII, hence valid UTF-8.
    This is what any client can do to the checksum chain that replog used before issue 8.
    """
    data = text.encode()
    assert text.isascii() and len(data) >= 64
    zero = bytes(len(data))
    base = zlib.crc32(zero)

    def delta(i: int) -> int:  # the CRC difference that flipping bit 0 of byte i makes
        flipped = bytearray(zero)
        flipped[i] ^= 1
        return zlib.crc32(bytes(flipped)) ^ base

    # Gaussian elimination over GF(2): each row is (a 32-bit CRC difference, the set of flips making it).
    rows: list[tuple[int, int]] = []  # (vector, which bytes) with distinct leading bits
    for i in range(len(data)):
        vec, used = delta(i), 1 << i
        for rvec, rused in rows:
            if vec ^ rvec < vec:  # rvec's leading bit is set in vec: eliminate it
                vec, used = vec ^ rvec, used ^ rused
        if vec:
            rows.append((vec, used))
            rows.sort(reverse=True)
        else:
            break  # a non-empty set of flips whose CRC difference is zero
    assert not vec, "64 columns in a 32-dimensional space always leave a dependent set"
    out = bytearray(data)
    for i in range(len(data)):
        if used >> i & 1:
            out[i] ^= 1
    return out.decode()


def test_a_client_cannot_forge_a_chain_value_as_it_could_a_crc():
    """Defect 9: two different texts with the same CRC-32 have different chain values."""
    honest = "pay 100 to alice; " * 4
    forged = crc_collision(honest)
    assert forged != honest and len(forged) == len(honest)
    assert forged.isascii()
    assert zlib.crc32(forged.encode()) == zlib.crc32(honest.encode())

    # the checksum chain before issue 8 (CRC-32 seeded with the previous value) collides at any seed,
    # so two logs that differ in this entry compared equal at every later seq
    def old_chain(prev: int, text: str) -> int:
        return zlib.crc32(b"\x00" + text.encode(), prev)

    for seed in (0, 1, 0xDEADBEEF):
        assert old_chain(seed, forged) == old_chain(seed, honest)

    # the hash chain tells them apart, at that seq and at every seq after it
    assert chain(GENESIS, None, forged, 0) != chain(GENESIS, None, honest, 0)
    a, b = Log(LOG_ID), Log(LOG_ID)
    for log, text in ((a, honest), (b, forged)):
        log.append("before")
        log.append(text)
        log.append("after")
    assert a.hash(1) == b.hash(1)
    assert a.hash(2) != b.hash(2)
    assert a.hash(3) != b.hash(3)


# --- rollback and verified extension ------------------------------------------------


@pytest.mark.parametrize("keep", [0, 1, 3, 5])
def test_truncate_drops_the_tail_and_the_chain_continues_as_if_never_written(keep):
    log = filled(5)
    log.truncate(keep)
    assert log.last_seq == keep
    assert texts(log) == [f"m{s}" for s in range(1, keep + 1)]
    assert [log.hash(s) for s in range(keep + 1)] == [filled(5).hash(s) for s in range(keep + 1)]
    log.append("new")
    fresh = filled(keep)
    fresh.append("new")
    assert log.hash(keep + 1) == fresh.hash(keep + 1)
    assert log.item(keep + 1) == (None, "new", 0)


@pytest.mark.parametrize("to", [-1, 6, 100])
def test_truncate_refuses_a_seq_outside_the_log(to):
    log = filled(5)
    with pytest.raises(ValueError):
        log.truncate(to)
    assert log.last_seq == 5


def test_extend_hashed_copies_a_log_exactly():
    source = batched_log()
    copy = Log(LOG_ID)
    assert copy.extend_hashed(source.hashed(1, 4)) == 1
    assert copy.extend_hashed(source.hashed(5, 7)) == 5
    assert copy.wire(1, 7) == source.wire(1, 7)
    assert copy.dicts() == source.dicts()
    # and appending after it continues the same chain
    copy.append("more")
    source.append("more")
    assert copy.hash(8) == source.hash(8)
