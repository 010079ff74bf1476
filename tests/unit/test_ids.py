"""Unit tests for replog.ids: every idempotency rule, and the index rebuilt from a log equals the live one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replog.ids import BATCH, BATCH_MORE, Found, IdConflict, IdIndex, ReservedId, find
from replog.log import Log

LOG_ID = "0123456789abcdef"
GEN = LOG_ID[:8]  # prefix of this log's generated ids
generated = Log(LOG_ID).generated_seq

Write = tuple[str | None, bool, tuple[str, ...]]  # (id or key, batch?, texts)


def single(key: str | None, text: str = "x") -> Write:
    return (key, False, (text,))


def batch(key: str | None, *texts: str) -> Write:
    return (key, True, texts)


class Store:
    """The master's use of the index, without the master: find, then append and add when new."""

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, str, int]] = []  # entry seq i + 1: (id, text, flags)
        self.index = IdIndex()

    def text_at(self, seq: int) -> str:
        assert 1 <= seq <= len(self.entries), seq  # find never reads outside the log
        return self.entries[seq - 1][1]

    def find(self, write: Write, index: IdIndex | None = None) -> int | None | str:
        """find()'s answer: a seq (retry), None (new), "conflict" or "reserved"."""
        key, is_batch, texts = write
        try:
            return find(
                self.index if index is None else index,
                key,
                batch=is_batch,
                texts=texts,
                text_at=self.text_at,
                generated=generated,
            )
        except IdConflict:
            return "conflict"
        except ReservedId:
            return "reserved"

    def write(self, write: Write) -> int | None | str:
        answer = self.find(write)
        if answer is None:
            key, is_batch, texts = write
            first = len(self.entries) + 1
            for i, text in enumerate(texts):
                if is_batch:
                    id_ = None if key is None else f"{key}:{i}"
                    flags = BATCH | (BATCH_MORE if i < len(texts) - 1 else 0)
                else:
                    id_, flags = key, 0
                self.entries.append((id_, text, flags))
                self.index.add(first + i, id_, flags)
        return answer

    def rebuilt(self, upto: int | None = None) -> IdIndex:
        entries = self.entries if upto is None else self.entries[:upto]
        return IdIndex.of((seq, id_, flags) for seq, (id_, _, flags) in enumerate(entries, 1))

    def truncate(self, last_seq: int) -> None:
        del self.entries[last_seq:]
        self.index.truncate(last_seq)

    def boundaries(self) -> list[int]:
        """The seqs a rollback may truncate to: 0 and every seq that ends a write."""
        return [0] + [seq for seq, (_, _, flags) in enumerate(self.entries, 1) if not flags & BATCH_MORE]


def oracle(entries: Sequence[tuple[str | None, str, int]], write: Write) -> int | None | str:
    """The rules, read straight off the stored entries (no index): what find() must answer."""
    key, is_batch, texts = write
    if key is None:
        return None
    writes = []  # (key or id, batch?, first seq, texts) of every stored write
    seq = 1
    while seq <= len(entries):
        id_, text, flags = entries[seq - 1]
        end = seq
        while entries[end - 1][2] & BATCH_MORE:
            end += 1
        if flags & BATCH:
            name = None if id_ is None else id_.removesuffix(":0")
            writes.append((name, True, seq, tuple(t for _, t, _ in entries[seq - 1 : end])))
        else:
            writes.append((id_, False, seq, (text,)))
        seq = end + 1
    for name, was_batch, first, stored in writes:
        if name == key:
            return first if (was_batch, stored) == (is_batch, tuple(texts)) else "conflict"
    n = generated(key)
    if n is not None:
        if is_batch or not 1 <= n <= len(entries) or entries[n - 1][0] is not None:
            return "reserved"
        return n if entries[n - 1][1] == texts[0] else "conflict"
    in_use = {name for name, *_ in writes} | {id_ for id_, _, _ in entries}
    mine = {key} | ({f"{key}:{i}" for i in range(len(texts))} if is_batch else set())
    return "conflict" if mine & in_use else None


