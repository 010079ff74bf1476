"""Unit tests for replog.protocol: every refusal of the client and replication APIs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from replog import jsoncodec, protocol
from replog.protocol import ApiError, parse_query_int, parse_replicate, parse_write, resolve_w

NODES = 3
MAX = 16  # max_message_bytes in these tests


def write(body: bytes | str | object, **kw):
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    args = {"nodes": NODES, "default_w": "majority", "default_timeout": None, "max_message_bytes": MAX}
    args.update(kw)
    return parse_write(body, **args)


def refused(call, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kw)
    err = info.value
    assert err.code and isinstance(err.code, str)
    assert err.detail and isinstance(err.detail, str)
    assert err.body()["error"] == err.code and err.body()["detail"] == err.detail
    return err


def stdlib_codec():
    """replog.jsoncodec as loaded where the orjson wheel is missing."""
    spec = importlib.util.spec_from_file_location("replog_jsoncodec_stdlib", jsoncodec.__file__)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("orjson")
    sys.modules["orjson"] = None  # makes `import orjson` raise ImportError
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["orjson"]
        else:
            sys.modules["orjson"] = saved
    assert module.orjson is None
    return module


@pytest.fixture(params=["orjson", "stdlib"])
def codec(request, monkeypatch):
    """Run a test with each JSON decoder the node may use; they differ on NaN and lone surrogates."""
    if request.param == "stdlib":
        module = stdlib_codec()
        monkeypatch.setattr(protocol.jsoncodec, "loads", module.loads)
        monkeypatch.setattr(protocol.jsoncodec, "DecodeError", module.DecodeError)
    return request.param


# --- POST /messages: accepted --------------------------------------------------


def test_minimal_write_takes_the_defaults(codec):
    req = write({"message": "hi"}, default_w="majority", default_timeout=None)
    assert req.texts == ("hi",)
    assert req.batch is False
    assert req.w == 2
    assert req.id is None
    assert req.timeout is None


def test_full_write(codec):
    req = write({"message": "hi", "w": 3, "id": "k1", "timeout": 1.5})
    assert (req.texts, req.batch, req.w, req.id, req.timeout) == (("hi",), False, 3, "k1", 1.5)


@pytest.mark.parametrize(
    ("body", "default_timeout", "timeout"),
    [
        ({"message": "x"}, 7.0, 7.0),
        ({"message": "x", "timeout": None}, 7.0, 7.0),  # null means "the default"
        ({"message": "x", "timeout": 2}, 7.0, 2.0),
        ({"message": "x", "timeout": 0.001}, None, 0.001),
        ({"message": "x", "timeout": 1e12}, None, None),  # past any useful wait: no limit
    ],
)
def test_timeout_values(codec, body, default_timeout, timeout):
    assert write(body, default_timeout=default_timeout).timeout == timeout


@pytest.mark.parametrize(("default_w", "w"), [("majority", 2), ("all", 3), (1, 1), (3, 3)])
def test_default_w_is_resolved(codec, default_w, w):
    assert write({"message": "x"}, default_w=default_w).w == w


def test_batch_write(codec):
    req = write({"messages": ["a", "b", "c"], "w": "all", "id": "batch-1"})
    assert (req.texts, req.batch, req.w, req.id) == (("a", "b", "c"), True, 3, "batch-1")


def test_empty_message_text_is_a_message(codec):
    assert write({"message": ""}).texts == ("",)


def test_message_of_exactly_the_cap_is_accepted(codec):
    assert write({"message": "x" * MAX}).texts == ("x" * MAX,)
    err = refused(write, {"message": "x" * (MAX + 1)})
    assert err.status == 413


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("é" * 8, True),  # 8 chars, 16 bytes: exactly the cap
        ("é" * 9, False),  # 9 chars, 18 bytes
        ("€" * 5, True),  # 15 bytes
        ("€" * 6, False),  # 6 chars, 18 bytes: under the cap in chars, over it in bytes
        ("😀" * 4, True),  # 16 bytes
        ("😀" * 5, False),  # 5 chars, 20 bytes
        ("a" * 15 + "é", False),  # 16 chars, 17 bytes
    ],
)
def test_size_is_counted_in_utf8_bytes(codec, text, accepted):
    body = json.dumps({"message": text}, ensure_ascii=False).encode()
    if accepted:
        assert write(body).texts == (text,)
    else:
        err = refused(write, body)
        assert (err.status, err.code) == (413, "message_too_large")


def test_escaped_non_ascii_is_counted_decoded(codec):
    # "\u00e9" on the wire is one two-byte character, not six bytes
    assert write(b'{"message": "' + b"\\u00e9" * 8 + b'"}').texts == ("é" * 8,)
    # a surrogate pair escape is one four-byte character
    assert write(b'{"message": "\\ud83d\\ude00"}').texts == ("😀",)


def test_oversized_item_of_a_batch_is_413(codec):
    err = refused(write, {"messages": ["ok", "x" * (MAX + 1), "ok"]})
    assert (err.status, err.code) == (413, "message_too_large")


# --- POST /messages: refused -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # body not JSON
        (b"", "invalid_json"),
        (b"not json", "invalid_json"),
        (b'{"message": "x"', "invalid_json"),
        (b'{"message": "x"} trailing', "invalid_json"),
        # not an object
        (b'"just a string"', "invalid_body"),
        (b'["message", "x"]', "invalid_body"),
        (b"42", "invalid_body"),
        (b"null", "invalid_body"),
        # message missing or not a string
        (b"{}", "missing_message"),
        (b'{"text": "x"}', "missing_message"),
        (b'{"message": null}', "invalid_message"),
        (b'{"message": 5}', "invalid_message"),
        (b'{"message": ["x"]}', "invalid_message"),
        (b'{"message": {"text": "x"}}', "invalid_message"),
        (b'{"message": true}', "invalid_message"),
        # both message and messages
        (b'{"message": "x", "messages": ["y"]}', "invalid_body"),
        # messages not a non-empty list of strings
        (b'{"messages": []}', "empty_batch"),
        (b'{"messages": "abc"}', "invalid_messages"),
        (b'{"messages": null}', "invalid_messages"),
        (b'{"messages": ["a", 2, "c"]}', "invalid_message"),
        (b'{"messages": ["a", null]}', "invalid_message"),
        # w not 1..N+1 (N=2 secondaries here), "majority" or "all"
        (b'{"message": "x", "w": 0}', "invalid_w"),
        (b'{"message": "x", "w": -1}', "invalid_w"),
        (b'{"message": "x", "w": 4}', "invalid_w"),
        (b'{"message": "x", "w": 1000000000000000000000}', "invalid_w"),
        (b'{"message": "x", "w": true}', "invalid_w"),
        (b'{"message": "x", "w": false}', "invalid_w"),
        (b'{"message": "x", "w": 2.0}', "invalid_w"),
        (b'{"message": "x", "w": 1.5}', "invalid_w"),
        (b'{"message": "x", "w": "2"}', "invalid_w"),
        (b'{"message": "x", "w": "Majority"}', "invalid_w"),
        (b'{"message": "x", "w": "any"}', "invalid_w"),
        (b'{"message": "x", "w": ""}', "invalid_w"),
        (b'{"message": "x", "w": ["all"]}', "invalid_w"),
        # timeout not a positive number
        (b'{"message": "x", "timeout": 0}', "invalid_timeout"),
        (b'{"message": "x", "timeout": 0.0}', "invalid_timeout"),
        (b'{"message": "x", "timeout": -1}', "invalid_timeout"),
        (b'{"message": "x", "timeout": -0.5}', "invalid_timeout"),
        (b'{"message": "x", "timeout": true}', "invalid_timeout"),
        (b'{"message": "x", "timeout": "5"}', "invalid_timeout"),
        (b'{"message": "x", "timeout": [5]}', "invalid_timeout"),
        # id not a non-empty string
        (b'{"message": "x", "id": ""}', "invalid_id"),
        (b'{"message": "x", "id": 5}', "invalid_id"),
        (b'{"message": "x", "id": true}', "invalid_id"),
        (b'{"message": "x", "id": ["k"]}', "invalid_id"),
        (b'{"messages": ["x"], "id": {}}', "invalid_id"),
        # invalid UTF-8
        (b'{"message": "\xff"}', "invalid_utf8"),
        (b'{"message": "\xc3"}', "invalid_utf8"),  # truncated two-byte sequence
        (b'{"message": "\xed\xa0\x80"}', "invalid_utf8"),  # a surrogate encoded as UTF-8
        (b'{"message": "\xc0\xaf"}', "invalid_utf8"),  # overlong encoding
        (b'{"message": "ok", "id": "\xfe"}', "invalid_utf8"),
    ],
)
def test_bad_write_is_400(codec, body, code):
    err = refused(write, body)
    assert (err.status, err.code) == (400, code)


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "\\ud800"}',  # a lone high surrogate, as json.dumps writes it
        b'{"message": "a\\udc00b"}',  # a lone low surrogate
        b'{"message": "\\ude00\\ud83d"}',  # a pair in the wrong order
        b'{"messages": ["fine", "\\ud800"]}',
        b'{"message": "x", "id": "\\ud800"}',
    ],
)
def test_lone_surrogate_escape_is_400(codec, body):
    # orjson refuses it while parsing; the stdlib parser accepts it and the size check refuses it
    err = refused(write, body)
    assert (err.status, err.code) == (400, "invalid_utf8")


@pytest.mark.parametrize(
    "body", [b'{"message": "x", "timeout": NaN}', b'{"message": "x", "timeout": -Infinity}']
)
def test_nan_timeout_is_400(codec, body):
    # orjson refuses the literal outright; the stdlib parser yields a float the check must refuse
    err = refused(write, body)
    assert err.status == 400
    assert err.code in {"invalid_json", "invalid_timeout"}
    if codec == "stdlib":
        assert err.code == "invalid_timeout"


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "x", "w": 5, "timeout": 0}',
        b'{"message": "x", "w": "all", "timeout": -1}',
        b'{"message": "x", "w": 2, "id": ""}',
    ],
)
def test_one_bad_field_is_enough(codec, body):
    assert refused(write, body).status == 400


def test_w_checked_against_this_cluster_size(codec):
    assert write({"message": "x", "w": 5}, nodes=5).w == 5
    assert refused(write, {"message": "x", "w": 5}, nodes=4).code == "invalid_w"


# --- resolve_w -------------------------------------------------------------------


@pytest.mark.parametrize(("nodes", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority_and_all(nodes, majority):
    assert resolve_w("majority", nodes) == majority
    assert resolve_w("all", nodes) == nodes
    # a majority of nodes overlaps every other majority
    assert 2 * majority > nodes


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5])
def test_every_integer_in_range_resolves_to_itself(nodes):
    for w in range(1, nodes + 1):
        assert resolve_w(w, nodes) == w
    for w in (0, nodes + 1):
        assert refused(resolve_w, w, nodes).status == 400


@pytest.mark.parametrize("value", [None, True, False, 1.0, "1", "ALL", "majority ", [], {}])
def test_resolve_w_refuses_non_integers(value):
    err = refused(resolve_w, value, 3)
    assert (err.status, err.code) == (400, "invalid_w")


# --- query ints --------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("5", 5), ("007", 7), ("123456789012345678", 123456789012345678)])
def test_query_int_accepted(raw, value):
    assert parse_query_int({"since": raw}, "since") == value


def test_query_int_absent_is_none():
    assert parse_query_int({}, "limit") is None
    assert parse_query_int({"since": "3"}, "limit") is None


@pytest.mark.parametrize(
    "raw",
    ["", "-1", "+1", "1.5", "1e3", "abc", " 5", "5 ", "0x10", "٣", "²", "1234567890123456789"],
)
@pytest.mark.parametrize("name", ["since", "limit"])
def test_query_int_refused(raw, name):
    err = refused(parse_query_int, {name: raw}, name)
    assert (err.status, err.code) == (400, f"invalid_{name}")


# --- replication -------------------------------------------------------------------


def rep(obj) -> bytes:
    return json.dumps(obj).encode()


def test_replicate_accepted(codec):
    req = parse_replicate(rep({"log": "L1", "entries": [[1, None, "a"], [2, "k", "b"], [7, None, ""]]}))
    assert req.log_id == "L1"
    assert req.entries == [(1, None, "a"), (2, "k", "b"), (7, None, "")]


def test_replicate_empty_entries_is_a_probe(codec):
    assert parse_replicate(rep({"log": "L1", "entries": []})).entries == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (rep([1, 2]), "invalid_body"),
        (rep("x"), "invalid_body"),
        # the log identity
        (rep({"entries": []}), "invalid_log"),
        (rep({"log": "", "entries": []}), "invalid_log"),
        (rep({"log": 5, "entries": []}), "invalid_log"),
        (rep({"log": None, "entries": []}), "invalid_log"),
        # entries not a list
        (rep({"log": "L"}), "invalid_entries"),
        (rep({"log": "L", "entries": None}), "invalid_entries"),
        (rep({"log": "L", "entries": {"1": "a"}}), "invalid_entries"),
        (rep({"log": "L", "entries": "abc"}), "invalid_entries"),
        # wrong arity or shape
        (rep({"log": "L", "entries": [[1, None]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[1, None, "a", "extra"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [{"seq": 1, "id": None, "text": "a"}]}), "invalid_entries"),
        (rep({"log": "L", "entries": ["1,,a"]}), "invalid_entries"),
        # seq not a positive integer
        (rep({"log": "L", "entries": [[0, None, "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[-1, None, "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[True, None, "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[1.0, None, "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [["1", None, "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[None, None, "a"]]}), "invalid_entries"),
        # id not a non-empty string or null
        (rep({"log": "L", "entries": [[1, "", "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[1, 5, "a"]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[1, False, "a"]]}), "invalid_entries"),
        # text not a string
        (rep({"log": "L", "entries": [[1, None, 5]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[1, None, None]]}), "invalid_entries"),
        (rep({"log": "L", "entries": [[1, None, ["a"]]]}), "invalid_entries"),
        # one bad entry among good ones
        (rep({"log": "L", "entries": [[1, None, "a"], [2, None, 2], [3, None, "c"]]}), "invalid_entries"),
        # not valid Unicode
        (b'{"log": "L", "entries": [[1, null, "\xff"]]}', "invalid_utf8"),
        (b'{"log": "L", "entries": [[1, null, "\\ud800"]]}', "invalid_utf8"),
        (b'{"log": "L", "entries": [[1, "\\udfff", "a"]]}', "invalid_utf8"),
    ],
)
def test_replicate_refused(codec, body, code):
    err = refused(parse_replicate, body)
    assert (err.status, err.code) == (400, code)


# --- error shape ---------------------------------------------------------------------


def test_api_error_body_carries_extra_fields():
    err = ApiError(504, "write_concern_timeout", "the timeout passed first", seq=3, acks=2)
    assert err.status == 504
    assert err.body() == {"error": "write_concern_timeout", "detail": "the timeout passed first", "seq": 3, "acks": 2}
    assert str(err) == "the timeout passed first"


@pytest.mark.parametrize("prev", [[1], [1, 2, 3], [-1, 0], [1, -5], [1, 1 << 32], ["1", 2], [True, 0], {"seq": 1}])
def test_parse_replicate_rejects_a_malformed_prev(prev):
    body = json.dumps({"log": "L", "prev": prev, "entries": [[1, None, "a"]]}).encode()
    with pytest.raises(ApiError) as info:
        parse_replicate(body)
    assert info.value.status == 400 and info.value.code == "invalid_prev"


def test_parse_replicate_takes_prev_as_seq_and_checksum():
    body = json.dumps({"log": "L", "prev": [4, 123], "entries": []}).encode()
    assert parse_replicate(body).prev == (4, 123)
    assert parse_replicate(json.dumps({"log": "L", "entries": []}).encode()).prev is None
