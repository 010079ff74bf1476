"""What the fuzz tests share: a raw HTTP/1.1 client, strict checks of an answer, and strategies.

The client writes exact bytes (so requests can be malformed, slow or cut short) and reads the
first answer with a deadline: a node that does not answer in time is a hang, a test failure.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from replog.tools.cluster import Node, http_json

HOST = "127.0.0.1"
ANSWER_TIMEOUT = 10.0  # seconds: a node under fuzz that takes longer than this is hung
HEALTH_TIMEOUT = 3.0  # seconds: "still answers GET /health promptly", on a busy 2-core machine

# Reproducible in CI: the same examples on every run, no example database between runs.
# On a failure hypothesis prints the falsifying example (and, with print_blob, how to replay it).
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn in proportion to its weight. (st.one_of would treat a strategy given
    twice as one: repeating it does not weigh it.)"""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


def note(event: str) -> None:
    """Count an outcome in hypothesis's statistics (--hypothesis-show-statistics); a no-op outside a fuzz test."""
    if currently_in_test_context():
        hypothesis_event(event)


def fuzz(max_examples: int) -> settings:
    """The fuzz settings with this many examples per test."""
    return settings(FUZZ, max_examples=max_examples)


class Hang(AssertionError):
    """The node accepted a connection but did not answer within the deadline."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.content_type or '(no content type)'} {self.body[:300]!r}"


def request_bytes(
    method: str | bytes,
    target: str | bytes,
    body: bytes = b"",
    headers: Sequence[tuple[str | bytes, str | bytes]] = (),
    *,
    content_length: bool = True,
    close: bool = True,
) -> bytes:
    """One HTTP/1.1 request, byte for byte: Host, then headers, then Content-Length (unless told not to)."""

    def b(x: str | bytes) -> bytes:
        return x if isinstance(x, bytes) else x.encode("latin-1")

    lines = [b(method) + b" " + b(target) + b" HTTP/1.1", b"Host: " + HOST.encode()]
    lines += [b(k) + b": " + b(v) for k, v in headers]
    if content_length:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _parse(buf: bytes, head: bool, eof: bool) -> Answer | None:
    """The first final answer in buf, or None if it is not complete yet (1xx answers are skipped)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = buf[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise AssertionError(f"not an HTTP answer: {buf[:200]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        rest = buf[end + 4 :]
        if 100 <= status < 200:
            buf = rest
            continue
        if head or status in (204, 304):
            return Answer(status, headers, b"")
        if "content-length" in headers:
            n = int(headers["content-length"])
            return Answer(status, headers, rest[:n]) if len(rest) >= n else None
        return Answer(status, headers, rest) if eof else None


def exchange(
    port: int,
    chunks: bytes | Iterable[bytes],
    *,
    pause: float = 0.0,
    shutdown_write: bool = False,
    wait: float | None = None,
    timeout: float = ANSWER_TIMEOUT,
    head: bool = False,
) -> Answer | None:
    """Send chunks (pausing between them) and read the first answer.

    wait=None: the node must answer within timeout (else Hang); None if it closed without answering.
    wait=S: give up after S seconds and close the connection: the answer if one came, else None.
    shutdown_write: half-close after the last chunk, as a client that stops sending mid-request.
    """
    if isinstance(chunks, bytes):
        chunks = [chunks]
    sock = socket.create_connection((HOST, port), timeout=timeout)
    buf = b""
    try:
        try:
            for i, chunk in enumerate(chunks):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(chunk)
            if shutdown_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node answered early (a 413, a parse error) and closed; read what it said
        deadline = time.monotonic() + (timeout if wait is None else wait)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if wait is None:
                    raise Hang(f"no complete answer within {timeout}s (got {buf[:200]!r})")
                return _parse(buf, head, eof=False)
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                return _parse(buf, head, eof=True)
            buf += data
            answer = _parse(buf, head, eof=False)
            if answer is not None:
                return answer
    finally:
        sock.close()


# -- checks ----------------------------------------------------------------------------


def assert_json_error(answer: Answer, *statuses: int) -> dict[str, Any]:
    """A 4xx (one of statuses, if given) with a JSON body {"error": code, "detail": sentence}."""
    assert 400 <= answer.status < 500, f"expected a 4xx, got {answer}"
    if statuses:
        assert answer.status in statuses, f"expected one of {statuses}, got {answer}"
    assert answer.content_type == "application/json", f"an error answer must be JSON: {answer}"
    body = answer.json()
    assert isinstance(body, dict), f"an error body must be an object: {answer}"
    assert isinstance(body.get("error"), str) and body["error"], f"no error code: {answer}"
    assert isinstance(body.get("detail"), str) and body["detail"], f"no detail: {answer}"
    return body


def assert_json_ok(answer: Answer, *statuses: int) -> Any:
    assert answer.status in statuses, f"expected one of {statuses}, got {answer}"
    assert answer.content_type == "application/json", f"answer is not JSON: {answer}"
    return answer.json()


def health_promptly(node: Node) -> dict[str, Any]:
    """The node's /health, which must come within HEALTH_TIMEOUT; the process must still run."""
    assert node.running, f"the {node.role} exited with {node.proc.returncode if node.proc else None}:\n{node.tail()}"
    started = time.monotonic()
    try:
        status, body = http_json("GET", node.url + "/health", timeout=HEALTH_TIMEOUT)
    except OSError as exc:
        raise AssertionError(f"the {node.role} does not answer GET /health: {exc}\n{node.tail()}") from None
    assert status == 200, f"GET /health answered {status}: {body}"
    assert time.monotonic() - started < HEALTH_TIMEOUT
    return body


def assert_messages_page(answer: Answer, since: int, limit: int | None, last: int) -> list[dict[str, Any]]:
    """A 200 {"messages": [...]} holding exactly seqs since+1 .. min(last, since+limit), in order."""
    body = assert_json_ok(answer, 200)
    assert isinstance(body, dict) and isinstance(body.get("messages"), list), answer
    want_last = last if limit is None else min(last, since + limit)
    seqs = [m["seq"] for m in body["messages"]]
    assert seqs == list(range(since + 1, want_last + 1)), f"since={since} limit={limit} last={last}: seqs {seqs[:20]}"
    for m in body["messages"]:
        assert isinstance(m.get("id"), str) and m["id"] and isinstance(m.get("text"), str), m
    return body["messages"]


# -- strategies ------------------------------------------------------------------------

# Text that JSON and UTF-8 can carry, and text with lone surrogates that they cannot.
texts = st.text(max_size=40)


def _lone_surrogates_only(s: str) -> bool:
    """Holds a surrogate, and no high one followed by a low one (a pair that a \\u escape would make valid)."""
    pairs = any(0xD800 <= ord(a) < 0xDC00 and 0xDC00 <= ord(b) <= 0xDFFF for a, b in zip(s, s[1:], strict=False))
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s) and not pairs


surrogate_texts = st.text(st.characters(codec=None, categories=["Cs", "Lu", "Nd"]), min_size=1, max_size=8).filter(
    _lone_surrogates_only
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson reads those as floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4), max_leaves=12
)


