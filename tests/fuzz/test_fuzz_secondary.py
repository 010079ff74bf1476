"""Fuzzing a secondary on a real process: its internal API (POST /replicate, POST /promise, GET /entries,
a master's GET /health, all fenced by Replog-Epoch / Replog-Master) and its client API.

The secondary under fuzz stands alone (no master), so requests can be anything: malformed, with gaps,
reversed, duplicated, contradicting what it holds, of another chain or another log, with huge, zero
or negative seqs, wrong or missing "prev", and fences of older, equal or newer epochs. A model of the
spec (the log it holds with its chain values, the entries it buffers behind a gap, its promise and its
log epoch) predicts every answer and the state after it; every answer is a 2xx or a JSON 4xx, a
refused request changes nothing but a promise to a newer master, and GET /messages never shows an
entry past a gap nor part of a client batch.

The model is written from the spec, independently of replog's code: it uses only replog.log.chain
(the chain's definition) and the flag values.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpfuzz import (
    Answer,
    assert_json_error,
    assert_json_ok,
    assert_messages_page,
    deep_values,
    encode,
    encode_query,
    exchange,
    first_value,
    fuzz,
    health_promptly,
    invalid_utf8_bodies,
    json_values,
    methods,
    not_json,
    note,
    paths,
    query_int,
    query_pairs,
    raw_query_strings,
    request_bytes,
    surrogate_texts,
    texts,
)
from replog.log import BATCH, BATCH_MORE, GENESIS, chain
from replog.tools.cluster import Node, free_port, http_json

MAX_BODY = 65536  # --max-body-bytes of the secondary under fuzz
WINDOW = 1_000_000  # entries this far past a secondary's end are refused (seq_out_of_window, --buffer-max-distance)
MAX_SEQ = 2**62  # seqs (and prev seqs) travel as integers below this
ENTRIES_CAP = 10_000  # GET /entries serves at most about this many entries
LOG = "f022" * 8  # the identity of the log the fuzz replicates
MASTER = "fuzz-master"  # the master the secondary is seeded by, at epoch 1
JSON = [("Content-Type", "application/json")]
JUNK_HASH = "5a" * 16  # a well-formed chain value that follows from nothing the fuzz sends

Item = tuple[Any, str, int]  # (id or None, text, flags)


def canonical(seq: int) -> Item:
    """The entry the "true" master writes at seq: singles, and a client batch at every seq = 4, 5, 6 (mod 7)."""
    pos = seq % 7
    flags = BATCH | BATCH_MORE if pos in (4, 5) else BATCH if pos == 6 else 0
    return (f"k{seq}" if seq % 3 == 0 else None, f"t{seq}", flags)


def fence_headers(epoch: Any, master: Any) -> list[tuple[str, str]]:
    """Replog-Epoch / Replog-Master as given (None leaves a header out)."""
    out = []
    if epoch is not None:
        out.append(("Replog-Epoch", str(epoch)))
    if master is not None:
        out.append(("Replog-Master", master))
    return out


def parse_fence(epoch: str | None, master: str | None) -> tuple[int, str] | str | None:
    """The spec's reading of the fence headers: (epoch, master), None if both are absent, else an error code."""
    if epoch is None and master is None:
        return None
    if epoch is None or not epoch.isascii() or not epoch.isdigit() or len(epoch) > 18:
        return "invalid_epoch"
    if not master or len(master) > 200:
        return "invalid_master"
    if int(epoch) < 1:
        return "invalid_epoch"
    return int(epoch), master


def parse_hash(value: Any) -> bytes | None:
    """A chain value on the wire: exactly 32 hex digits."""
    if not isinstance(value, str) or len(value) != 32 or not set(value) <= set(string.hexdigits):
        return None
    return bytes.fromhex(value)


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < MAX_SEQ


def wire_entry(item: Any) -> tuple[int, Any, str, int, bytes] | None:
    """A well-formed entry [seq >= 1, id or null, text, flags 0/1/3, hash] as a tuple; None if malformed."""
    if not isinstance(item, list) or len(item) != 5:
        return None
    seq, id_, text, flags, h = item
    if not _count(seq, 1):
        return None
    if id_ is not None and (not isinstance(id_, str) or not id_):
        return None
    if not isinstance(text, str) or type(flags) is not int or flags not in (0, BATCH, BATCH | BATCH_MORE):
        return None
    hb = parse_hash(h)
    return None if hb is None else (seq, id_, text, flags, hb)


