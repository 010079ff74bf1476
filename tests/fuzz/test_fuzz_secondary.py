"""Fuzzing a secondary on a real process: its internal POST /replicate and its client API.

The secondary under fuzz stands alone (no master), so batches can be anything: malformed, with
gaps, reversed, duplicated, contradicting what it holds, of a foreign log, with huge, zero or
negative seqs. A model of the spec (the log it holds, and the entries it buffers behind a gap)
predicts every answer and the state after it; every answer is a 2xx or a JSON 4xx, a refused
batch changes nothing, and GET /messages never shows an entry past a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
    note,
    not_json,
    paths,
    query_int,
    query_pairs,
    raw_query_strings,
    request_bytes,
    surrogate_texts,
    texts,
)
from replog.tools.cluster import Node, free_port, http_json

MAX_BODY = 65536  # --max-body-bytes of the secondary under fuzz
WINDOW = 10_000_000  # entries this far past a secondary's end are refused (seq_out_of_window)
LOG = "f022" * 8  # the identity of the log the fuzz replicates
JSON = [("Content-Type", "application/json")]

Item = tuple[Any, Any]  # (id or None, text)


def truth(seq: int) -> Item:
    """The entry the "true" master holds at seq."""
    return (f"k{seq}" if seq % 3 == 0 else None, f"t{seq}")


def _entry(item: Any) -> tuple[int, Item] | None:
    """A well-formed entry [seq >= 1, id or null, text] as (seq, (id, text)); None if malformed."""
    if not isinstance(item, list) or len(item) != 3:
        return None
    seq, id_, text = item
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    if id_ is not None and (not isinstance(id_, str) or not id_):
        return None
    if not isinstance(text, str):
        return None
    return seq, (id_, text)


@dataclass(frozen=True)
class Expect:
    statuses: frozenset[int]
    codes: frozenset[str] = frozenset()  # the error codes allowed, if it is refused for a known reason
    log: tuple[Item, ...] = ()  # after a 200
    pending: tuple[tuple[int, Item], ...] = ()


@dataclass
class Replica:
    """The secondary under fuzz, and the spec's model of what it holds."""

    node: Node
    log: list[Item] = field(default_factory=list)  # seq i+1 -> (id, text), gap-free
    pending: dict[int, Item] = field(default_factory=dict)  # held behind a gap

    def expect(self, value: Any, size: int) -> Expect:
        if size > MAX_BODY:
            return Expect(frozenset({413}))
        if not_json(value) or not isinstance(value, dict):
            return Expect(frozenset({400}))
        log_id, raw = value.get("log"), value.get("entries")
        if not isinstance(log_id, str) or not log_id or not isinstance(raw, list):
            return Expect(frozenset({400}))
        entries = [_entry(item) for item in raw]
        if any(e is None for e in entries):
            return Expect(frozenset({400}))
        last = len(self.log)
        problems: dict[str, int] = {}
        if log_id != LOG:  # the secondary holds entries of LOG: a foreign log is never merged
            problems["log_mismatch"] = 409
        if any(seq > last + WINDOW for seq, _ in entries):  # type: ignore[misc]
            problems["seq_out_of_window"] = 400
        if any(seq <= last and self.log[seq - 1] != item for seq, item in entries):  # type: ignore[misc]
            problems["entry_conflict"] = 409
        if problems:  # which of several problems is reported, the spec leaves open
            codes = set(problems)
            if any(seq >= 2**64 for seq, _ in entries):  # type: ignore[misc]
                codes.add("invalid_entries")  # beyond 64 bits: a JSON parser may read it as a float, not a seq
            return Expect(frozenset(problems.values()), frozenset(codes))
        log, pending = list(self.log), dict(self.pending)
        for seq, item in entries:  # type: ignore[misc]
            if seq > last:
                pending[seq] = item  # the latest word on a seq not yet held wins
        while len(log) + 1 in pending:
            log.append(pending.pop(len(log) + 1))
        return Expect(frozenset({200}), log=tuple(log), pending=tuple(sorted(pending.items())))

    def replicate(self, body: bytes) -> Answer:
        answer = exchange(self.node.port, request_bytes("POST", "/replicate", body, JSON))
        assert answer is not None, "the secondary closed the connection without answering"
        return answer

    def check_state(self) -> None:
        """The secondary shows exactly the model's log, gap-free, and buffers as many entries as the model."""
        health = health_promptly(self.node)
        assert health["log"] == LOG, health
        assert health["seq"] == len(self.log), f"holds up to {health['seq']}, the model {len(self.log)}"
        assert health["buffered"] == len(self.pending), f"buffers {health['buffered']}, the model {len(self.pending)}"
        status, body = http_json("GET", self.node.url + "/messages")
        assert status == 200, body
        shown = [(m["seq"], m["id"], m["text"]) for m in body["messages"]]
        want = [(seq, id_ or f"{LOG[:8]}-{seq}", text) for seq, (id_, text) in enumerate(self.log, 1)]
        assert shown == want, "GET /messages is not the gap-free log the model holds"


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """A stand-alone secondary holding seqs 1..3 of LOG (so a foreign log is never adopted)."""
    workdir = tmp_path_factory.mktemp("fuzz-secondary")
    port = free_port()
    node = Node("secondary", port, ["--max-body-bytes", str(MAX_BODY)], workdir / "secondary.log")
    try:
        node.start()
        replica = Replica(node)
        seed = [[seq, *truth(seq)] for seq in (1, 2, 3)]
        status, body = http_json("POST", node.url + "/replicate", {"log": LOG, "entries": seed})
        assert status == 200 and body["seq"] == 3, body
        replica.log = [truth(seq) for seq in (1, 2, 3)]
        replica.check_state()
        yield replica
    finally:
        node.stop()


