"""What the self-check examples share: timed steps, expectations with a verdict, reads of a node.

Standard library plus replog only. Every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from replog.tools.cluster import ClusterError, http_json, wait_until

DEFAULT_MASTER = "http://127.0.0.1:8000"  # the Procfile's master
DEFAULT_SECONDARIES = ("http://127.0.0.1:8001", "http://127.0.0.1:8002")  # S1, then the delayed S2

T = TypeVar("T")


class Run:
    """Prints the steps of one self-check with their time since the start, and keeps every verdict."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self.held = 0
        self.failed: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self._t0

    def say(self, text: str) -> None:
        print(f"[{self.now():6.2f} s] {text}", flush=True)

    def expect(self, ok: bool, what: str) -> bool:
        """Record one expectation; print it as ok or FAIL. Returns ok, so a step can stop early."""
        if ok:
            self.held += 1
        else:
            self.failed.append(what)
        print(f"{'':11}{'ok  ' if ok else 'FAIL'}  {what}", flush=True)
        return ok

    def verdict(self) -> int:
        """Print the summary; the exit code: 0 when every expectation held, 1 otherwise."""
        if not self.failed:
            self.say(f"PASS: all {self.held} expectations held")
            return 0
        self.say(f"FAILED: {len(self.failed)} of {self.held + len(self.failed)} expectations did not hold:")
        for what in self.failed:
            print(f"{'':11}- {what}", flush=True)
        return 1


@dataclass
class Answer:
    """The master's answer to one POST /messages, and how long it took."""

    text: str
    w: int
    status: int | None  # None: the master could not be reached
    body: Any
    elapsed: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 201

    @property
    def seq(self) -> int | None:
        return self.body.get("seq") if isinstance(self.body, dict) else None

    @property
    def acks(self) -> int | None:
        return self.body.get("acks") if isinstance(self.body, dict) else None

    def line(self) -> str:
        if self.status is None:
            return f"{self.text} w={self.w} -> no answer ({self.error}) after {self.elapsed:.2f} s"
        if self.status in (200, 201):
            return f"{self.text} w={self.w} -> {self.status} seq={self.seq} acks={self.acks} in {self.elapsed:.2f} s"
        error = self.body.get("error") if isinstance(self.body, dict) else self.body
        return f"{self.text} w={self.w} -> {self.status} {error} acks={self.acks} in {self.elapsed:.2f} s"


def post(master: str, text: str, w: int, timeout: float) -> Answer:
    """Append text with write concern w; the master gives up waiting for w after timeout seconds (504)."""
    start = time.monotonic()
    try:
        status, body = http_json(
            "POST", master + "/messages", {"message": text, "w": w, "timeout": timeout}, timeout + 10
        )
    except OSError as exc:
        return Answer(text, w, None, None, time.monotonic() - start, str(exc))
    return Answer(text, w, status, body, time.monotonic() - start)


def messages(url: str) -> list[dict[str, Any]] | None:
    """The entries a node shows, in seq order; None when it cannot be read."""
    try:
        status, body = http_json("GET", url + "/messages", timeout=5.0)
    except OSError:
        return None
    if status != 200 or not isinstance(body, dict):
        return None
    return body.get("messages")


def health(url: str) -> dict[str, Any] | None:
    """A node's /health body; None when it does not answer."""
    try:
        status, body = http_json("GET", url + "/health", timeout=2.0)
    except OSError:
        return None
    return body if status == 200 and isinstance(body, dict) else None


def wait_for(cond: Callable[[], T], timeout: float, interval: float = 0.02) -> T | None:
    """cond()'s first truthy value within timeout seconds, or None."""
    try:
        return wait_until(cond, timeout, interval=interval)
    except ClusterError:
        return None


def master_ready(master: str, secondaries: list[str], healthy: list[str]) -> dict[str, Any] | None:
    """The master's health if it accepts writes, names every URL of `secondaries`, and sees `healthy` healthy."""
    h = health(master)
    if h is None or h.get("role") != "master" or h.get("status") != "ok":
        return None
    status = {s.get("url"): s.get("status") for s in h.get("secondaries", [])}
    if any(url not in status for url in secondaries) or any(status[url] != "healthy" for url in healthy):
        return None
    return h


def is_prefix(short: list[dict[str, Any]], full: list[dict[str, Any]]) -> bool:
    return full[: len(short)] == short


def show(entries: list[dict[str, Any]] | None, since: int = 0) -> str:
    """A node's list as "seq:text" items; entries up to seq `since` (earlier runs) are only counted."""
    if entries is None:
        return "(unreachable)"
    earlier = sum(1 for e in entries if e["seq"] <= since)
    items = [f"{e['seq']}:{e['text']}" for e in entries if e["seq"] > since]
    head = f"({earlier} earlier) " if earlier else ""
    return f"{len(entries)} entries {head}[{', '.join(items)}]"


def texts_since(entries: list[dict[str, Any]] | None, since: int) -> list[str] | None:
    return None if entries is None else [e["text"] for e in entries if e["seq"] > since]


def url(value: str) -> str:
    """argparse type of a base URL: given without a trailing slash, as the master names its secondaries."""
    return value.rstrip("/")