# --- the rules, one by one ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "query", "answer"),
    [
        ([], single("a"), None),
        ([], single(None), None),
        ([], batch(None, "x", "y"), None),
        ([single("a", "x")], single("a", "x"), 1),  # a retry
        ([single("a", "x")], single("a", "y"), "conflict"),  # other text
        ([single("a", "x")], batch("a", "x"), "conflict"),  # other kind
        ([single("a", "x")], single(None, "x"), None),
        ([batch("k", "x", "y")], batch("k", "x", "y"), 1),
        ([single("z"), batch("k", "x", "y")], batch("k", "x", "y"), 2),
        ([batch("k", "x", "y")], batch("k", "x"), "conflict"),  # other count
        ([batch("k", "x", "y")], batch("k", "x", "y", "z"), "conflict"),
        ([batch("k", "x", "y")], batch("k", "x", "z"), "conflict"),  # other text
        ([batch("k", "x")], single("k", "x"), "conflict"),  # other kind
        ([batch("k", "x", "y")], single("k:1", "y"), "conflict"),  # the id of a batch's entry
        ([batch("k", "x", "y")], single("k:0", "x"), "conflict"),
        ([batch("k", "x", "y")], single("k:2"), None),  # no such entry
        ([batch("k", "x", "y")], single("k:01"), None),  # not spelled like an entry id
        ([single("k:1")], batch("k", "x", "y"), "conflict"),  # its entry 1 would take a single's id
        ([single("k:1")], batch("k", "x"), None),  # "k:0" only
        ([single("j:0", "x")], batch("j", "x"), "conflict"),  # a single "j:0" is no batch "j"
        ([batch("k", "x")], batch("k:0", "x"), "conflict"),  # the key is the id of a batch's entry
        ([batch("k:0", "x")], batch("k", "x"), "conflict"),  # entry "k:0" would be a batch's key
        ([batch("k:0", "x")], single("k:0:0", "x"), "conflict"),
        ([batch(None, "x", "y")], single("x"), None),
        # defect 7: a new single "j" when only a single "j:0" exists is new
        ([single("j:0")], single("j"), None),
        # defect 7: a batch "k" of 3 is no retry of a batch "k" of 2 plus a single "k:2"
        ([batch("k", "a", "b"), single("k:2", "c")], batch("k", "a", "b", "c"), "conflict"),
        ([batch("k", "a", "b"), single("k:2", "c")], batch("k", "a", "b"), 1),
        ([batch("k", "a", "b"), single("k:2", "c")], single("k:2", "c"), 3),
    ],
)
def test_find_table(stored, query, answer):
    store = Store()
    for write in stored:
        assert store.write(write) is None, write
    assert store.find(query) == answer
    assert store.find(query, store.rebuilt()) == answer
    assert oracle(store.entries, query) == answer


@pytest.mark.parametrize(
    ("stored", "query", "answer"),
    [
        # defect 6: "<prefix>-0" names no entry, on an empty log or not
        ([], single(f"{GEN}-0"), "reserved"),
        ([single(None, "x")], single(f"{GEN}-0", "x"), "reserved"),
        ([single("a", "x")], single(f"{GEN}-0", "x"), "reserved"),
        ([], single(f"{GEN}-1"), "reserved"),  # not yet written
        ([single(None, "x")], single(f"{GEN}-1", "x"), 1),  # a retry with the id the master generated
        ([single(None, "x")], single(f"{GEN}-1", "y"), "conflict"),
        ([single(None, "x")], single(f"{GEN}-2", "x"), "reserved"),
        ([single("a", "x")], single(f"{GEN}-1", "x"), "reserved"),  # entry 1 has a client id
        ([batch("k", "x", "y")], single(f"{GEN}-2", "y"), "reserved"),
        ([batch(None, "x", "y")], single(f"{GEN}-2", "y"), 2),  # a keyless batch's entries are generated
        ([single(None, "x")], batch(f"{GEN}-1", "x"), "reserved"),  # generated ids name singles only
        ([], batch(f"{GEN}-1", "x"), "reserved"),
        ([single(None, "x")], single("ffffffff-1", "x"), None),  # another log's prefix: an ordinary id
        ([single(None, "x")], single(f"{GEN}-x", "x"), None),
        ([single(None, "x")], single(f"{GEN}-1:0", "x"), None),
        ([single(None, "x")], batch(f"{GEN}-1:0", "x"), None),
    ],
)
def test_generated_ids_table(stored, query, answer):
    store = Store()
    for write in stored:
        assert store.write(write) is None, write
    assert store.find(query) == answer
    assert store.find(query, store.rebuilt()) == answer
    assert oracle(store.entries, query) == answer