@dataclass(frozen=True)
class State:
    """What the secondary holds: its log (items and chain values), what it buffers, its promise, its log epoch."""

    items: tuple[Item, ...] = ()
    hashes: tuple[bytes, ...] = (GENESIS,)  # hashes[seq]: the chain value after seq
    pending: tuple[tuple[int, tuple[Any, str, int, bytes]], ...] = ()  # seq -> entry, held behind a gap
    promised: int = 0
    promised_to: str | None = None
    log_epoch: int = 0

    @property
    def last(self) -> int:
        return len(self.items)

    def hash_at(self, seq: int) -> bytes:
        """Our chain value at seq; past our end, the true master's; far past it, a value of nothing."""
        if seq <= self.last:
            return self.hashes[seq]
        if seq > self.last + 64:
            return bytes.fromhex(JUNK_HASH)
        h = self.hashes[-1]
        for s in range(self.last + 1, seq + 1):
            h = chain(h, *canonical(s))
        return h

    def true_entry(self, seq: int) -> list[Any]:
        """The true master's entry at seq: ours if we hold it, else the canonical continuation of our log."""
        item = self.items[seq - 1] if seq <= self.last else canonical(seq)
        return [seq, *item, self.hash_at(seq).hex()]

    def wire(self, first: int, last: int) -> list[list[Any]]:
        return [[s, *self.items[s - 1], self.hashes[s].hex()] for s in range(first, last + 1)]


@dataclass(frozen=True)
class Expect:
    statuses: frozenset[int]
    codes: frozenset[str] = frozenset()  # the error codes allowed, if it is refused for a known reason
    after: State | None = None  # the state after it (None: unchanged)
    at: int | None = None  # the "at" of a 200 answer


def _release(state: State, entries: list[tuple[int, Any, str, int, bytes]]) -> State:
    """The reorder buffer: hold what is past the end, release the gap-free prefix that chains onto the log,
    in whole client batches; an entry that does not chain drops everything held."""
    last = state.last
    pending = dict(state.pending)
    for seq, id_, text, flags, h in entries:
        if seq > last:
            pending[seq] = (id_, text, flags, h)
    head, run, whole, nxt, foreign = state.hashes[-1], [], 0, last + 1, False
    while nxt in pending:
        id_, text, flags, h = pending[nxt]
        if chain(head, id_, text, flags) != h:
            foreign = True
            break
        run.append((id_, text, flags, h))
        head = h
        if not flags & BATCH_MORE:
            whole = len(run)
        nxt += 1
    released = run[:whole]
    for seq in range(last + 1, last + 1 + whole):
        del pending[seq]
    if foreign:
        pending.clear()
    return replace(
        state,
        items=state.items + tuple(r[:3] for r in released),
        hashes=state.hashes + tuple(r[3] for r in released),
        pending=tuple(sorted(pending.items())),
    )


