"""Fuzzing the master's client API on a real cluster (a master and two secondaries, started once).

Every request, however malformed, slow or cut short, gets a 4xx with a JSON {"error", "detail"} or a
valid 2xx; never a 5xx, never a hang. After every example the master answers GET /health promptly,
and its log moved exactly as the answer says: a refusal appends nothing, a 201 appends its
entries. A model of the spec (validation, and a ledger of the idempotency ids stored) predicts each
write's answer. The master runs with small limits so that oversized requests are cheap.
"""

from __future__ import annotations

import gzip
import math
import os
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    json_depth,
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
    weighted,
)
from replog.tools.cluster import LocalCluster, http_json

MAX_MESSAGE = 256  # --max-message-bytes of the master under fuzz
MAX_BODY = 4096  # --max-body-bytes
NODES = 3  # the master and two secondaries
MAJORITY = NODES // 2 + 1
JSON = [("Content-Type", "application/json")]
CHUNKED = ("Transfer-Encoding", "chunked")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


# -- the model: what the spec says a write's answer is ---------------------------------------


@dataclass(frozen=True)
class Expect:
    """A write's expected answer: the statuses allowed, and the entries it appends if accepted."""

    statuses: frozenset[int]
    texts: tuple[str, ...] = ()
    batch: bool = False
    id: str | None = None
    w: int = 0
    new: bool = False  # a first write: a 2xx (or 504) appends its entries
    retry_of: int | None = None  # a retry: the first seq already stored under its id


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Ledger:
    """The idempotency ids the master holds: id -> (was a batch, texts, first seq)."""

    ids: dict[str, tuple[bool, tuple[str, ...], int]] = field(default_factory=dict)

    def expect(self, value: Any, size: int) -> Expect:
        """The answer the spec gives to a POST /messages whose body is value encoded in size bytes."""
        if size > MAX_BODY:
            return Expect(frozenset({413}))
        if not_json(value) or json_depth(value) > 1024:
            return Expect(frozenset({400}))  # not JSON, or not UTF-8
        if not isinstance(value, dict):
            return Expect(frozenset({400}))
        bad, too_large = False, False
        if "message" in value and "messages" in value:
            bad = True
        elif "messages" in value:
            items, batch = value["messages"], True
            if not isinstance(items, list) or not items:
                bad = True
        elif "message" in value:
            items, batch = [value["message"]], False
        else:
            bad = True
        if not bad:
            for item in items:
                if not isinstance(item, str):
                    bad = True
                elif len(item.encode()) > MAX_MESSAGE:
                    too_large = True
        w = value.get("w")
        w = MAJORITY if w is None or w == "majority" else NODES if w == "all" else w
        if isinstance(w, float) and w.is_integer():
            w = int(w)  # JSON has one number type: 2.0 is 2
        if not (isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= NODES):
            bad = True
        id_ = value.get("id")
        if id_ is not None and (not isinstance(id_, str) or not id_):
            bad = True
        timeout = value.get("timeout")
        if timeout is not None and not (_is_number(timeout) and timeout > 0):
            bad = True
        if bad or too_large:
            # Which problem a body with several is answered for, the spec leaves open.
            return Expect(frozenset({400} if not too_large else {413} if not bad else {400, 413}))
        texts_ = tuple(items)
        may_time_out = timeout is not None and timeout <= 1e9 and w > 1
        ok = {200} if id_ in self.ids else {201}
        statuses = ok | ({504} if may_time_out else set())
        if id_ is not None and id_ in self.ids:
            was_batch, stored, first = self.ids[id_]
            if (was_batch, stored) != (batch, texts_):
                return Expect(frozenset({409}))
            return Expect(frozenset(statuses), texts_, batch, id_, w, retry_of=first)
        if id_ is not None and batch and any(f"{id_}:{i}" in self.ids for i in range(len(texts_))):
            return Expect(frozenset({409}))
        return Expect(frozenset(statuses), texts_, batch, id_, w, new=True)

    def stored(self, expect: Expect, first: int) -> None:
        if expect.id is None:
            return
        self.ids[expect.id] = (expect.batch, expect.texts, first)
        if expect.batch:
            for i, text in enumerate(expect.texts):
                self.ids[f"{expect.id}:{i}"] = (False, (text,), first + i)


# -- the cluster under fuzz --------------------------------------------------------------------


