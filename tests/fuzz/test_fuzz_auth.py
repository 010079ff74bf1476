"""Fuzzing the Authorization header of a real secondary that has a cluster key and a token file.

Whatever the header holds (random bytes, any scheme, prefixes and extensions of the key or a token, the key
with whitespace inside or in front, another case): the answer is a JSON 401 or 403 (or the HTTP parser's
400 for bytes a header may not hold), never a 5xx, and never an accepted request: the replication request
under fuzz would be stored with the key, and the secondary's log never moves.

Trailing whitespace is not fuzzed: HTTP strips it from every header value before any handler sees it, so
"Bearer KEY " is the key itself on the wire.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from httpfuzz import assert_json_error, encode, exchange, fuzz, request_bytes
from replog.log import GENESIS, chain
from replog.protocol import EPOCH_HEADER, MASTER_HEADER
from replog.tools.cluster import Node, free_port, http_json

KEY = secrets.token_hex(32)
WRITER = secrets.token_hex(16)
READER = secrets.token_hex(16)
LOG = "a11c" * 8
FENCE = [(EPOCH_HEADER, "1"), (MASTER_HEADER, "m1"), ("Content-Type", "application/json")]
# One entry at seq 1: stored by any request the secondary accepted.
BODY = encode(
    {"log": LOG, "prev": [0, GENESIS.hex()], "entries": [[1, "x", "x", 0, chain(GENESIS, "x", "x", 0).hex()]]}, True
)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("fuzz-auth")
    (workdir / "key").write_text(KEY)
    (workdir / "tokens").write_text(f"write {WRITER}\nread {READER}\n")
    args = ["--cluster-key-file", str(workdir / "key"), "--token-file", str(workdir / "tokens")]
    node = Node("secondary", free_port(), args, workdir / "secondary.log", token=KEY)
    try:
        node.start()
        yield node
    finally:
        node.stop()


def variants(secret: str) -> st.SearchStrategy[str]:
    """Credentials near secret: a proper prefix, the secret with more after it, with whitespace inside or in
    front, another case, or any text."""
    ws = st.sampled_from([" ", "\t", "  ", " \t"])
    return st.one_of(
        st.integers(0, len(secret) - 1).map(lambda i: secret[:i]),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1).map(lambda t: secret + t),
        st.tuples(st.integers(1, len(secret) - 1), ws).map(lambda p: secret[: p[0]] + p[1] + secret[p[0] :]),
        ws.map(lambda w: w + secret),
        st.just(secret.upper()),
        st.text(max_size=80),
    )


SCHEMES = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer:", "", "Bearer\t"])
HEADER_BYTES = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def header_values() -> st.SearchStrategy[bytes]:
    near = st.one_of(variants(KEY), variants(WRITER), variants(READER))
    spelled = st.tuples(SCHEMES, st.sampled_from([" ", "", "  "]), near).map(lambda t: "".join(t))
    return st.one_of(spelled.map(lambda s: s.encode("utf-8", "surrogatepass")), HEADER_BYTES)


def is_the_key(value: bytes) -> bool:
    """What the node would rightly accept: a Bearer scheme and exactly a secret, after HTTP's own OWS strip."""
    text = value.strip(b" \t").decode("latin-1")
    scheme, _, credential = text.partition(" ")
    return scheme.lower() == "bearer" and credential in (KEY, WRITER, READER)


@fuzz(300)
@given(value=header_values(), path=st.sampled_from(["/replicate", "/promise", "/entries", "/messages", "/health?at=1"]))
def test_no_authorization_header_gets_past_or_breaks_the_guard(guarded: Node, value: bytes, path: str) -> None:
    assume(not is_the_key(value))
    method = "POST" if path in ("/replicate", "/promise") else "GET"
    body = BODY if path == "/replicate" else b""
    headers: list[tuple[str | bytes, str | bytes]] = [*FENCE, (b"Authorization", value)]
    answer = exchange(guarded.port, request_bytes(method, path, body, headers))
    assert answer is not None
    error = assert_json_error(answer, 400, 401, 403)
    if answer.status == 400:
        assert error["error"] == "bad_request", answer  # the HTTP parser's refusal, before any handler
    else:
        assert error["error"] == ("unauthorized" if answer.status == 401 else "forbidden"), answer


def test_the_secondary_stored_nothing_and_the_key_still_works(guarded: Node) -> None:
    """Run after the fuzz (module order): nothing was stored; the key itself is accepted (the fuzz's
    refusals were the guard's)."""
    status, health = http_json("GET", guarded.url + "/health", token=KEY)
    assert status == 200 and health["seq"] == 0 and health["promised"] == 0 and health["log"] is None, health
    answer = exchange(
        guarded.port, request_bytes("POST", "/replicate", BODY, [*FENCE, ("Authorization", f"Bearer {KEY}")])
    )
    assert answer is not None and answer.status == 200, answer
    assert KEY not in guarded.log_path.read_text()