@dataclass
class Replica:
    """The secondary under fuzz, and the spec's model of it."""

    node: Node
    state: State = field(default_factory=State)

    def current_fence(self) -> tuple[int, str]:
        return self.state.promised, self.state.promised_to  # type: ignore[return-value]

    def fence_check(self, fence: tuple[int, str] | str | None) -> Expect | State:
        """The refusal a fence earns, or the state after it (a newer epoch is promised first)."""
        s = self.state
        if isinstance(fence, str):
            return Expect(frozenset({400}), frozenset({"invalid_epoch", "invalid_master"}))
        if fence is None:
            return s
        epoch, master = fence
        if epoch < s.promised or (epoch == s.promised and master != s.promised_to):
            return Expect(frozenset({409}), frozenset({"stale_epoch"}))
        return s

    @staticmethod
    def promise(s: State, fence: tuple[int, str]) -> State:
        epoch, master = fence
        if epoch > s.promised:  # entries held behind a gap came from an older master: dropped
            return replace(s, promised=epoch, promised_to=master, pending=())
        return s

    def expect_replicate(self, value: Any, size: int, fence: tuple[int, str] | str | None) -> Expect:
        """The answer to a POST /replicate of value (size bytes) with this fence, and the state after it."""
        if fence is None:
            fence = "invalid_epoch"  # an internal request needs a fence
        checked = self.fence_check(fence)
        if isinstance(checked, Expect) and 400 in checked.statuses:
            return checked
        if size > MAX_BODY:
            return Expect(frozenset({413}))
        if not_json(value) or not isinstance(value, dict):
            return Expect(frozenset({400}))
        log_id, raw, prev = value.get("log"), value.get("entries"), value.get("prev")
        if not isinstance(log_id, str) or not log_id or not isinstance(raw, list):
            return Expect(frozenset({400}))
        entries = [wire_entry(item) for item in raw]
        if any(e is None for e in entries):
            return Expect(frozenset({400}))
        if not isinstance(prev, list) or len(prev) != 2 or not _count(prev[0], 0) or parse_hash(prev[1]) is None:
            return Expect(frozenset({400}))
        if isinstance(checked, Expect):
            return checked  # stale_epoch
        s = self.promise(checked, fence)  # type: ignore[arg-type]
        prev_seq, prev_hash = prev[0], parse_hash(prev[1])
        last = s.last
        problems: dict[str, int] = {}
        if log_id != LOG:  # the secondary holds entries of LOG: a foreign log is never merged
            problems["log_mismatch"] = 409
        if prev_seq <= last and s.hashes[prev_seq] != prev_hash:
            problems["entry_conflict"] = 409
        if any(e[0] > last + WINDOW for e in entries):  # type: ignore[index]
            problems["seq_out_of_window"] = 400
        if any(e[0] <= last and s.hashes[e[0]] != e[4] for e in entries):  # type: ignore[index]
            problems["entry_conflict"] = 409
        if problems:  # which of several problems is reported, the spec leaves open
            return Expect(frozenset(problems.values()), frozenset(problems), after=s)
        s = _release(s, entries)  # type: ignore[arg-type]
        epoch, master = fence  # type: ignore[misc]
        if s.log_epoch != epoch and epoch == s.promised and master == s.promised_to:
            # Its whole log is a prefix of this master's when the request gives our last seq our chain value.
            theirs = {e[0]: e[4] for e in entries}  # type: ignore[index]
            theirs[prev_seq] = prev_hash
            if theirs.get(s.last) == s.hashes[-1]:
                s = replace(s, log_epoch=epoch)
        at = max((e[0] for e in entries), default=prev_seq)  # type: ignore[index]
        return Expect(frozenset({200}), after=s, at=min(at, s.last))

    def post(self, path: str, body: bytes, fence: list[tuple[str, str]]) -> Answer:
        answer = exchange(self.node.port, request_bytes("POST", path, body, [*JSON, *fence]))
        assert answer is not None, f"the secondary closed the connection without answering POST {path}"
        return answer

    def replicate(self, body: bytes, fence: list[tuple[str, str]] | None = None) -> Answer:
        """POST /replicate, with the current master's fence unless told."""
        return self.post("/replicate", body, fence_headers(*self.current_fence()) if fence is None else fence)

    def check_status(self, body: dict[str, Any], at: int | None = None) -> None:
        """An answer's status fields are the model's."""
        s = self.state
        want = {
            "role": "secondary",
            "log": LOG,
            "seq": s.last,
            "hash": s.hashes[-1].hex(),
            "promised": s.promised,
            "promised_to": s.promised_to,
            "log_epoch": s.log_epoch,
        }
        got = {k: body.get(k) for k in want}
        assert got == want, f"status {got}, the model {want}"
        assert isinstance(body.get("incarnation"), str) and body["incarnation"], body
        if at is not None:
            assert (body["at"], body["at_hash"]) == (at, s.hashes[at].hex()), body

    def check_state(self) -> None:
        """The secondary shows exactly the model's log, gap-free, buffers as many entries, and promised as much."""
        health = health_promptly(self.node)
        self.check_status(health)
        assert health["buffered"] == len(self.state.pending), (
            f"buffers {health['buffered']}, the model {len(self.state.pending)}"
        )
        status, body = http_json("GET", self.node.url + "/messages")
        assert status == 200, body
        shown = [(m["seq"], m["id"], m["text"]) for m in body["messages"]]
        want = [(seq, id_ or f"{LOG[:8]}-{seq}", text) for seq, (id_, text, _) in enumerate(self.state.items, 1)]
        assert shown == want, "GET /messages is not the gap-free log the model holds"


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """A stand-alone secondary holding seqs 1..3 of LOG from MASTER at epoch 1 (so a foreign log is never adopted)."""
    workdir = tmp_path_factory.mktemp("fuzz-secondary")
    port = free_port()
    node = Node("secondary", port, ["--max-body-bytes", str(MAX_BODY)], workdir / "secondary.log")
    try:
        node.start()
        replica = Replica(node)
        seed = {"log": LOG, "prev": [0, GENESIS.hex()], "entries": [State().true_entry(s) for s in (1, 2, 3)]}
        replica.state = replace(State(), promised=1, promised_to=MASTER)
        expect = replica.expect_replicate(seed, 0, (1, MASTER))
        assert expect.after is not None and expect.after.last == 3 and expect.after.log_epoch == 1
        answer = replica.replicate(encode(seed, True), fence_headers(1, MASTER))
        assert answer.status == 200, answer
        replica.state = expect.after
        replica.check_status(answer.json(), at=3)
        replica.check_state()
        yield replica
    finally:
        node.stop()


def check_answer(r: Replica, answer: Answer, expect: Expect) -> None:
    """The answer is the predicted one; the model moves to the state after it; the node shows that state."""
    assert answer.status in expect.statuses, f"expected {sorted(expect.statuses)}, got {answer}"
    before = r.state
    if expect.after is not None:
        r.state = expect.after
    if answer.status == 200:
        body = assert_json_ok(answer, 200)
        note(f"200, stored {r.state.last - before.last}, buffered {len(r.state.pending) - len(before.pending):+d}")
        r.check_status(body, expect.at)
    else:
        body = assert_json_error(answer)
        note(f"{answer.status} {body['error']}")
        if expect.codes:
            assert body["error"] in expect.codes, f"expected one of {sorted(expect.codes)}, got {answer}"
        if body["error"] == "stale_epoch":
            assert body["epoch"] == r.state.promised, f"a stale_epoch answer names the promised epoch: {answer}"
        elif answer.status == 409:
            r.check_status(body)  # a refusal says what the secondary holds
    r.check_state()


