"""Validation of what clients and masters send, and the shapes of what nodes answer.

Pure functions: bytes in, a validated request or an ApiError out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from replog import jsoncodec
from replog.commitment import majority
from replog.log import BATCH, BATCH_MORE, HASH_SIZE


class ApiError(Exception):
    """A request the node refuses: HTTP status, a stable code and one human sentence."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def bad(code: str, detail: str) -> ApiError:
    return ApiError(400, code, detail)


def parse_json(body: bytes) -> Any:
    if not body:
        raise bad("invalid_json", "the request body is empty; send a JSON object")
    try:
        return jsoncodec.loads(body)
    except jsoncodec.DecodeError as exc:
        text = str(exc)
        if "UTF-8" in text or "utf-8" in text or "surrogate" in text:
            raise bad("invalid_utf8", "the request body is not valid UTF-8") from None
        raise bad("invalid_json", f"the request body is not valid JSON ({text.splitlines()[0]})") from None


def utf8_size(text: str) -> int:
    """UTF-8 size of text; ApiError if it cannot be encoded (a lone surrogate)."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad("invalid_utf8", "the message is not valid Unicode (it holds a lone surrogate)") from None


def resolve_w(value: Any, nodes: int) -> int:
    """A write concern as given ('majority', 'all' or 1..nodes) as a number of nodes."""
    if value == "majority":
        return majority(nodes)
    if value == "all":
        return nodes
    if isinstance(value, float) and value.is_integer():
        # JSON has one number type: 2.0 is the integer 2 (as JSON Schema, and so the OpenAPI description, has it).
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= nodes:
        raise bad("invalid_w", f'w must be an integer from 1 to {nodes} (the master included), "majority" or "all"')
    return value


@dataclass(frozen=True)
class WriteRequest:
    """A validated POST /messages."""

    texts: tuple[str, ...]
    batch: bool  # given as "messages": answered with "entries"
    w: int
    id: str | None
    timeout: float | None  # seconds, None = no limit


def parse_write(
    body: bytes,
    *,
    nodes: int,
    default_w: int | str,
    default_timeout: float | None,
    max_message_bytes: int,
) -> WriteRequest:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise bad("invalid_body", "the request body must be a JSON object")
    if "message" in data and "messages" in data:
        raise bad("invalid_body", 'give either "message" or "messages", not both')
    if "messages" in data:
        items = data["messages"]
        if not isinstance(items, list):
            raise bad("invalid_messages", '"messages" must be a list of strings')
        if not items:
            raise bad("empty_batch", '"messages" must hold at least one message')
        batch = True
    elif "message" in data:
        items = [data["message"]]
        batch = False
    else:
        raise bad("missing_message", 'the body needs a "message" string (or a "messages" list)')
    for i, text in enumerate(items):
        if not isinstance(text, str):
            where = f'"messages"[{i}]' if batch else '"message"'
            raise bad("invalid_message", f"{where} must be a string")
        size = utf8_size(text)
        if size > max_message_bytes:
            raise ApiError(
                413, "message_too_large", f"a message of {size} bytes is over the limit of {max_message_bytes} bytes"
            )
    w = resolve_w(default_w if data.get("w") is None else data["w"], nodes)
    id_ = data.get("id")
    if id_ is not None and (not isinstance(id_, str) or not id_):
        raise bad("invalid_id", '"id" must be a non-empty string')
    if id_ is not None:
        utf8_size(id_)
    timeout = default_timeout
    if "timeout" in data and data["timeout"] is not None:
        t = data["timeout"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or math.isnan(t):
            raise bad("invalid_timeout", '"timeout" must be a positive number of seconds')
        timeout = None if t > 1e9 else float(t)
    return WriteRequest(tuple(items), batch, w, id_, timeout)


def parse_query_int(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise bad(f"invalid_{name}", f"?{name}= must be a non-negative integer")
    return int(raw)


MAX_WAIT = 60.0  # seconds a long-poll may wait at most


def parse_wait(query: Any) -> float | None:
    """?wait=S of a long-poll: a number of seconds, 0 < S <= MAX_WAIT; None when absent."""
    raw = query.get("wait")
    if raw is None:
        return None
    try:
        wait = float(raw) if raw.isascii() and len(raw) <= 32 else -1.0
    except ValueError:
        wait = -1.0
    if not 0 < wait <= MAX_WAIT:  # NaN fails this too
        raise bad("invalid_wait", f"?wait= must be a number of seconds above 0 and at most {MAX_WAIT:g}")
    return wait


@dataclass(frozen=True)
class ReplicateRequest:
    """A validated batch from the master: entries as (seq, id or None, text, flags, chain value)."""

    log_id: str
    entries: list[tuple[int, str | None, str, int, bytes]]
    prev: tuple[int, bytes] | None  # (seq, chain value) of the entry just before the batch
    base: int = 0  # the end of the master's start-up log: a node takes its epoch only once it holds that much


def _uint(value: Any, bits: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value < (1 << bits)


def parse_hash(value: Any) -> bytes | None:
    """A chain value as it travels (32 hex digits), or None if it is not one."""
    if not isinstance(value, str) or len(value) != 2 * HASH_SIZE:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == HASH_SIZE else None  # fromhex skips whitespace: "00 00 …" is not a hash


def parse_wire_entry(item: Any) -> tuple[int, str | None, str, int, bytes]:
    """One [seq, id or null, text, flags, hash] entry; ApiError if malformed."""
    if not isinstance(item, list) or len(item) != 5:
        raise bad("invalid_entries", "each entry must be [seq, id or null, text, flags, hash]")
    seq, id_, text, flags, h = item
    if not _uint(seq, 62) or seq < 1:
        raise bad("invalid_entries", "an entry's seq must be a positive integer")
    if id_ is not None and (not isinstance(id_, str) or not id_):
        raise bad("invalid_entries", "an entry's id must be a non-empty string or null")
    if not isinstance(text, str):
        raise bad("invalid_entries", "an entry's text must be a string")
    if not _uint(flags, 8) or flags & ~(BATCH | BATCH_MORE) or (flags & BATCH_MORE and not flags & BATCH):
        raise bad("invalid_entries", "an entry's flags must be 0, 1 (batch) or 3 (batch, more follow)")
    hb = parse_hash(h)
    if hb is None:
        raise bad("invalid_entries", f"an entry's hash must be {2 * HASH_SIZE} hex digits")
    utf8_size(text)
    if id_ is not None:
        utf8_size(id_)
    return seq, id_, text, flags, hb


def parse_replicate(body: bytes) -> ReplicateRequest:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise bad("invalid_body", "the replication body must be a JSON object")
    log_id = data.get("log")
    if not isinstance(log_id, str) or not log_id:
        raise bad("invalid_log", '"log" must be the non-empty identity of the master\'s log')
    raw = data.get("entries")
    if not isinstance(raw, list):
        raise bad("invalid_entries", '"entries" must be a list of [seq, id, text, flags, hash]')
    entries = [parse_wire_entry(item) for item in raw]
    prev = data.get("prev")
    if prev is None:
        raise bad("invalid_prev", '"prev" must be [seq, hash] of the entry before the batch')
    if not isinstance(prev, list) or len(prev) != 2 or not _uint(prev[0], 62) or parse_hash(prev[1]) is None:
        raise bad("invalid_prev", '"prev" must be [seq, hash] of the entry before the batch')
    base = data.get("base", 0)
    if not _uint(base, 62):
        raise bad("invalid_base", '"base" must be the non-negative end of the master\'s start-up log')
    return ReplicateRequest(log_id, entries, (prev[0], parse_hash(prev[1])), base)  # type: ignore[arg-type]


EPOCH_HEADER = "Replog-Epoch"
MASTER_HEADER = "Replog-Master"


@dataclass(frozen=True)
class Fence:
    """Who sent an internal request: the master's epoch and its id."""

    epoch: int
    master: str

    def headers(self) -> dict[str, str]:
        return {EPOCH_HEADER: str(self.epoch), MASTER_HEADER: self.master}


def parse_fence(headers: Any, *, required: bool) -> Fence | None:
    """The epoch and master id an internal request carries; None if absent and not required."""
    raw_epoch, master = headers.get(EPOCH_HEADER), headers.get(MASTER_HEADER)
    if raw_epoch is None and master is None and not required:
        return None
    if raw_epoch is None or not raw_epoch.isascii() or not raw_epoch.isdigit() or len(raw_epoch) > 18:
        raise bad("invalid_epoch", f"internal requests carry {EPOCH_HEADER}: <epoch>, a positive integer")
    if not master or len(master) > 200:
        raise bad("invalid_master", f"internal requests carry {MASTER_HEADER}: <master id>")
    epoch = int(raw_epoch)
    if epoch < 1:
        raise bad("invalid_epoch", f"{EPOCH_HEADER} must be at least 1")
    return Fence(epoch, master)