def test_generated_id_past_a_rollback_is_reserved():
    store = Store()
    store.write(single(None, "x"))
    store.write(single(None, "y"))
    assert store.find(single(f"{GEN}-2", "y")) == 2
    store.truncate(1)
    assert store.find(single(f"{GEN}-2", "y")) == "reserved"


def test_a_batch_retry_answers_the_same_before_and_after_a_rebuild():
    # defect 7: 200 before a restart, 409 after it
    store = Store()
    store.write(single("a"))
    assert store.write(batch("order-7", "m1", "m2", "m3", "m4")) is None
    retry = batch("order-7", "m1", "m2", "m3", "m4")
    assert store.find(retry) == 2
    rebuilt = store.rebuilt()
    assert rebuilt == store.index
    assert store.find(retry, rebuilt) == 2
    assert rebuilt.lookup("order-7") == Found(2, 4, True)


def test_lookup_and_taken():
    store = Store()
    for write in [single("a"), batch("k", "x", "y"), batch(None, "z"), single("k:2")]:
        store.write(write)
    index = store.index
    assert index.lookup("a") == Found(1, 1, False)
    assert index.lookup("k") == Found(2, 2, True)
    assert index.lookup("k:2") == Found(5, 1, False)
    assert index.lookup("k:0") is None  # an entry's id, not a key
    assert index.lookup("b") is None
    assert [index.taken(n) for n in ["a", "k", "k:0", "k:1", "k:2", "k:3", "b"]] == [True] * 5 + [False] * 2
    assert index.batch_holding("k:1") == ("k", 1)
    assert index.batch_holding("k:2") is None
    assert [index.has_id(seq) for seq in range(1, 6)] == [True, True, True, False, True]
    assert index.last_seq == 5
    assert len(index) == 3


def test_entries_without_an_id_cost_no_keys_and_no_runs():
    index = IdIndex.of((seq, None, 0) for seq in range(1, 10_001))
    assert len(index) == 0 and index.last_seq == 10_000
    assert not index.has_id(1) and not index.has_id(10_000)
    assert index == IdIndex.of((seq, None, BATCH | (BATCH_MORE if seq % 2 else 0)) for seq in range(1, 10_001))
    assert repr(index) == "IdIndex(last_seq=10000, keys=0, runs=0)"


# --- what add() refuses (no master writes it) ---------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "bad"),
    [
        ([], (2, None, 0)),  # out of order
        ([(1, None, 0)], (1, None, 0)),
        ([], (1, None, BATCH_MORE)),  # BATCH_MORE without BATCH
        ([], (1, None, 4)),  # unknown flag
        ([(1, "k:0", BATCH | BATCH_MORE)], (2, None, 0)),  # a torn batch
        ([(1, None, BATCH | BATCH_MORE)], (2, "a", 0)),
        ([(1, None, BATCH | BATCH_MORE)], (2, "a", BATCH)),  # an id inside a keyless batch
        ([(1, "k:0", BATCH | BATCH_MORE)], (2, "k:2", BATCH)),  # the wrong entry id
        ([(1, "k:0", BATCH | BATCH_MORE)], (2, None, BATCH)),
        ([], (1, "k", BATCH)),  # a batch's first id must be "<key>:0"
        ([(1, "a", 0)], (2, "a", 0)),  # ids in use
        ([(1, "a", 0)], (2, "a:0", BATCH)),
        ([(1, "a:0", 0)], (2, "a:0", BATCH)),
        ([(1, "a:1", 0), (2, "a:0", BATCH | BATCH_MORE)], (3, "a:1", BATCH)),
        ([(1, "a:0", BATCH)], (2, "a:0", 0)),
        ([(1, "a:0", BATCH)], (2, "a", 0)),
        ([(1, "a:0", BATCH)], (2, "a:0:0", BATCH)),
    ],
)
def test_add_refuses_what_no_master_writes(entries, bad):
    index = IdIndex.of(entries)
    with pytest.raises(ValueError):
        index.add(*bad)
    assert index == IdIndex.of(entries)  # unchanged