def send(r: Replica, value: Any, ascii_only: bool = True, fence: tuple[Any, Any] | None = None) -> None:
    """POST value to /replicate (from the current master unless told), and check the answer and the state after it."""
    epoch, master = r.current_fence() if fence is None else fence
    body = encode(value, ascii_only)
    expect = r.expect_replicate(value, len(body), parse_fence(None if epoch is None else str(epoch), master))
    check_answer(r, r.replicate(body, fence_headers(epoch, master)), expect)


# -- POST /replicate -------------------------------------------------------------------------------


# Entries are drawn as specs relative to the secondary's end, and made real against its state in the test:
# strategies must not depend on state that changes between examples.
near = st.integers(-4, 8)  # offset from the secondary's last seq
true_specs = st.integers(1, 8).map(lambda d: ("true", d))  # ahead of the end: fills it, or waits behind a gap
held_specs = st.integers(0, 10**6).map(lambda k: ("held", k))  # a resend of an entry it holds
contradicting_specs = st.tuples(
    st.just("contradicting"),
    near,
    st.none() | st.text(min_size=1, max_size=6),
    st.text(max_size=10),
    st.sampled_from([0, BATCH, BATCH | BATCH_MORE]),
    st.booleans(),  # hashed onto the chain before it (another master's entry), or a value of nothing
)
EXTREME_SEQS = [0, -1, -(2**63), 2**31, "window", "window+1", MAX_SEQ - 1, MAX_SEQ, 2**63 - 1, 2**63, 2**64, 2**70]
extreme_specs = st.sampled_from(EXTREME_SEQS).map(lambda s: ("extreme", s))
good_hash = st.just(JUNK_HASH)
bad_hashes = st.sampled_from(["", "00", "5a" * 15, "5a" * 17, "zz" * 16, "0x" + "5a" * 15, None, 12, ["5a"]])
malformed_specs = st.one_of(
    json_values,
    st.lists(json_values, max_size=6).filter(lambda x: len(x) != 5),
    st.tuples(st.sampled_from(["1", 1.0, True, None, [1]]), st.none(), st.just("x"), st.just(0), good_hash).map(list),
    st.tuples(st.integers(1, 5), st.sampled_from([5, "", True, [], {}, 1.5]), st.just("x"), st.just(0), good_hash).map(
        list
    ),
    st.tuples(
        st.integers(1, 5), st.none(), st.sampled_from([None, 5, [], {}, True]) | surrogate_texts, st.just(0), good_hash
    ).map(list),
    st.tuples(
        st.integers(1, 5),
        st.none(),
        st.just("x"),
        st.sampled_from([2, 4, -1, 255, 256, True, None, 1.0, "1"]),
        good_hash,
    ).map(list),
    st.tuples(st.integers(1, 5), st.none(), st.just("x"), st.just(0), bad_hashes).map(list),
).map(lambda v: ("malformed", v))
GOOD_SPECS = {"true": true_specs, "held": held_specs, "contradicting": contradicting_specs}
bad_specs = st.one_of(extreme_specs, malformed_specs)
PREV_KINDS = ["before"] * 8 + ["end", "zero", "wrong", "beyond", "missing", "malformed"]
BAD_PREVS = [None, [0], [-1, JUNK_HASH], ["0", JUNK_HASH], [0, "00"], [0, "zz" * 16], {"seq": 0}, [0, JUNK_HASH, 1]]
BAD_PREVS += [[True, JUNK_HASH], [MAX_SEQ, JUNK_HASH], [1.0, JUNK_HASH], "0"]
FENCE_KINDS = ["current"] * 14 + ["newer", "newer_other", "stale_other", "older"]