@dataclass
class Target:
    cluster: LocalCluster
    ledger: Ledger
    prefix: str  # of the ids the master generates: the first 8 characters of its log identity

    @property
    def port(self) -> int:
        return self.cluster.master.port

    def seq(self) -> int:
        return health_promptly(self.cluster.master)["seq"]

    def entries(self, first: int, count: int) -> list[dict[str, Any]]:
        status, body = http_json("GET", f"{self.cluster.master.url}/messages?since={first - 1}&limit={count}")
        assert status == 200, body
        return body["messages"]

    def post(self, body: bytes, headers: list[tuple[str, str]] = JSON) -> tuple[int, Answer, int]:
        """POST /messages: (seq before, answer, seq after)."""
        before = self.seq()
        answer = exchange(self.port, request_bytes("POST", "/messages", body, headers))
        assert answer is not None, "the master closed the connection without answering"
        return before, answer, self.seq()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    cluster = LocalCluster(
        2,
        workdir=tmp_path_factory.mktemp("fuzz-master"),
        master_args=["--max-message-bytes", str(MAX_MESSAGE), "--max-body-bytes", str(MAX_BODY)],
        heartbeat_interval=0.5,  # a busy machine must not make a secondary look unhealthy
    )
    try:
        cluster.start()
        cluster.wait_healthy()
        yield Target(cluster, Ledger(), cluster.master.health()["log"][:8])
    finally:
        cluster.cleanup()


def check_write(t: Target, before: int, answer: Answer, after: int, expect: Expect | None) -> None:
    """The answer is one the spec allows (the one the model predicts, if given); the log moved to match."""
    assert answer.status < 500 or answer.status == 504, f"a 5xx other than a write concern timeout: {answer}"
    if expect is not None:
        assert answer.status in expect.statuses, f"expected {sorted(expect.statuses)}, got {answer}"
    note(f"{answer.status} {answer.json().get('error', '') if answer.content_type == 'application/json' else ''}")
    if answer.status not in (200, 201, 504):
        assert_json_error(answer)
        assert after == before, f"a refused write ({answer.status}) changed the log: seq {before} -> {after}"
        return
    body = assert_json_ok(answer, 200, 201) if answer.status != 504 else answer.json()
    if answer.status == 504:
        assert body["error"] == "write_concern_timeout" and body["detail"], answer
        assert 1 <= body["acks"] < body["w"], answer
    else:
        assert body["acks"] >= body["w"], f"acks below w in a 2xx: {answer}"
    entries = body["entries"] if "entries" in body else [{k: body[k] for k in ("seq", "id", "text")}]
    first, n = entries[0]["seq"], len(entries)
    assert [e["seq"] for e in entries] == list(range(first, first + n)), answer
    new = first > before
    assert after == (before + n if new else before), f"seq {before} -> {after} after {answer}"
    assert (answer.status == 201) == new or answer.status == 504, f"a 201 must append, a 200 must not: {answer}"
    assert t.entries(first, n) == entries, "the log does not hold what the answer says"
    if expect is not None:
        assert new == expect.new, f"expected a {'first write' if expect.new else 'retry'}, got {answer}"
        assert tuple(e["text"] for e in entries) == expect.texts
        assert body["w"] == expect.w and ("entries" in body) == expect.batch, answer
        if expect.retry_of is not None:
            assert first == expect.retry_of, f"a retry answered with seq {first}, not the stored {expect.retry_of}"
        if expect.id is None:
            assert [e["id"] for e in entries] == [f"{t.prefix}-{e['seq']}" for e in entries]
        elif expect.batch:
            assert [e["id"] for e in entries] == [f"{expect.id}:{i}" for i in range(n)]
        else:
            assert entries[0]["id"] == expect.id
        if new:
            t.ledger.stored(expect, first)


# -- POST /messages: JSON bodies --------------------------------------------------------------

