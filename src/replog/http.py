"""What every node's HTTP server shares: JSON answers, and JSON bodies on every error."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web, web_protocol

from replog import errors, jsoncodec
from replog.edge import BodyTimeout
from replog.log import Log
from replog.protocol import ApiError, parse_query_int, parse_wait

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


# The status of each domain refusal (replog.errors): the domain knows no HTTP.
STATUS: dict[type[errors.Refusal], int] = {
    errors.NoQuorum: 503,
    errors.DiskFailed: 503,
    errors.NotMaster: 503,
    errors.Switching: 503,
    errors.Failed: 503,
    errors.InjectedFailure: 500,
    errors.WriteConcernTimeout: 504,
    errors.IdConflict: 409,
    errors.ReservedId: 400,
    errors.StaleEpoch: 409,
    errors.EntryConflict: 409,
    errors.LogMismatch: 409,
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsoncodec.dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    return json_response({"error": code, "detail": detail, **extra}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into {"error", "detail"}; an unexpected bug answers 500, never kills the node."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), status=exc.status)
    except errors.Refusal as exc:
        return json_response(exc.body(), status=STATUS.get(type(exc), 409))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 404:
            detail = f"no route {request.method} {request.path}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            detail = "the request body is larger than this node accepts"
        resp = error_response(exc.status, code, detail)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        structlog.get_logger().exception("request_failed", method=request.method, path=request.path)
        return error_response(500, "internal_error", "the node hit an unexpected error; it is still running")


async def read_body(request: web.Request) -> bytes:
    """The whole body; a body over the app's client_max_size becomes a JSON 413."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "payload_too_large", "the request body is larger than this node accepts") from None
    except BodyTimeout:
        # The body stalled past the node's --read-timeout (replog.edge): the connection closes after this answer.
        raise ApiError(408, "request_timeout", "the request body stalled; the connection is closed") from None
    except web.RequestPayloadError:
        # aiohttp could not decode the body: a Content-Encoding that does not decompress, say.
        raise ApiError(400, "invalid_body", "the request body cannot be decoded as its headers say") from None


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Expect: 100-continue as aiohttp answers it, but an unknown expectation is a JSON 417."""
    expect = request.headers.get("Expect", "")
    if request.version != (1, 1):
        return None
    if expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None
    return error_response(417, "expectation_failed", f"this node cannot meet the expectation {expect!r}")


class JsonErrorHandler(web_protocol.RequestHandler):
    """aiohttp answers the requests its HTTP parser refuses (and its own failures) itself, before any
    middleware runs; this gives those answers the JSON body every other error has."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        resp = super().handle_error(request, status, exc, message)  # logs, and closes the connection
        detail = "the request is not well-formed HTTP/1.1" if status == 400 else "the node could not handle the request"
        if isinstance(resp, web.Response):
            resp.body = jsoncodec.dumps({"error": _CODES.get(status, "http_error"), "detail": detail})
            resp.content_type = "application/json"
        return resp


def messages_handler(source: Callable[[web.Application], Any]) -> Handler:
    """GET /messages[?since=SEQ][&limit=N][&wait=S] of a node, whichever its role.

    source(app) is the node: its .view encodes, and nothing past its .durable seq is
    shown (with a data dir, what is on disk: nothing a crash could take back). With wait,
    a read that finds nothing past since waits up to S seconds on the node's .tail for it.
    """

    async def get_messages(request: web.Request) -> web.Response:
        since = parse_query_int(request.query, "since") or 0
        limit = parse_query_int(request.query, "limit")
        wait = parse_wait(request.query)
        node = source(request.app)
        if wait is not None and limit != 0:
            await node.tail.wait_past(since, wait)
        body = node.view.body(since, limit, node.durable)
        return web.Response(body=body, content_type="application/json")

    return get_messages


# -- what every node serves besides its role's API --------------------------------------------------------

LOG_PAGE_MAX = 10_000  # entries in one GET /log answer at most: one page costs the node a few milliseconds


async def livez(request: web.Request) -> web.Response:
    """GET /livez: 200 while the process serves requests, whatever the state of its log."""
    return json_response({"status": "alive"})


@functools.cache
def openapi_document() -> bytes:
    """The OpenAPI 3.1 description of the client API, as shipped inside the package."""
    return importlib.resources.files("replog").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the description every client generator reads."""
    return web.Response(body=openapi_document(), content_type="application/json")


def log_handler(source: Callable[[web.Application], tuple[Log, int, str | None]]) -> Handler:
    """GET /log[?since=SEQ][&limit=N]: the raw durable entries with their flags and chain values, for
    `replog export`.

    source(app) is (the node's log, its durable seq, its log id or None while it holds no log yet).
    The answer: {"log", "last_seq", "hash" (chain value at last_seq), "since", "prev" (chain value at
    since, null past last_seq), "entries": [[seq, id or null, text, flags, hash], ...]}, at most
    LOG_PAGE_MAX entries from since + 1, none past last_seq. Read-only, on every node.
    """

    async def get_log(request: web.Request) -> web.Response:
        since = parse_query_int(request.query, "since") or 0
        limit = parse_query_int(request.query, "limit")
        limit = LOG_PAGE_MAX if limit is None else min(limit, LOG_PAGE_MAX)
        log, last, log_id = source(request.app)
        end = min(last, since + limit)
        body = {
            "log": log_id,
            "last_seq": last,
            "hash": log.hash(last).hex(),
            "since": since,
            "prev": log.hash(since).hex() if since <= last else None,
            "entries": log.wire(since + 1, end) if end > since else [],
        }
        return json_response(body)

    return get_log