def not_json(value: Any) -> bool:
    """True if value cannot travel as strict JSON in UTF-8: a NaN or infinity, or a lone surrogate (keys too)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return True
        if isinstance(v, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            return True
        if isinstance(v, list):
            stack += v
        elif isinstance(v, dict):
            stack += list(v.keys()) + list(v.values())
    return False


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in value (a scalar: 0, [] or [1]: 1)."""
    depth, level = 0, [value]
    while True:
        containers = [v for v in level if isinstance(v, (list, dict))]
        if not containers:
            return depth
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]


def nested(depth: int, leaf: Any = 1) -> Any:
    """A value nested depth levels deep in lists and objects, alternately."""
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


deep_values = st.builds(nested, st.sampled_from([100, 500, 1000, 1023, 1024, 1025, 1100, 1500]), json_scalars)


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON bytes as a client might send them; NaN and Infinity come out as the invalid tokens they are,
    lone surrogates as invalid UTF-8 (ascii_only=False) or as \\ud800 escapes (ascii_only=True)."""
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


def invalid_utf8_bodies(prefix: bytes, suffix: bytes) -> st.SearchStrategy[bytes]:
    """prefix + text holding bytes that are not UTF-8 + suffix, e.g. {"message":"<bad>"}."""
    # a stray byte, a truncated sequence, an encoded surrogate, past U+10FFFF, an overlong "/", a lone continuation
    bad = st.sampled_from(
        [b"\xff", b"\xfe\xfe", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf5\x80\x80\x80"]
        + [b"\xc0\xaf", b"\x80"]
    )
    ok = st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=5).map(lambda s: s.encode())
    return st.tuples(ok, bad, ok).map(lambda t: prefix + b"".join(t) + suffix)


# Query strings for GET /messages: (key, value) pairs, repeated keys included, percent-encoded.
query_values = (
    st.integers(0, 2000).map(str)
    | st.integers(-5, 10**20).map(str)
    | st.sampled_from(["", "0", "00", "007", "1e3", "1.0", " 1", "1 ", "+1", "-0", "0x10", "nan", "null", "[1]"])
    | st.sampled_from(["١٢", "１", "²", "999999999999999999", "9" * 19])  # digits, but not ASCII; 18 and 19 digits
    | st.text(max_size=6)
)
query_keys = st.sampled_from(["since", "limit", "Since", "LIMIT", "x", "", "since[]"])
query_pairs = st.lists(st.tuples(query_keys, query_values), max_size=4)


def encode_query(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


raw_query_strings = st.text(
    st.characters(codec="ascii", min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=30
)


def first_value(pairs: Sequence[tuple[str, str]], key: str) -> str | None:
    for k, v in pairs:
        if k == key:
            return v
    return None


def query_int(raw: str | None) -> int | None | str:
    """How the spec reads ?since= / ?limit=: None if absent, an int, or "bad" (a 400)."""
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return "bad"


# Methods the HTTP parser knows (an unknown one is refused by the parser itself: see the malformed tests).
methods = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
    + ["PROPFIND", "SEARCH", "PURGE", "QUERY", "LOCK", "REPORT", "M-SEARCH", "NOTIFY"]
)
path_segments = st.sampled_from(
    ["messages", "health", "replicate", "entries", "", ".", "..", "%2e%2e", "messages%2F", "MESSAGES", "favicon.ico"]
) | st.text(max_size=8).map(lambda s: quote(s, safe=""))
paths = st.lists(path_segments, min_size=1, max_size=3).map(lambda segs: "/" + "/".join(segs))