@st.composite
def batch_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly entries of the true log near the end, some resends and contradictions; one batch in five
    spoilt by an extreme or malformed entry; in any order, or twice over; a prev of any kind; a fence."""
    kinds = draw(
        st.lists(st.sampled_from(["true"] * 12 + ["held"] * 4 + ["contradicting"] * 2), min_size=1, max_size=8)
    )
    specs = [draw(GOOD_SPECS[kind]) for kind in kinds]
    if draw(st.sampled_from([False] * 4 + [True])):
        specs.insert(draw(st.integers(0, len(specs))), draw(bad_specs))
    return {
        "specs": specs,
        "order": draw(st.sampled_from(["as drawn"] * 3 + ["sorted", "reversed", "doubled"])),
        "prev": draw(st.sampled_from(PREV_KINDS)),
        "bad_prev": draw(st.sampled_from(BAD_PREVS)),
        "wrong": draw(st.binary(min_size=16, max_size=16)).hex(),
        "fence": draw(st.sampled_from(FENCE_KINDS)),
    }


def _seq_key(item: Any) -> float:
    seq = item[0] if isinstance(item, list) and item else None
    return float(seq) if isinstance(seq, (int, float)) and not isinstance(seq, bool) else 0.0


def make_entries(r: Replica, spec: dict[str, Any]) -> list[Any]:
    """The entries the specs describe, against what r holds now, in the order asked for."""
    s = r.state
    last = s.last
    out = []
    for e in spec["specs"]:
        kind = e[0]
        if kind == "true":
            out.append(s.true_entry(last + e[1]))
        elif kind == "held":
            out.append(s.true_entry(e[1] % last + 1))
        elif kind == "contradicting":
            seq, id_, text, flags, chained = max(1, last + e[1]), e[2], e[3], e[4], e[5]
            h = chain(s.hash_at(seq - 1), id_, text, flags).hex() if chained else JUNK_HASH
            out.append([seq, id_, text, flags, h])
        elif kind == "extreme":
            seq = {"window": last + WINDOW, "window+1": last + WINDOW + 1}.get(e[1], e[1])
            out.append([seq, None, "x", 0, JUNK_HASH])
        else:
            out.append(e[1])
    order = spec["order"]
    if order == "sorted":
        return sorted(out, key=_seq_key)
    if order == "reversed":
        return sorted(out, key=_seq_key, reverse=True)
    if order == "doubled":
        return out + out[::-1]
    return out


def make_prev(r: Replica, spec: dict[str, Any], entries: list[Any]) -> Any:
    """The batch's prev: mostly [seq, chain value] of the entry before its lowest seq."""
    s = r.state
    kind = spec["prev"]
    seqs = [e[0] for e in entries if isinstance(e, list) and e and _count(e[0], 1)]
    before = min(seqs) - 1 if seqs else s.last
    if kind == "before":
        return [before, s.hash_at(before).hex()]
    if kind == "end":
        return [s.last, s.hash_at(s.last).hex()]
    if kind == "zero":
        return [0, GENESIS.hex()]
    if kind == "wrong":
        return [before, spec["wrong"]]
    if kind == "beyond":
        return [s.last + 2, s.hash_at(s.last + 2).hex()]
    if kind == "missing":
        return None
    return spec["bad_prev"]


def make_fence(r: Replica, kind: str) -> tuple[int, str]:
    epoch, master = r.current_fence()
    return {
        "current": (epoch, master),
        "newer": (epoch + 1, master),
        "newer_other": (epoch + 1, MASTER if master != MASTER else "fuzz-master-2"),
        "stale_other": (epoch, "intruder"),
        "older": (epoch - 1, master),  # epoch 0 is no epoch at all: a 400
    }[kind]


def make_body(r: Replica, spec: dict[str, Any], log: Any = LOG) -> dict[str, Any]:
    entries = make_entries(r, spec)
    body: dict[str, Any] = {"log": log, "entries": entries}
    prev = make_prev(r, spec, entries)
    if spec["prev"] != "missing":
        body["prev"] = prev
    return body


@fuzz(300)
@given(spec=batch_specs(), ascii_only=st.booleans())
def test_replicate_batches(replica: Replica, spec: dict[str, Any], ascii_only: bool) -> None:
    """Batches of our log: gaps, duplicates, any order, resends, contradictions, other chains, extreme and
    malformed entries, any prev, fences of older, equal and newer epochs."""
    send(replica, make_body(replica, spec), ascii_only, make_fence(replica, spec["fence"]))


foreign_log_ids = st.sampled_from(["f022" * 7 + "0000", LOG.upper(), LOG + " ", "", None, 5, [LOG]]) | texts


@fuzz(100)
@given(
    shape=st.sampled_from(["foreign", "no log", "no entries", "no prev", "extra", "any", "deep"]),
    spec=batch_specs(),
    log_id=foreign_log_ids,
    other=json_values,
    deep=deep_values,
    ascii_only=st.booleans(),
)
def test_replicate_odd_bodies(
    replica: Replica, shape: str, spec: dict[str, Any], log_id: Any, other: Any, deep: Any, ascii_only: bool
) -> None:
    """A foreign or missing log identity, missing entries or prev, extra fields, any JSON at all, deep JSON."""
    body = make_body(replica, {**spec, "prev": "before"})
    value: Any = {
        "foreign": {**body, "log": log_id},
        "no log": {k: v for k, v in body.items() if k != "log"},
        "no entries": {k: v for k, v in body.items() if k != "entries"},
        "no prev": {k: v for k, v in body.items() if k != "prev"},
        "extra": {**body, "incarnation": other, "seq": other, "epoch": other},
        "any": other,
        "deep": deep,
    }[shape]
    send(replica, value, ascii_only)


PREFIX = b'{"log":"' + LOG.encode() + b'","prev":[0,"' + GENESIS.hex().encode() + b'"],"entries":[[4,null,"'
SUFFIX = b'",0,"' + JUNK_HASH.encode() + b'"]]}'
HUGE_FLOAT_SEQ = PREFIX.replace(b"[[4,", b"[[1e400,") + b"x" + SUFFIX


