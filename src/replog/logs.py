"""Logging set-up, done once at the edge (the CLI). Modules only call structlog.get_logger()."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from replog import jsoncodec


def _json_renderer(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    return jsoncodec.dumps(event_dict).decode()


def _compact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Console lines only: short values (JSON lines keep them whole). URLs lose their scheme, log and
    master ids keep 8 hex digits, lists become comma-separated (a dict's items key(value)), empty ones go."""
    for key, value in list(event_dict.items()):
        if isinstance(value, dict):
            value = [f"{_short(k)}({_short(v)})" for k, v in value.items()]  # {"a:1": 0} -> a:1(0)
        if isinstance(value, (list, tuple)):
            if not value:
                del event_dict[key]
                continue
            value = ",".join(_short(v) for v in value)
        event_dict[key] = _short(value)
    return event_dict


def _short(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.startswith(("http://", "https://")):
        return value.split("://", 1)[1]
    if len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value[:8]  # a log or master id: 8 hex digits tell them apart on a console
    return value


def configure(fmt: str = "auto", level: str = "info", **context: Any) -> None:
    """Send structured logs to stderr: console lines on a terminal, JSON lines otherwise.

    context (role, port) is added to every JSON event of this process, and to console lines on a
    terminal. Console lines are compact (well under 120 columns for normal events): a short local
    time on a terminal, and no time and no context when stderr is not a terminal, where a process
    manager (honcho, systemd) prefixes each line with its own time and the process's name.
    """
    tty = sys.stderr.isatty()
    if fmt == "auto":
        fmt = "console" if tty else "json"

    def add_context(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        for key, value in context.items():
            event_dict.setdefault(key, value)
        return event_dict

    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
    if fmt == "json":
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_context,
            structlog.processors.format_exc_info,
            _json_renderer,
        ]
    else:
        if tty:
            processors += [structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False), add_context]
        processors += [_compact, structlog.dev.ConsoleRenderer(colors=tty, pad_event_to=20, pad_level=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp reports through the standard library; keep its warnings, drop its chatter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