def check_replicate(r: Replica, answer: Answer, expect: Expect) -> None:
    """The answer is the predicted one; after a 200 the model advances; after a refusal nothing changed."""
    assert answer.status in expect.statuses, f"expected {sorted(expect.statuses)}, got {answer}"
    if answer.status == 200:
        body = assert_json_ok(answer, 200)
        note(f"200, stored {len(expect.log) - len(r.log)}, buffered {len(expect.pending) - len(r.pending):+d}")
        r.log, r.pending = list(expect.log), dict(expect.pending)
        assert body["seq"] == len(r.log) and body["log"] == LOG and isinstance(body["boot"], str), answer
    else:
        body = assert_json_error(answer)
        note(f"{answer.status} {body['error']}")
        if expect.codes:
            assert body["error"] in expect.codes, f"expected one of {sorted(expect.codes)}, got {answer}"
        if answer.status == 409:
            assert (body["seq"], body["log"]) == (len(r.log), LOG), f"a 409 must say what the secondary holds: {answer}"
    r.check_state()


def send(r: Replica, value: Any, ascii_only: bool = True) -> None:
    """POST value to /replicate, and check the answer and the state after it against the model."""
    body = encode(value, ascii_only)
    expect = r.expect(value, len(body))
    check_replicate(r, r.replicate(body), expect)


# -- POST /replicate -------------------------------------------------------------------------------


# Entries are drawn as specs relative to the secondary's end, and made real against its state in the test:
# strategies must not depend on state that changes between examples.
near = st.integers(-4, 8)  # offset from the secondary's last seq
true_specs = st.integers(1, 8).map(lambda d: ("true", d))  # ahead of the end: fills it, or waits behind a gap
held_specs = st.integers(0, 10**6).map(lambda k: ("held", k))  # a resend of an entry it holds
contradicting_specs = st.tuples(
    st.just("contradicting"), near, st.none() | st.text(min_size=1, max_size=6), st.text(max_size=10)
)
EXTREME_SEQS = [0, -1, -(2**63), 2**31, "window", "window+1", 2**62, 2**63 - 1, 2**63, 2**64, 2**70]
extreme_specs = st.sampled_from(EXTREME_SEQS).map(lambda s: ("extreme", s))
malformed_specs = st.one_of(
    json_values,
    st.lists(json_values, max_size=5).filter(lambda x: len(x) != 3),
    st.tuples(st.sampled_from(["1", 1.0, True, None, [1]]), st.none(), st.just("x")).map(list),
    st.tuples(st.integers(1, 5), st.sampled_from([5, "", True, [], {}, 1.5]), st.just("x")).map(list),
    st.tuples(st.integers(1, 5), st.none(), st.sampled_from([None, 5, [], {}, True]) | surrogate_texts).map(list),
).map(lambda v: ("malformed", v))
GOOD_SPECS = {"true": true_specs, "held": held_specs, "contradicting": contradicting_specs}
bad_specs = st.one_of(extreme_specs, malformed_specs)


@st.composite
def entry_specs(draw: st.DrawFn) -> tuple[list[Any], str]:
    """Mostly entries of the true log near the end, some resends and contradictions; one batch in five
    spoilt by an extreme or malformed entry; in any order, or twice over."""
    kinds = draw(st.lists(st.sampled_from(["true"] * 12 + ["held"] * 4 + ["contradicting"]), min_size=1, max_size=8))
    specs = [draw(GOOD_SPECS[kind]) for kind in kinds]
    if draw(st.sampled_from([False] * 4 + [True])):
        specs.insert(draw(st.integers(0, len(specs))), draw(bad_specs))
    return specs, draw(st.sampled_from(["as drawn"] * 3 + ["sorted", "reversed", "doubled"]))


