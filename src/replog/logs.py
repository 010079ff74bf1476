"""Logging set-up, done once at the edge (the CLI). Modules only call structlog.get_logger()."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from replog import jsoncodec


def _json_renderer(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    return jsoncodec.dumps(event_dict).decode()


def configure(fmt: str = "auto", level: str = "info", **context: Any) -> None:
    """Send structured logs to stderr: console lines on a terminal, JSON lines otherwise.

    context (role, port) is added to every event of this process.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"

    def add_context(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        for key, value in context.items():
            event_dict.setdefault(key, value)
        return event_dict

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_context,
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, _json_renderer]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp reports through the standard library; keep its warnings, drop its chatter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
