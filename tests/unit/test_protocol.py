"""Unit tests for replog.protocol: every refusal of the client and replication APIs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from multidict import CIMultiDict

from replog import jsoncodec, protocol
from replog.log import BATCH, BATCH_MORE, GENESIS, Log, chain
from replog.protocol import (
    EPOCH_HEADER,
    MASTER_HEADER,
    ApiError,
    Fence,
    parse_fence,
    parse_query_int,
    parse_replicate,
    parse_write,
    resolve_w,
)

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


@pytest.mark.parametrize("body", [b'{"message": "x", "timeout": NaN}', b'{"message": "x", "timeout": -Infinity}'])
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


@pytest.mark.parametrize("value", [None, True, False, 1.5, 4.0, 1e300, "1", "ALL", "majority ", [], {}])
def test_resolve_w_refuses_non_integers(value):
    err = refused(resolve_w, value, 3)
    assert (err.status, err.code) == (400, "invalid_w")


def test_resolve_w_takes_a_number_without_fraction_as_the_integer():
    """JSON has one number type: 2.0 is 2, as JSON Schema (and the OpenAPI description) says."""
    assert resolve_w(2.0, 3) == 2
    assert type(resolve_w(2.0, 3)) is int


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

H1 = chain(GENESIS, None, "a", 0)
H2 = chain(H1, "k:0", "b", BATCH | BATCH_MORE)
H3 = chain(H2, "k:1", "c", BATCH)
ZERO = GENESIS.hex()
H1_HEX = H1.hex()


def rep(obj) -> bytes:
    return json.dumps(obj).encode()


def entries_body(*entries, prev=(0, ZERO)) -> bytes:
    """A replication body of the given wire entries, after prev."""
    return rep({"log": "L", "prev": list(prev), "entries": list(entries)})


def one(seq=1, id_=None, text="a", flags=0, h=H1_HEX) -> bytes:
    """A replication body of one entry, each field replaceable by a malformed one."""
    return entries_body([seq, id_, text, flags, h])


def raw_one(text: bytes, id_: bytes = b"null") -> bytes:
    """A replication body of one entry whose id and text are given as raw JSON bytes."""
    return b'{"log": "L", "prev": [0, "%s"], "entries": [[1, %s, %s, 0, "%s"]]}' % (
        ZERO.encode(),
        id_,
        text,
        H1_HEX.encode(),
    )


def test_replicate_accepted(codec):
    body = rep(
        {
            "log": "L1",
            "prev": [0, ZERO],
            "entries": [[1, None, "a", 0, H1.hex()], [2, "k:0", "b", 3, H2.hex()], [3, "k:1", "c", 1, H3.hex()]],
        }
    )
    req = parse_replicate(body)
    assert req.log_id == "L1"
    assert req.prev == (0, GENESIS)
    assert req.entries == [(1, None, "a", 0, H1), (2, "k:0", "b", 3, H2), (3, "k:1", "c", 1, H3)]


def test_replicate_takes_what_log_wire_sends():
    log = Log("L1")
    log.append("a")
    log.extend([("k:0", "b", BATCH | BATCH_MORE), ("k:1", "c", BATCH), (None, "", 0)])
    body = rep({"log": "L1", "prev": [1, log.hash(1).hex()], "entries": log.wire(2, 4)})
    req = parse_replicate(body)
    assert req.prev == (1, log.hash(1))
    assert req.entries == [(seq, *log.item(seq), log.hash(seq)) for seq in (2, 3, 4)]


def test_replicate_empty_entries_is_a_probe(codec):
    req = parse_replicate(rep({"log": "L1", "prev": [7, H1.hex()], "entries": []}))
    assert (req.entries, req.prev) == ([], (7, H1))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (rep([1, 2]), "invalid_body"),
        (rep("x"), "invalid_body"),
        # the log identity
        (rep({"prev": [0, ZERO], "entries": []}), "invalid_log"),
        (rep({"log": "", "prev": [0, ZERO], "entries": []}), "invalid_log"),
        (rep({"log": 5, "prev": [0, ZERO], "entries": []}), "invalid_log"),
        (rep({"log": None, "prev": [0, ZERO], "entries": []}), "invalid_log"),
        # entries not a list
        (rep({"log": "L", "prev": [0, ZERO]}), "invalid_entries"),
        (rep({"log": "L", "prev": [0, ZERO], "entries": None}), "invalid_entries"),
        (rep({"log": "L", "prev": [0, ZERO], "entries": {"1": "a"}}), "invalid_entries"),
        (rep({"log": "L", "prev": [0, ZERO], "entries": "abc"}), "invalid_entries"),
        # wrong arity or shape (the old three-field wire is refused)
        (entries_body([1, None, "a"]), "invalid_entries"),
        (entries_body([1, None, "a", 0]), "invalid_entries"),
        (entries_body([1, None, "a", 0, H1.hex(), "extra"]), "invalid_entries"),
        (entries_body([]), "invalid_entries"),
        (entries_body({"seq": 1, "id": None, "text": "a", "flags": 0, "hash": H1.hex()}), "invalid_entries"),
        (entries_body("1,,a,0,00"), "invalid_entries"),
        # seq not a positive integer
        (one(seq=0), "invalid_entries"),
        (one(seq=-1), "invalid_entries"),
        (one(seq=True), "invalid_entries"),
        (one(seq=1.0), "invalid_entries"),
        (one(seq="1"), "invalid_entries"),
        (one(seq=None), "invalid_entries"),
        (one(seq=1 << 62), "invalid_entries"),
        # id not a non-empty string or null
        (one(id_=""), "invalid_entries"),
        (one(id_=5), "invalid_entries"),
        (one(id_=False), "invalid_entries"),
        # text not a string
        (one(text=5), "invalid_entries"),
        (one(text=None), "invalid_entries"),
        (one(text=["a"]), "invalid_entries"),
        # flags: 0 (single), 1 (batch) or 3 (batch, more follow); BATCH_MORE only with BATCH
        (one(flags=2), "invalid_entries"),
        (one(flags=4), "invalid_entries"),
        (one(flags=5), "invalid_entries"),
        (one(flags=7), "invalid_entries"),
        (one(flags=255), "invalid_entries"),
        (one(flags=256), "invalid_entries"),
        (one(flags=-1), "invalid_entries"),
        (one(flags=True), "invalid_entries"),
        (one(flags=1.0), "invalid_entries"),
        (one(flags="1"), "invalid_entries"),
        (one(flags=None), "invalid_entries"),
        # hash: 32 hex digits
        (one(h=H1.hex()[:-2]), "invalid_entries"),  # 15 bytes
        (one(h=H1.hex() + "00"), "invalid_entries"),  # 17 bytes
        (one(h=H1.hex()[:-1]), "invalid_entries"),  # an odd number of digits
        (one(h=""), "invalid_entries"),
        (one(h="zz" * 16), "invalid_entries"),
        (one(h="0x" + "00" * 15), "invalid_entries"),
        (one(h="g" + "0" * 31), "invalid_entries"),
        (one(h=None), "invalid_entries"),
        (one(h=0), "invalid_entries"),
        (one(h=list(H1)), "invalid_entries"),
        # 32 characters, but 11 bytes: bytes.fromhex skips whitespace
        pytest.param(one(h="00 " * 10 + "00"), "invalid_entries", id="hash-of-32-chars-with-spaces"),
        (one(h=" " + H1.hex()[1:]), "invalid_entries"),
        # one bad entry among good ones
        (entries_body([1, None, "a", 0, H1.hex()], [2, None, 2, 0, H2.hex()]), "invalid_entries"),
        (entries_body([1, None, "a", 0, H1.hex()], [2, "k:0", "b", 2, H2.hex()]), "invalid_entries"),
        # not valid Unicode
        (raw_one(b'"\xff"'), "invalid_utf8"),
        (raw_one(b'"\\ud800"'), "invalid_utf8"),
        (raw_one(b'"a"', id_=b'"\\udfff"'), "invalid_utf8"),
        # prev missing
        (rep({"log": "L", "entries": [[1, None, "a", 0, H1.hex()]]}), "invalid_prev"),
        (rep({"log": "L", "prev": None, "entries": []}), "invalid_prev"),
    ],
)
def test_replicate_refused(codec, body, code):
    err = refused(parse_replicate, body)
    assert (err.status, err.code) == (400, code)


@pytest.mark.parametrize(
    "prev",
    [
        [1],
        [1, H1.hex(), 3],
        [-1, ZERO],
        [1, -5],
        [1, 123],  # the old CRC number
        [1, "short"],
        [1, H1.hex()[:-2]],
        [1, "zz" * 16],
        pytest.param([1, "00 " * 10 + "00"], id="hash-of-32-chars-with-spaces"),  # 11 bytes
        [1, None],
        [1 << 62, ZERO],
        ["1", ZERO],
        [True, ZERO],
        [None, ZERO],
        {"seq": 1, "hash": ZERO},
        "0",
        0,
    ],
)
def test_replicate_refuses_a_malformed_prev(codec, prev):
    body = json.dumps({"log": "L", "prev": prev, "entries": [[2, None, "a", 0, H1.hex()]]}).encode()
    err = refused(parse_replicate, body)
    assert (err.status, err.code) == (400, "invalid_prev")


# --- fencing headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fence"),
    [
        ({"Replog-Epoch": "1", "Replog-Master": "m1"}, Fence(1, "m1")),
        ({"Replog-Epoch": "42", "Replog-Master": "http://127.0.0.1:8000"}, Fence(42, "http://127.0.0.1:8000")),
        ({"Replog-Epoch": "007", "Replog-Master": "m"}, Fence(7, "m")),
        ({"Replog-Epoch": "123456789012345678", "Replog-Master": "m"}, Fence(123456789012345678, "m")),
        ({"Replog-Epoch": "3", "Replog-Master": "x" * 200}, Fence(3, "x" * 200)),
    ],
)
@pytest.mark.parametrize("required", [True, False])
def test_parse_fence_accepted(headers, fence, required):
    assert parse_fence(headers, required=required) == fence


def test_fence_headers_round_trip():
    fence = Fence(9, "master-a")
    assert fence.headers() == {EPOCH_HEADER: "9", MASTER_HEADER: "master-a"}
    assert parse_fence(fence.headers(), required=True) == fence


def test_parse_fence_reads_headers_case_insensitively_as_aiohttp_gives_them():
    headers = CIMultiDict({"replog-epoch": "5", "REPLOG-MASTER": "m5"})
    assert parse_fence(headers, required=True) == Fence(5, "m5")


def test_parse_fence_absent_is_none_unless_required():
    assert parse_fence({}, required=False) is None
    assert parse_fence({"Other": "1"}, required=False) is None
    err = refused(parse_fence, {}, required=True)
    assert (err.status, err.code) == (400, "invalid_epoch")


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Replog-Epoch": "0", "Replog-Master": "m"}, "invalid_epoch"),  # epochs start at 1
        ({"Replog-Epoch": "000", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": "-1", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": "+1", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": "1.5", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": "", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": " 1", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": "abc", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Epoch": "٣", "Replog-Master": "m"}, "invalid_epoch"),  # a non-ASCII digit
        ({"Replog-Epoch": "1234567890123456789", "Replog-Master": "m"}, "invalid_epoch"),
        ({"Replog-Master": "m"}, "invalid_epoch"),  # half a fence is no fence, required or not
        ({"Replog-Epoch": "1"}, "invalid_master"),
        ({"Replog-Epoch": "1", "Replog-Master": ""}, "invalid_master"),
        ({"Replog-Epoch": "1", "Replog-Master": "x" * 201}, "invalid_master"),
    ],
)
@pytest.mark.parametrize("required", [True, False])
def test_parse_fence_refused(headers, code, required):
    err = refused(parse_fence, headers, required=required)
    assert (err.status, err.code) == (400, code)


# --- error shape ---------------------------------------------------------------------


def test_api_error_body_carries_extra_fields():
    err = ApiError(504, "write_concern_timeout", "the timeout passed first", seq=3, acks=2)
    assert err.status == 504
    assert err.body() == {"error": "write_concern_timeout", "detail": "the timeout passed first", "seq": 3, "acks": 2}
    assert str(err) == "the timeout passed first"