def _seq_key(item: Any) -> float:
    seq = item[0] if isinstance(item, list) and item else None
    return float(seq) if isinstance(seq, (int, float)) and not isinstance(seq, bool) else 0.0


def make_entries(r: Replica, specs: tuple[list[Any], str]) -> list[Any]:
    """The entries specs describe, against what r holds now, in the order asked for."""
    last = len(r.log)
    out = []
    for spec in specs[0]:
        kind = spec[0]
        if kind == "true":
            seq = max(1, last + spec[1])
            out.append([seq, *truth(seq)])
        elif kind == "held":
            seq = spec[1] % last + 1
            out.append([seq, *r.log[seq - 1]])
        elif kind == "contradicting":
            out.append([max(1, last + spec[1]), spec[2], spec[3]])
        elif kind == "extreme":
            seq = {"window": last + WINDOW, "window+1": last + WINDOW + 1}.get(spec[1], spec[1])
            out.append([seq, None, "x"])
        else:
            out.append(spec[1])
    order = specs[1]
    if order == "sorted":
        return sorted(out, key=_seq_key)
    if order == "reversed":
        return sorted(out, key=_seq_key, reverse=True)
    if order == "doubled":
        return out + out[::-1]
    return out


foreign_log_ids = st.sampled_from(["f022" * 7 + "0000", LOG.upper(), LOG + " ", "", None, 5, [LOG]]) | texts


@fuzz(300)
@given(specs=entry_specs(), ascii_only=st.booleans())
def test_replicate_batches(replica: Replica, specs: Any, ascii_only: bool) -> None:
    """Batches of our log: gaps, duplicates, any order, resends, contradictions, extreme and malformed entries."""
    send(replica, {"log": LOG, "entries": make_entries(replica, specs)}, ascii_only)


@fuzz(100)
@given(
    shape=st.sampled_from(["foreign", "no log", "no entries", "extra", "any", "deep"]),
    specs=entry_specs(),
    log_id=foreign_log_ids,
    other=json_values,
    deep=deep_values,
    ascii_only=st.booleans(),
)
def test_replicate_odd_bodies(
    replica: Replica, shape: str, specs: Any, log_id: Any, other: Any, deep: Any, ascii_only: bool
) -> None:
    """A foreign or missing log identity, missing entries, extra fields, any JSON at all, deep JSON."""
    entries = make_entries(replica, specs)
    value: Any = {
        "foreign": {"log": log_id, "entries": entries},
        "no log": {"entries": entries},
        "no entries": {"log": LOG},
        "extra": {"log": LOG, "entries": entries, "boot": other, "seq": other},
        "any": other,
        "deep": deep,
    }[shape]
    send(replica, value, ascii_only)


PREFIX = b'{"log":"' + LOG.encode() + b'","entries":[[4,null,"'
HUGE_FLOAT_SEQ = b'{"log":"' + LOG.encode() + b'","entries":[[1e400,null,"x"]]}'


@fuzz(60)
@given(
    body=st.binary(max_size=200)
    | invalid_utf8_bodies(PREFIX, b'"]]}')
    | invalid_utf8_bodies(b'{"log":"', b'","entries":[]}')
    | st.sampled_from([b"", b"null", PREFIX + b'\\ud800"]]}', b"[" * 1100, HUGE_FLOAT_SEQ])
    | st.just(PREFIX + b"x" * MAX_BODY + b'"]]}')
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
    seq = len(replica.log) + 2  # behind a gap: held, not shown, so the log stays small
    size = len(encode({"log": LOG, "entries": [[seq, None, ""]]}, True))
    value = {"log": LOG, "entries": [[seq, None, "x" * (MAX_BODY + extra - size)]]}
    body = encode(value, True)
    assert len(body) == MAX_BODY + extra
    check_replicate(replica, replica.replicate(body), replica.expect(value, len(body)))


@fuzz(40)
@given(
    kind=st.sampled_from(["trickle", "cut_body", "half_close_body", "longer_length_eof", "truncated_chunked_eof"]),
    cut=st.floats(0.05, 0.95),
)
def test_replicate_slow_and_truncated(replica: Replica, kind: str, cut: float) -> None:
    """A batch sent slowly is stored as usual; one cut short is never stored, nor answered with a 2xx."""
    seqs = sorted({max(1, len(replica.log) - 1), len(replica.log) + 1, len(replica.log) + 2})
    value = {"log": LOG, "entries": [[s, *(replica.log[s - 1] if s <= len(replica.log) else truth(s))] for s in seqs]}
    body = encode(value, True)
    expect = replica.expect(value, len(body))
    full = request_bytes("POST", "/replicate", body, JSON)
    head = full[: len(full) - len(body)]
    at = max(1, int(len(body) * cut))
    longer_head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 9))
    chunked = request_bytes("POST", "/replicate", b"", [*JSON, ("Transfer-Encoding", "chunked")], content_length=False)
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
        check_replicate(replica, answer, expect)
        return
    if answer is not None:
        assert_json_error(answer)
    replica.check_state()  # the model did not move: neither may the secondary