@fuzz(60)
@given(
    body=st.binary(max_size=200)
    | invalid_utf8_bodies(PREFIX, SUFFIX)
    | invalid_utf8_bodies(b'{"log":"', b'","prev":[0,"' + GENESIS.hex().encode() + b'"],"entries":[]}')
    | st.sampled_from([b"", b"null", PREFIX + b"\\ud800" + SUFFIX, b"[" * 1100, HUGE_FLOAT_SEQ])
    | st.just(PREFIX + b"x" * MAX_BODY + SUFFIX)
)
def test_replicate_raw_bytes(replica: Replica, body: bytes) -> None:
    """Bytes that are not a valid batch (not JSON, not UTF-8, too large): a JSON 4xx; nothing changes."""
    answer = replica.replicate(body)
    assert_json_error(answer, 413 if len(body) > MAX_BODY else 400)
    replica.check_state()


@fuzz(30)
@given(extra=st.integers(-3, 3) | st.integers(4, 200_000))
def test_replicate_body_size_limit(replica: Replica, extra: int) -> None:
    """A batch of --max-body-bytes is read; one byte more is a JSON 413 and changes nothing."""
    seq = replica.state.last + 2  # behind a gap, and of no chain: held, then dropped, never shown

    def value(text: str) -> dict[str, Any]:
        return {"log": LOG, "prev": [seq - 1, JUNK_HASH], "entries": [[seq, None, text, 0, JUNK_HASH]]}

    size = len(encode(value(""), True))
    v = value("x" * (MAX_BODY + extra - size))
    body = encode(v, True)
    assert len(body) == MAX_BODY + extra
    fence = replica.current_fence()
    check_answer(replica, replica.replicate(body), replica.expect_replicate(v, len(body), fence))


@fuzz(40)
@given(
    kind=st.sampled_from(["trickle", "cut_body", "half_close_body", "longer_length_eof", "truncated_chunked_eof"]),
    cut=st.floats(0.05, 0.95),
)
def test_replicate_slow_and_truncated(replica: Replica, kind: str, cut: float) -> None:
    """A batch sent slowly is stored as usual; one cut short is never stored, nor answered with a 2xx."""
    s = replica.state
    seqs = sorted({max(1, s.last - 1), s.last + 1, s.last + 2})
    value = {
        "log": LOG,
        "prev": [seqs[0] - 1, s.hash_at(seqs[0] - 1).hex()],
        "entries": [s.true_entry(x) for x in seqs],
    }
    body = encode(value, True)
    fence = replica.current_fence()
    expect = replica.expect_replicate(value, len(body), fence)
    headers = [*JSON, *fence_headers(*fence)]
    full = request_bytes("POST", "/replicate", body, headers)
    head = full[: len(full) - len(body)]
    at = max(1, int(len(body) * cut))
    longer_head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 9))
    chunked = request_bytes(
        "POST", "/replicate", b"", [*headers, ("Transfer-Encoding", "chunked")], content_length=False
    )
    how = {
        "trickle": dict(chunks=[full[i : i + 16] for i in range(0, len(full), 16)], pause=0.003),
        "cut_body": dict(chunks=[head, body[:at]], wait=0.05),
        "half_close_body": dict(chunks=[head, body[:at]], shutdown_write=True),
        "longer_length_eof": dict(chunks=[longer_head, body], shutdown_write=True),
        "truncated_chunked_eof": dict(chunks=[chunked, b"%x\r\n%s\r\n" % (len(body), body)], shutdown_write=True),
    }[kind]
    answer = exchange(replica.node.port, **how)  # type: ignore[arg-type]
    if kind == "trickle":
        assert answer is not None
        check_answer(replica, answer, expect)
        return
    if answer is not None:
        assert_json_error(answer)
    replica.check_state()  # the model did not move: neither may the secondary


def test_foreign_log_is_refused_and_changes_nothing(replica: Replica) -> None:
    before = http_json("GET", replica.node.url + "/messages")[1]
    last = replica.state.last
    for entries, prev in (
        ([[last + 1, None, "alien", 0, JUNK_HASH]], [last, replica.state.hashes[-1].hex()]),
        ([[1, None, "alien", 0, JUNK_HASH]], [0, GENESIS.hex()]),
        ([], [last, replica.state.hashes[-1].hex()]),
    ):
        answer = replica.replicate(encode({"log": "another-log", "prev": prev, "entries": entries}, True))
        assert assert_json_error(answer, 409)["error"] == "log_mismatch"
    replica.check_state()
    assert http_json("GET", replica.node.url + "/messages")[1] == before


def test_a_gap_is_never_shown(replica: Replica) -> None:
    """Entries behind a gap are held, not shown; the one that fills the gap releases them all, in order
    (up to the end of the last whole client batch)."""
    s = replica.state
    last = s.last
    later = [s.true_entry(x) for x in range(last + 9, last + 1, -1)]  # last+9 .. last+2, reversed
    send(replica, {"log": LOG, "prev": [last + 1, s.hash_at(last + 1).hex()], "entries": later})
    if last + 1 not in dict(s.pending):  # (an earlier example may have left the gap's entry waiting for its batch)
        assert health_promptly(replica.node)["seq"] == last, "an entry past the gap is shown"
    fill = [s.true_entry(last + 1)]
    send(replica, {"log": LOG, "prev": [last, s.hashes[-1].hex()], "entries": fill})
    # Released up to the last client batch end among last+1 .. last+9: at worst last+8 and last+9 are
    # the first two entries of a batch of three.
    assert health_promptly(replica.node)["seq"] >= last + 7