long_texts = st.text(min_size=120, max_size=300) | st.text("é€😀", min_size=60, max_size=140)  # around the cap
good_texts = weighted((8, texts), (1, long_texts))
# Valid values of each field, and values of the wrong type or range.
OPTIONAL = {
    "w": st.sampled_from([1, 2, 3, "majority", "all", None]),
    "id": st.sampled_from(["k1", "k2", "k3", "k1:0", "k2:1", "batch", "batch:1"]) | texts.filter(bool),
    "timeout": st.none() | st.floats(0.5, 10) | st.sampled_from([1e-9, 5e-324, 1e10, 10**30]),
}
JUNK = {
    "message": json_values | surrogate_texts | st.text(min_size=257, max_size=400),
    "messages": st.lists(good_texts | json_values | surrogate_texts, max_size=4) | json_values,
    "w": st.sampled_from([0, 4, -1, 2.5, 4.0, True, "2", "ALL", 2**64 + 2]) | json_values,
    "id": st.sampled_from(["", 5, True]) | json_values | surrogate_texts,
    "timeout": st.sampled_from([0, -1, -(10**30), True, "1", math.nan, math.inf, -0.0]) | json_values,
    "extra": json_values,
}


@st.composite
def write_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid single or batch write, with none, one or two of its fields then replaced by junk."""
    if draw(st.booleans()):
        body: dict[str, Any] = {"messages": draw(st.lists(good_texts, min_size=1, max_size=5))}
    else:
        body = {"message": draw(good_texts)}
    for key, values in OPTIONAL.items():
        if draw(st.booleans()):
            body[key] = draw(values)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(JUNK)))
        body[key] = draw(JUNK[key])
    return body


@fuzz(300)
@given(value=weighted((6, write_bodies()), (1, json_values), (1, deep_values)), ascii_only=st.booleans())
def test_post_json_bodies(target: Target, value: Any, ascii_only: bool) -> None:
    body = encode(value, ascii_only)
    expect = target.ledger.expect(value, len(body))
    check_write(target, *target.post(body), expect)


@fuzz(30)
@given(size=st.integers(MAX_MESSAGE - 3, MAX_MESSAGE + 3), wide=st.booleans(), batch=st.booleans())
def test_message_size_limit(target: Target, size: int, wide: bool, batch: bool) -> None:
    """A message of exactly --max-message-bytes (UTF-8 bytes, not characters) is accepted, one byte more is a 413."""
    text = ("é" * (size // 2) + "a" * (size % 2)) if wide else "a" * size
    assert len(text.encode()) == size
    value = {"messages": ["ok", text]} if batch else {"message": text}
    body = encode(value, False)
    before, answer, after = target.post(body)
    check_write(target, before, answer, after, target.ledger.expect(value, len(body)))
    if size > MAX_MESSAGE:
        assert assert_json_error(answer, 413)["error"] == "message_too_large"


@fuzz(30)
@given(extra=st.integers(-3, 3) | st.integers(4, 60_000))
def test_body_size_limit(target: Target, extra: int) -> None:
    """A body of --max-body-bytes is read; one byte more is a 413 payload_too_large, whatever it holds."""
    padding = MAX_BODY + extra - len(b'{"message":"x","pad":""}')
    body = b'{"message":"x","pad":"' + b"p" * padding + b'"}'
    assert len(body) == MAX_BODY + extra
    before, answer, after = target.post(body)
    check_write(target, before, answer, after, target.ledger.expect({"message": "x"}, len(body)))
    if extra > 0:
        assert assert_json_error(answer, 413)["error"] == "payload_too_large"


# -- POST /messages: bytes that are not (valid) JSON ---------------------------------------------


@st.composite
def truncated_json(draw: st.DrawFn) -> bytes:
    full = encode({"message": draw(texts), "w": 1}, draw(st.booleans()))
    return full[: draw(st.integers(0, len(full) - 1))]


raw_bodies = (
    st.binary(max_size=200)
    | invalid_utf8_bodies(b'{"message":"', b'"}')
    | invalid_utf8_bodies(b'{"messages":["a","', b'"]}')
    | invalid_utf8_bodies(b'{"message":"x","id":"', b'"}')
    | invalid_utf8_bodies(b'{"', b'":1,"message":"x"}')
    | truncated_json()
    | st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[]",
            b"{}",
            b'"message"',
            b'\xef\xbb\xbf{"message":"bom"}',
            b'{"message":"a"}{"message":"b"}',
            b'{"message":"a",}',
            b"{'message':'a'}",
            b'{"message":"a\x00b"',
            b'{"message":"\\ud800"}',
            b'{"message":"\\udc00\\ud800"}',
            b'{"message":NaN}',
            b'{"w":Infinity,"message":"a"}',
            b'{"message":"x","w":1e999}',
            b'{"message":"x","timeout":-0.0}',
            b'{"message":"x","w":2,"w":"nope"}',
            b"[" * 1025 + b"]" * 1025,
            b"[" * 3000,
        ]
    )
)


@fuzz(80)
@given(body=raw_bodies)
def test_post_raw_bytes(target: Target, body: bytes) -> None:
    before, answer, after = target.post(body)
    check_write(target, before, answer, after, None)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        assert answer.status in (400, 413), f"a body that is not UTF-8 was not refused: {answer}"


# -- GET /messages?since=&limit= --------------------------------------------------------------


@fuzz(100)
@given(pairs=query_pairs, raw=st.none() | raw_query_strings)
def test_get_messages_query_strings(target: Target, pairs: list[tuple[str, str]], raw: str | None) -> None:
    last = target.seq()
    query = encode_query(pairs) if raw is None else raw
    answer = exchange(target.port, request_bytes("GET", "/messages?" + query))
    assert answer is not None
    if raw is not None:  # how the server splits and decodes it is its business: only the shape is checked
        if answer.status != 200:
            assert_json_error(answer, 400)
        else:
            assert isinstance(assert_json_ok(answer, 200)["messages"], list)
    else:
        since, limit = query_int(first_value(pairs, "since")), query_int(first_value(pairs, "limit"))
        if "bad" in (since, limit):
            code = assert_json_error(answer, 400)["error"]
            assert code in ("invalid_since", "invalid_limit"), answer
        else:
            assert_messages_page(answer, since or 0, limit, last)  # type: ignore[arg-type]
    assert target.seq() == last


# -- methods, paths and headers -----------------------------------------------------------------

ROUTES = {("GET", "/messages"), ("HEAD", "/messages"), ("POST", "/messages"), ("GET", "/health"), ("HEAD", "/health")}
ROUTES |= {("GET", "/"), ("HEAD", "/")}  # the dashboard


@fuzz(60)
@given(method=methods, path=paths, body=st.sampled_from([b"", b'{"message":"route"}']))
def test_methods_and_paths(target: Target, method: str, path: str, body: bytes) -> None:
    before = target.seq()
    answer = exchange(target.port, request_bytes(method, path, body, JSON), head=method == "HEAD")
    assert answer is not None
    after = target.seq()
    if (method, path) in ROUTES:
        assert answer.status in (200, 201, 400), answer
    elif method == "HEAD":
        assert 400 <= answer.status < 500 and answer.content_type == "application/json", answer
    else:
        assert_json_error(answer, 404, 405)
    if answer.status != 201:
        assert after == before, f"{method} {path} changed the log: {answer}"


name_chars = st.characters(codec="ascii", categories=["Lu", "Ll", "Nd"], include_characters="-_!#$%&'*+.^`|~")
header_names = st.sampled_from(
    ["Content-Type", "Accept", "Accept-Encoding", "X-Junk", "Cookie", "Authorization", "User-Agent", "Origin", "Range"]
    + ["If-None-Match", "X-Forwarded-For", "Upgrade", "TE"]
) | st.text(name_chars, min_size=1, max_size=12)
header_values = st.sampled_from(
    ["application/json", "text/plain", "application/json; charset=latin-1", "multipart/form-data; boundary=x"]
    + ["application/x-www-form-urlencoded", "", "*/*", "gzip", "h2c", "websocket"]
) | st.text(st.characters(codec="ascii", min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
FRAMING = {"content-length", "transfer-encoding", "content-encoding", "connection", "host", "expect"}
# Headers that may not repeat (a repeat is malformed HTTP, tested in MALFORMED_HTTP).
SINGLETONS = {"content-location", "content-range", "content-type", "etag", "max-forwards", "server", "user-agent"}
# Content-Encoding the server decodes: the body compressed to match, or bytes that are not.
ENCODINGS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "identity": lambda b: b,
    "x-unknown": lambda b: b,
}


@fuzz(80)
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    encoding=st.none() | st.sampled_from(sorted(ENCODINGS)),
    corrupt=st.booleans(),
    chunked=st.booleans(),
    text=st.text(max_size=20),
)
def test_headers(
    target: Target, headers: list[tuple[str, str]], encoding: str | None, corrupt: bool, chunked: bool, text: str
) -> None:
    """Odd headers, Content-Type junk, compressed (or corrupt compressed) and chunked bodies."""
    plain = encode({"message": text, "w": 1}, False)
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        low = name.lower()
        if low in FRAMING or (low in SINGLETONS and low in {k.lower() for k, _ in kept}):
            continue  # framing is fuzzed below
        kept.append((name, value))
    headers = kept if any(k.lower() == "content-type" for k, _ in kept) else [*JSON, *kept]
    body = plain
    if encoding is not None:
        body = ENCODINGS[encoding](plain)
        if corrupt and encoding in ("gzip", "deflate"):
            body = body[:2] + bytes(b ^ 0x5A for b in body[2:])
        headers.append(("Content-Encoding", encoding))
    if chunked:
        headers.append(CHUNKED)
        body = b"".join(chunk(body[i : i + 7]) for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    before = target.seq()
    answer = exchange(target.port, request_bytes("POST", "/messages", body, headers, content_length=not chunked))
    assert answer is not None
    after = target.seq()
    check_write(target, before, answer, after, None)
    if not corrupt or encoding not in ("gzip", "deflate"):
        assert answer.status == 201, f"a valid write with odd headers was refused: {answer}"


# -- slow, stalled and truncated requests ----------------------------------------------------------

SLOW_KINDS = [
    "trickle",  # complete, a few bytes at a time: answered normally
    "trickle_chunked",  # complete chunked body, a chunk at a time
    "expect_continue",  # Expect: 100-continue, body after the interim answer
    "cut_body",  # Content-Length not reached, then the client closes
    "stall_body",  # Content-Length not reached, the client waits, then closes
    "half_close_body",  # Content-Length not reached, the client half-closes (EOF) and reads
    "longer_length",  # a whole valid JSON body, but Content-Length promises more; the client waits, then closes
    "longer_length_eof",  # the same, then EOF: the body is still incomplete
    "shorter_length",  # Content-Length stops short of the body: the node reads a cut body (and junk after it)
    "cut_headers",  # part of the header block, then the client closes
    "stall_headers",  # part of the header block, the client waits, then closes
    "truncated_chunked",  # chunks without the terminating zero chunk, then close
    "truncated_chunked_eof",  # the same, then EOF
    "bad_chunk_eof",  # a chunk shorter than its size line says, then EOF
]


@fuzz(30)
@given(
    kind=st.sampled_from(SLOW_KINDS),
    text=st.text(min_size=1, max_size=30),
    cut=st.floats(0.05, 0.95),
    step=st.integers(1, 9),
)
def test_slow_and_truncated_requests(target: Target, kind: str, text: str, cut: float, step: int) -> None:
    body = encode({"message": text, "w": 2}, False)
    at = max(1, min(len(body) - 1, int(len(body) * cut)))
    full = request_bytes("POST", "/messages", body, JSON)
    head = full[: len(full) - len(body)]
    chunked_head = request_bytes("POST", "/messages", b"", [*JSON, CHUNKED], content_length=False)
    chunks = [chunk(body[i : i + step]) for i in range(0, len(body), step)]
    longer_head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + step))
    # keep-alive: the bytes after the body are a next request, not the "data after Connection: close" of MALFORMED_HTTP
    kept_alive = request_bytes("POST", "/messages", b"", JSON, content_length=False, close=False)
    shorter_head = kept_alive[:-2] + b"Content-Length: %d\r\n\r\n" % (len(body) - step)
    how = {
        "trickle": dict(chunks=[full[i : i + step * 5] for i in range(0, len(full), step * 5)], pause=0.005),
        "trickle_chunked": dict(chunks=[chunked_head, *chunks, b"0\r\n\r\n"], pause=0.005),
        "expect_continue": dict(chunks=[head[:-2] + b"Expect: 100-continue\r\n\r\n", body], pause=0.05),
        "cut_body": dict(chunks=[head, body[:at]], wait=0.05),
        "stall_body": dict(chunks=[head, body[:at]], wait=0.25),
        "half_close_body": dict(chunks=[head, body[:at]], shutdown_write=True),
        "longer_length": dict(chunks=[longer_head, body], wait=0.25),
        "longer_length_eof": dict(chunks=[longer_head, body], shutdown_write=True),
        "shorter_length": dict(chunks=[shorter_head + body]),
        "cut_headers": dict(chunks=[head[: int(len(head) * cut)]], wait=0.05),
        "stall_headers": dict(chunks=[head[: int(len(head) * cut)]], wait=0.25),
        "truncated_chunked": dict(chunks=[chunked_head, *chunks], wait=0.2),
        "truncated_chunked_eof": dict(chunks=[chunked_head, *chunks], shutdown_write=True),
        "bad_chunk_eof": dict(chunks=[chunked_head, b"%x\r\n%s" % (len(body) + step, body)], shutdown_write=True),
    }[kind]
    before = target.seq()
    answer = exchange(target.port, **how)  # type: ignore[arg-type]
    after = target.seq()
    if kind in ("trickle", "trickle_chunked", "expect_continue"):
        assert answer is not None and answer.status == 201, f"{kind}: {answer}"
        check_write(target, before, answer, after, None)
        return
    # A request cut short is never appended; if the node answers it at all, it is a JSON 4xx.
    assert after == before, f"{kind}: a request cut short changed the log: seq {before} -> {after} ({answer})"
    if kind == "shorter_length":
        # The node reads Content-Length bytes (a cut JSON body) and refuses them. The bytes after it are no
        # request: whether that refusal has a JSON body is MALFORMED_HTTP's "bytes after the body" case.
        assert answer is not None and answer.status == 400, f"{kind}: {answer}"
    elif answer is not None:
        assert_json_error(answer)


def _master_fds(t: Target) -> int:
    return len(os.listdir(f"/proc/{t.cluster.master.proc.pid}/fd"))  # type: ignore[union-attr]


def test_idle_and_stalled_connections_hold_up_no_one(target: Target) -> None:
    """100 connections that send half a request and stall: the master still answers, writes and reads;
    once they close, its file descriptors go back to where they were."""
    baseline = _master_fds(target)
    head = request_bytes("POST", "/messages", b'{"message":"never"}', JSON)[:40]
    stalled = []
    try:
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            s.sendall(head if i % 2 else b"")
            stalled.append(s)
        before = target.seq()
        status, body = http_json("POST", target.cluster.master.url + "/messages", {"message": "through", "w": 3})
        assert status == 201 and body["seq"] == before + 1, body
        deadline = time.monotonic() + 10
        while _master_fds(target) < baseline + 90 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _master_fds(target) >= baseline + 90, "the stalled connections were not even open"
    finally:
        for s in stalled:
            s.close()
    deadline = time.monotonic() + 10
    while _master_fds(target) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _master_fds(target) <= baseline + 2, f"fds {baseline} -> {_master_fds(target)} after the clients closed"


# -- malformed HTTP ---------------------------------------------------------------------------------


def raw_request(request_line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """A request exactly as given (after a Host header): no Content-Length unless among the headers."""
    return b"\r\n".join([request_line, b"Host: x", *headers]) + b"\r\n\r\n" + body


POST = b"POST /messages HTTP/1.1"
CL_BODY = b'{"message":"cl"}'  # 16 bytes
malformed_requests = st.one_of(
    st.binary(min_size=1, max_size=120).map(lambda b: b + b"\r\n\r\n"),  # noise
    st.tuples(st.binary(min_size=1, max_size=12), st.sampled_from([b"/", b"/messages", b"/health"])).map(
        lambda t: raw_request(t[0] + b" " + t[1] + b" HTTP/1.1")  # a method that is not one
    ),
    st.sampled_from([b"HTTP/1.1", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10", b"http/1.1", b"HTTP/1.1x", b""]).map(
        lambda v: raw_request(b"GET /health " + v)
    ),
    st.binary(min_size=1, max_size=30).map(lambda p: raw_request(b"GET /" + p.replace(b" ", b"") + b" HTTP/1.1")),
    st.tuples(st.binary(max_size=20), st.binary(max_size=40)).map(
        lambda t: raw_request(b"GET /health HTTP/1.1", t[0] + b": " + t[1])  # a header of any bytes
    ),
    st.sampled_from([b"abc", b"-1", b"1.5", b"99999999999999999999999", b"5, 6", b" ", b"0x10"]).map(
        lambda n: raw_request(POST, b"Content-Length: " + n, body=CL_BODY)
    ),
    st.sampled_from([b"zz", b"-1", b"fffffffffffffffffff", b'5;ext="', b""]).map(
        lambda n: raw_request(POST, b"Transfer-Encoding: chunked", body=n + b"\r\n" + CL_BODY + b"\r\n0\r\n\r\n")
    ),
    st.sampled_from(
        [
            raw_request(POST, b"Content-Length: 16", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
            raw_request(POST, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
            raw_request(POST, b"Content-Length: 16", b"Content-Length: 17", body=CL_BODY),
        ]
    ),
    st.integers(8200, 20000).map(lambda n: raw_request(b"GET /health HTTP/1.1", b"X-Long: " + b"a" * n)),
    st.integers(8200, 20000).map(lambda n: raw_request(b"GET /" + b"a" * n + b" HTTP/1.1")),
)


@fuzz(60)
@given(raw=malformed_requests)
def test_malformed_http_is_refused_cleanly(target: Target, raw: bytes) -> None:
    """Bytes that are not a valid HTTP request: a 4xx (or the connection closed), never a 5xx or a hang,
    nothing appended. (Whether the 4xx has a JSON body: test_malformed_http_gets_a_json_error.)"""
    before = target.seq()
    answer = exchange(target.port, raw)
    after = target.seq()
    if answer is not None:
        assert answer.status < 500, f"a 5xx for malformed HTTP: {answer}"
        if answer.status == 201:  # the parser read some of it as a valid write: it must say so honestly
            check_write(target, before, answer, after, None)
            return
    assert after == before, f"malformed HTTP changed the log: {answer}"


ONE, LENGTH_15 = b'{"message":"a"}', b"Content-Length: 15"
CHUNKED_HEADER = b"Transfer-Encoding: chunked"
MALFORMED_HTTP = {
    "invalid method": raw_request(b"GE\x01T /health HTTP/1.1"),
    "unknown method": raw_request(b"FETCH /messages HTTP/1.1"),
    "invalid version": raw_request(b"GET /health HTTP/9.9"),
    "invalid header name": raw_request(b"GET /health HTTP/1.1", b"Bad Header: y"),
    "header line too long": raw_request(b"GET /health HTTP/1.1", b"X: " + b"a" * 9000),
    "non-ASCII path": raw_request("GET /mé HTTP/1.1".encode()),
    "invalid Content-Length": raw_request(POST, b"Content-Length: abc"),
    "Content-Length with chunked": raw_request(POST, b"Content-Length: 5", CHUNKED_HEADER, body=b"0\r\n\r\n"),
    "invalid chunk size": raw_request(POST, CHUNKED_HEADER, body=b"zz\r\nabc\r\n0\r\n\r\n"),
    "unsupported Content-Encoding": raw_request(POST, b"Content-Encoding: br", LENGTH_15, body=ONE),
    "repeated Content-Type": raw_request(POST, b"Content-Type: a/b", b"Content-Type: c/d", LENGTH_15, body=ONE),
    "bytes after the body": raw_request(POST, LENGTH_15, body=ONE + b"}junk"),
    "data after Connection: close": raw_request(POST, b"Connection: close", LENGTH_15, body=ONE + b"junk"),
    "unknown Expect": raw_request(POST, b"Expect: magic", LENGTH_15, body=ONE),
}


@pytest.mark.parametrize("raw", list(MALFORMED_HTTP.values()), ids=list(MALFORMED_HTTP))
def test_malformed_http_gets_a_json_error(target: Target, raw: bytes) -> None:
    """SPEC: "Every error answer of every node ... has a JSON body", these too. (aiohttp answers the requests
    its HTTP parser refuses, and an Expect it does not know, by itself, before any middleware runs.)"""
    answer = exchange(target.port, raw)
    assert answer is not None
    assert_json_error(answer)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_corrupt_compressed_body_is_a_400(target: Target, encoding: str) -> None:
    """A body whose Content-Encoding does not decode is bad input: a JSON 400, not a 500. (aiohttp raises
    web.RequestPayloadError from request.read(); nothing turns it into a 400.)"""
    before = target.seq()
    headers = [*JSON, ("Content-Encoding", encoding)]
    answer = exchange(target.port, request_bytes("POST", "/messages", b"this is not " + encoding.encode(), headers))
    assert answer is not None and target.seq() == before
    assert_json_error(answer, 400)