def test_foreign_log_is_refused_and_changes_nothing(replica: Replica) -> None:
    before = http_json("GET", replica.node.url + "/messages")[1]
    for entries in ([[len(replica.log) + 1, None, "alien"]], [[1, None, "alien"]], []):
        answer = replica.replicate(encode({"log": "another-log", "entries": entries}, True))
        assert assert_json_error(answer, 409)["error"] == "log_mismatch"
    replica.check_state()
    assert http_json("GET", replica.node.url + "/messages")[1] == before


def test_a_gap_is_never_shown(replica: Replica) -> None:
    """Entries behind a gap are held, not shown; the one that fills the gap releases them all, in order."""
    last = len(replica.log)
    later = [[s, *truth(s)] for s in range(last + 6, last + 1, -1)]  # last+6 .. last+2, reversed
    send(replica, {"log": LOG, "entries": later})
    assert health_promptly(replica.node)["seq"] == last, "an entry past the gap is shown"
    fill = [[last + 1, *truth(last + 1)]]
    send(replica, {"log": LOG, "entries": fill})
    assert health_promptly(replica.node)["seq"] >= last + 6


# -- the client API of a secondary ------------------------------------------------------------------


@fuzz(100)
@given(path=st.sampled_from(["/messages", "/entries"]), pairs=query_pairs, raw=st.none() | raw_query_strings)
def test_read_query_strings(replica: Replica, path: str, pairs: list[tuple[str, str]], raw: str | None) -> None:
    query = encode_query(pairs) if raw is None else raw
    answer = exchange(replica.node.port, request_bytes("GET", path + "?" + query))
    assert answer is not None
    if answer.status != 200:
        code = assert_json_error(answer, 400)["error"]
        assert code in ("invalid_since", "invalid_limit"), answer
    if raw is None:
        since, limit = query_int(first_value(pairs, "since")), query_int(first_value(pairs, "limit"))
        if "bad" in (since, limit):
            assert answer.status == 400, answer
        elif path == "/messages":
            assert_messages_page(answer, since or 0, limit, len(replica.log))  # type: ignore[arg-type]
        else:
            got = assert_json_ok(answer, 200)
            first, cap = (since or 0) + 1, 10_000 if limit is None else min(limit, 10_000)  # type: ignore[operator]
            want = [[s, *replica.log[s - 1]] for s in range(first, min(len(replica.log), first - 1 + cap) + 1)]
            assert got == {"log": LOG, "entries": want}, got
    replica.check_state()


ROUTES = {(m, p) for m in ("GET", "HEAD") for p in ("/messages", "/entries", "/health")} | {("POST", "/replicate")}


EMPTY_BATCH = encode({"log": LOG, "entries": []}, True)


@fuzz(60)
@given(method=methods, path=paths, body=st.sampled_from([b"", b'{"message":"x"}', EMPTY_BATCH]))
def test_methods_and_paths(replica: Replica, method: str, path: str, body: bytes) -> None:
    answer = exchange(replica.node.port, request_bytes(method, path, body, JSON), head=method == "HEAD")
    assert answer is not None
    if (method, path) in ROUTES:
        assert answer.status in (200, 400), answer
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


@pytest.mark.parametrize(
    "batch",
    [
        {"log": "foreign", "entries": [[WINDOW + 1, None, "far"]]},  # seq_out_of_window
        {"log": "foreign", "entries": [[2, None, "b"], [WINDOW + 5, None, "far"]]},
    ],
    ids=["out-of-window", "out-of-window-with-a-valid-entry"],
)
def test_a_refused_batch_changes_nothing_on_an_empty_secondary(empty_secondary: Node, batch: dict[str, Any]) -> None:
    """Guarantee 8 ("bad input ... changes nothing"): a refused batch must not change an empty secondary's
    identity, nor drop the entries it buffers behind a gap. (It must be judged before the secondary adopts
    the batch's log identity, which resets the buffer.)"""
    url = empty_secondary.url
    status, body = http_json("POST", url + "/replicate", {"log": LOG, "entries": [[3, None, "held behind a gap"]]})
    assert status == 200 and body["seq"] == 0, body
    before = empty_secondary.health()
    assert (before["log"], before["buffered"]) == (LOG, 1), before
    status, body = http_json("POST", url + "/replicate", batch)
    assert status == 400 and body["error"] == "seq_out_of_window", body
    after = empty_secondary.health()
    assert (after["log"], after["buffered"]) == (LOG, 1), f"a refused batch changed the secondary: {before} -> {after}"