def test_truncate_refuses_to_cut_a_keyed_batch():
    entries = [(1, "a", 0), (2, "k:0", BATCH | BATCH_MORE), (3, "k:1", BATCH | BATCH_MORE), (4, "k:2", BATCH)]
    index, before = IdIndex.of(entries), IdIndex.of(entries)
    for cut in (2, 3):
        with pytest.raises(ValueError):
            index.truncate(cut)
        assert index == before
    with pytest.raises(ValueError):
        index.truncate(-1)
    index.truncate(4)
    index.truncate(9)
    assert index == before
    index.truncate(1)
    assert index == IdIndex.of([(1, "a", 0)])
    index.truncate(0)
    assert index == IdIndex()


def test_truncate_below_an_open_batch_closes_it():
    index = IdIndex.of([(1, None, 0), (2, "k:0", BATCH | BATCH_MORE)])
    index.truncate(1)
    assert index == IdIndex.of([(1, None, 0)])
    index.add(2, "a", 0)  # a single, no longer read as the rest of batch "k"
    assert index.lookup("a") == Found(2, 1, False)


def test_consecutive_ids_are_one_run():
    index = IdIndex.of((seq, f"i{seq}", 0) for seq in range(1, 1001))
    index.add(1001, None, 0)
    index.add(1002, "k:0", BATCH | BATCH_MORE)
    index.add(1003, "k:1", BATCH)
    assert repr(index) == "IdIndex(last_seq=1003, keys=1001, runs=2)"
    assert [index.has_id(seq) for seq in (1, 1000, 1001, 1002, 1003)] == [True, True, False, True, True]
    index.truncate(500)
    assert repr(index) == "IdIndex(last_seq=500, keys=500, runs=1)"
    assert index.has_id(500) and not index.has_id(501)


def test_an_open_batch_is_continued():
    index = IdIndex()
    index.add(1, "k:0", BATCH | BATCH_MORE)
    assert index.lookup("k") == Found(1, 1, True)
    assert repr(index) == "IdIndex(last_seq=1, keys=1, runs=1, open batch 'k')"
    index.add(2, "k:1", BATCH)
    assert index.lookup("k") == Found(1, 2, True)
    index.add(3, "k:2", 0)  # the batch is closed: a single may use "k:2"
    assert index.lookup("k:2") == Found(3, 1, False)


# --- properties -----------------------------------------------------------------------------------

# A small alphabet so that keys collide: singles, batch keys, entry-like ids, generated-like ids.
KEYS = [None, None, "a", "b", "a:0", "a:1", "a:2", "b:0", "a:0:0", "a:01", f"{GEN}-0", f"{GEN}-1", f"{GEN}-3"]
writes = st.tuples(
    st.sampled_from(KEYS),
    st.booleans(),
    st.lists(st.sampled_from("xy"), min_size=1, max_size=3).map(tuple),
).map(lambda w: (w[0], w[1], w[2] if w[1] else w[2][:1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(writes, max_size=30))
def test_rebuilt_index_equals_live_index_and_answers_the_same(ops):
    store = Store()
    answers = []
    for op in ops:
        expected = oracle(store.entries, op)
        answer = store.write(op)
        assert answer == expected, (op, store.entries)
        answers.append(answer)
        # a retry's seq holds the write's first text
        if isinstance(answer, int):
            assert store.entries[answer - 1][1] == op[2][0]
    rebuilt = store.rebuilt()
    assert rebuilt == store.index
    for op in ops + [(key, is_batch, ("x",)) for key in KEYS for is_batch in (False, True)]:
        assert store.find(op, rebuilt) == store.find(op) == oracle(store.entries, op)


@settings(max_examples=300, deadline=None)
@given(st.lists(writes, max_size=25), st.data())
def test_truncate_equals_rebuilding_the_prefix(ops, data):
    store = Store()
    for op in ops:
        store.write(op)
    cut = data.draw(st.sampled_from(store.boundaries()), label="cut")
    store.truncate(cut)
    assert store.index == store.rebuilt()
    # the cut index keeps working: later writes agree with the rules and with a rebuild
    for op in data.draw(st.lists(writes, max_size=10), label="after"):
        expected = oracle(store.entries, op)
        assert store.write(op) == expected, (op, store.entries)
    assert store.index == store.rebuilt()
    for key in KEYS:
        for is_batch in (False, True):
            op = (key, is_batch, ("x",))
            assert store.find(op) == oracle(store.entries, op)