def test_a_late_batch_of_another_chain_behind_a_gap_is_dropped(replica: Replica) -> None:
    """Defect 5: entries of another chain (a dead master's late request) wait behind a gap, then are dropped
    when the gap fills with ours; never shown."""
    s = replica.state
    last = s.last
    epoch, master = replica.current_fence()
    # A new master's epoch-only request: its promise leaves nothing buffered from before.
    send(replica, {"log": LOG, "prev": [last, s.hashes[-1].hex()], "entries": []}, fence=(epoch + 1, master))
    assert replica.state.pending == ()
    other = [last + 2, "late", "old", 0, chain(bytes.fromhex(JUNK_HASH), "late", "old", 0).hex()]
    send(replica, {"log": LOG, "prev": [last + 1, JUNK_HASH], "entries": [other]})
    assert health_promptly(replica.node)["buffered"] == 1
    send(replica, {"log": LOG, "prev": [last, s.hashes[-1].hex()], "entries": [s.true_entry(last + 1)]})
    assert health_promptly(replica.node)["buffered"] == 0, "dropped, not kept"
    assert all(m["text"] != "old" for m in http_json("GET", replica.node.url + "/messages")[1]["messages"])


# -- fences ---------------------------------------------------------------------------------------------

epoch_headers = st.one_of(
    st.integers(-2, 2).map(lambda d: ("relative", d)),
    st.sampled_from([None, "", "0", "-1", "1.0", "one", "+1", "0x1", "\u00b2", "9" * 19, "01"]).map(
        lambda v: ("raw", v)
    ),
)
master_headers = st.sampled_from([("current",), ("other",), ("raw", None), ("raw", ""), ("raw", "m" * 201)])
INTERNAL = ["POST /promise", "GET /entries", "GET /health", "POST /replicate"]


@fuzz(100)
@given(route=st.sampled_from(INTERNAL), epoch=epoch_headers, master=master_headers)
def test_fence_headers(replica: Replica, route: str, epoch: tuple[str, Any], master: tuple[Any, ...]) -> None:
    """Any Replog-Epoch / Replog-Master on every internal route: a 400 unless well-formed, a 409 stale_epoch
    below the promise, else served; only POST /promise and /replicate promise a newer epoch."""
    s = replica.state
    if epoch[0] == "relative":
        epoch_value: str | None = str(s.promised + epoch[1])
    else:
        epoch_value = epoch[1]
    master_value = {"current": s.promised_to, "other": "another-master"}.get(master[0], master[-1])
    fence = parse_fence(epoch_value, master_value)
    headers = fence_headers(epoch_value, master_value)
    method, path = route.split()
    if path == "/replicate":
        value = {"log": LOG, "prev": [s.last, s.hashes[-1].hex()], "entries": []}  # our epoch, nothing to store
        body = encode(value, True)
        expect = replica.expect_replicate(value, len(body), fence)
        check_answer(replica, replica.post(path, body, headers), expect)
        return
    if path == "/entries":
        path += "?since=0&limit=5"
    checked = replica.fence_check(fence if fence is not None or path == "/health" else "invalid_epoch")
    if isinstance(checked, Expect):
        expect = checked
    else:
        after = replica.promise(checked, fence) if method == "POST" else checked  # type: ignore[arg-type]
        expect = Expect(frozenset({200}), after=after)
    answer = exchange(replica.node.port, request_bytes(method, path, b"", headers))
    assert answer is not None
    check_answer(replica, answer, expect)
    if answer.status == 200 and path.startswith("/entries"):
        assert answer.json()["entries"] == entries_page(replica.state, 0, 5)


def test_a_hash_of_32_characters_that_is_not_32_hex_digits_is_400(replica: Replica) -> None:
    """A chain value is 32 hex digits: "5a 5a ..." (spaces between byte pairs) is 32 characters of 11 bytes."""
    s = replica.state
    spaced = ("5a " * 11)[:32]
    assert len(spaced) == 32
    value = {"log": LOG, "prev": [s.last, spaced], "entries": []}
    answer = replica.replicate(encode(value, True))
    replica.check_state()
    assert_json_error(answer, 400)


# -- GET /entries ------------------------------------------------------------------------------------------


def whole_end(s: State, seq: int) -> int:
    """The end of the client batch that holds seq (seq itself for a single write)."""
    while seq < s.last and s.items[seq - 1][2] & BATCH_MORE:
        seq += 1
    return seq


def entries_page(s: State, since: int, limit: int | None) -> list[list[Any]]:
    """GET /entries?since=&limit=: held entries after since, about limit of them (at least 1, at most
    ENTRIES_CAP), extended to the end of the client batch the limit falls in."""
    limit = ENTRIES_CAP if limit is None else max(1, min(limit, ENTRIES_CAP))
    last = min(s.last, since + limit)
    if last <= since:
        return []
    return s.wire(since + 1, whole_end(s, last))


# -- the client API of a secondary ------------------------------------------------------------------


@fuzz(100)
@given(path=st.sampled_from(["/messages", "/entries"]), pairs=query_pairs, raw=st.none() | raw_query_strings)
def test_read_query_strings(replica: Replica, path: str, pairs: list[tuple[str, str]], raw: str | None) -> None:
    query = encode_query(pairs) if raw is None else raw
    fence = fence_headers(*replica.current_fence()) if path == "/entries" else []
    answer = exchange(replica.node.port, request_bytes("GET", path + "?" + query, b"", fence))
    assert answer is not None
    if answer.status != 200:
        code = assert_json_error(answer, 400)["error"]
        assert code in ("invalid_since", "invalid_limit"), answer
    if raw is None:
        since, limit = query_int(first_value(pairs, "since")), query_int(first_value(pairs, "limit"))
        if "bad" in (since, limit):
            assert answer.status == 400, answer
        elif path == "/messages":
            assert_messages_page(answer, since or 0, limit, replica.state.last)  # type: ignore[arg-type]
        else:
            got = assert_json_ok(answer, 200)
            replica.check_status(got)
            want = entries_page(replica.state, since or 0, limit)  # type: ignore[arg-type]
            assert got["entries"] == want, f"since={since} limit={limit}: {got['entries'][:5]}"
            if want:
                assert not want[-1][3] & BATCH_MORE
    replica.check_state()


ROUTES = {(m, p) for m in ("GET", "HEAD") for p in ("/messages", "/entries", "/health")}
ROUTES |= {("POST", "/replicate"), ("POST", "/promise")}
ROUTES |= {("GET", "/"), ("HEAD", "/")}  # the dashboard


EMPTY_BATCH = encode({"log": LOG, "prev": [0, GENESIS.hex()], "entries": []}, True)


@fuzz(60)
@given(method=methods, path=paths, body=st.sampled_from([b"", b'{"message":"x"}', EMPTY_BATCH]))
def test_methods_and_paths(replica: Replica, method: str, path: str, body: bytes) -> None:
    """Without a fence: a client's routes answer, internal ones are 400, unknown ones 404/405; nothing changes."""
    answer = exchange(replica.node.port, request_bytes(method, path, body, JSON), head=method == "HEAD")
    assert answer is not None
    if (method, path) in ROUTES:
        assert answer.status in (200, 400), answer
        if path in ("/replicate", "/promise", "/entries") and method != "HEAD":
            assert assert_json_error(answer, 400)["error"] == "invalid_epoch", answer
    elif (method, path) == ("POST", "/messages"):  # a client's write: "I am a secondary"
        assert answer.status == 503 and answer.json()["error"] == "not_master", answer
    elif method == "HEAD":
        assert 400 <= answer.status < 500 and answer.content_type == "application/json", answer
    else:
        assert_json_error(answer, 404, 405)
    replica.check_state()


# -- an empty secondary ------------------------------------------------------------------------------


@pytest.fixture
def empty_secondary(tmp_path: Path) -> Iterator[Node]:
    node = Node("secondary", free_port(), [], tmp_path / "secondary.log")
    try:
        node.start()
        yield node
    finally:
        node.stop()


def _post(node: Node, body: dict[str, Any]) -> tuple[int, Any]:
    answer = exchange(
        node.port, request_bytes("POST", "/replicate", encode(body, True), [*JSON, *fence_headers(1, MASTER)])
    )
    assert answer is not None
    return answer.status, answer.json()


@pytest.mark.parametrize(
    "entries",
    [
        [[WINDOW + 1, None, "far", 0, JUNK_HASH]],  # seq_out_of_window
        [[2, None, "b", 0, JUNK_HASH], [WINDOW + 5, None, "far", 0, JUNK_HASH]],
    ],
    ids=["out-of-window", "out-of-window-with-a-valid-entry"],
)
def test_a_refused_batch_changes_nothing_on_an_empty_secondary(empty_secondary: Node, entries: list[Any]) -> None:
    """Guarantee 8 ("bad input ... changes nothing"): a refused batch must not change an empty secondary's
    identity, nor drop the entries it buffers behind a gap. (It must be judged before the secondary adopts
    the batch's log identity, which resets the buffer.)"""
    status, body = _post(
        empty_secondary, {"log": LOG, "prev": [2, JUNK_HASH], "entries": [[3, None, "held behind a gap", 0, JUNK_HASH]]}
    )
    assert status == 200 and body["seq"] == 0, body
    before = empty_secondary.health()
    assert (before["log"], before["buffered"]) == (LOG, 1), before
    status, body = _post(empty_secondary, {"log": "foreign", "prev": [0, GENESIS.hex()], "entries": entries})
    assert status == 400 and body["error"] == "seq_out_of_window", body
    after = empty_secondary.health()
    assert (after["log"], after["buffered"]) == (LOG, 1), f"a refused batch changed the secondary: {before} -> {after}"
