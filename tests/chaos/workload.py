"""Concurrent writers: mixed write concerns, single messages and batches, idempotent retries.

Every request and its answer is recorded (an Attempt of an Op) for the checker. Message texts
are unique across the run, so the checker can find each write in every node's log.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from replog.tools.cluster import http_json

# Answers a write may get from a correct master under faults; anything else is a violation.
ALLOWED_STATUSES = frozenset({200, 201, 503, 504})


@dataclass
class Attempt:
    """One POST /messages and what came back: a status and body, or the error that stood for them."""

    started: float
    ended: float = 0.0
    status: int | None = None  # None: no answer (connection refused or reset, client-side timeout)
    body: Any = None
    error: str | None = None

    @property
    def not_master(self) -> bool:
        """The answer was 503 not_master: the node was (or became) no master; the write may be stored or not."""
        return self.status == 503 and isinstance(self.body, dict) and self.body.get("error") == "not_master"

    @property
    def stored(self) -> bool:
        """The answer says the write is in the log (2xx, or a 504: stored, concern not met in time)."""
        return self.status in (200, 201, 504)


@dataclass
class Op:
    """One logical write; an idempotent one may take several attempts (some of them concurrent twins)."""

    op_id: str
    texts: list[str]
    batch: bool
    w: int | str  # as sent
    w_nodes: int  # as the master resolves it
    id: str | None
    timeout: float | None  # the write's own "timeout" field
    twin: bool = False  # the first attempt was sent twice at once
    attempts: list[Attempt] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": self.texts} if self.batch else {"message": self.texts[0]}
        body["w"] = self.w
        if self.id is not None:
            body["id"] = self.id
        if self.timeout is not None:
            body["timeout"] = self.timeout
        return body

    @property
    def outcome(self) -> str:
        """ok (2xx), timeout (504), refused (503 only), unknown (no answer: stored or not), or unexpected.

        A 503 not_master (a deposed master's answer to a write it was waiting on) says the outcome is
        unknown, not that nothing was appended, so it does not make a write refused.
        """
        statuses = [a.status for a in self.attempts]
        if any(s is not None and s not in ALLOWED_STATUSES for s in statuses):
            return "unexpected"
        if any(s in (200, 201) for s in statuses):
            return "ok"
        if 504 in statuses:
            return "timeout"
        if statuses and all(a.status == 503 and not a.not_master for a in self.attempts):
            return "refused"
        return "unknown"

    @property
    def first_started(self) -> float:
        return min(a.started for a in self.attempts)

    def stored_answers(self) -> list[Attempt]:
        return [a for a in self.attempts if a.stored and isinstance(a.body, dict)]


def answered_entries(body: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(seq, id, text) of each entry a 2xx or 504 answer names."""
    if "entries" in body:
        return [(e["seq"], e["id"], e["text"]) for e in body["entries"]]
    return [(body["seq"], body["id"], body["text"])]


class Workload:
    """`writers` threads posting to the master until stop(); every op is kept in `ops`."""

    def __init__(
        self,
        master_url: str,
        *,
        nodes: int,
        seed: int,
        writers: int = 4,
        tag: str = "m",
        pace: float = 0.005,
        max_wait: float = 15.0,
    ) -> None:
        self.master_url = master_url
        self.nodes = nodes
        self.seed = seed
        self.writers = writers
        self.tag = tag  # prefix of every text, unique per run
        self.pace = pace  # mean pause between two ops of a writer, seconds
        self.max_wait = max_wait  # seconds a write without its own timeout is waited for (then: no answer)
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.writers):
            thread = threading.Thread(target=self._writer, args=(i,), name=f"writer-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the writers to finish their current op, and wait for them."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    # -- one writer ------------------------------------------------------------------

    def _writer(self, index: int) -> None:
        rng = random.Random(f"writer-{self.seed}-{index}")
        n = 0
        while not self._stop.is_set():
            op = self._make(rng, f"{self.tag}-w{index}-o{n}")
            n += 1
            with self._lock:
                self.ops.append(op)
            self._execute(op, rng)
            self._stop.wait(rng.expovariate(1 / self.pace) if self.pace > 0 else 0)

    def _make(self, rng: random.Random, op_id: str) -> Op:
        ws: list[int | str] = [*range(1, self.nodes + 1), "majority", "all"]
        w = rng.choice(ws)
        w_nodes = self.nodes // 2 + 1 if w == "majority" else self.nodes if w == "all" else int(w)
        batch = rng.random() < 0.3
        count = rng.randint(2, 20) if batch else 1
        texts = [f"{op_id}-{i}" for i in range(count)]
        idempotent = rng.random() < 0.25
        roll = rng.random()
        timeout = (
            None if roll < 0.4 else round(rng.uniform(0.02, 0.2), 3) if roll < 0.7 else round(rng.uniform(1.0, 3.0), 2)
        )
        twin = idempotent and rng.random() < 0.3
        return Op(op_id, texts, batch, w, w_nodes, f"id-{op_id}" if idempotent else None, timeout, twin)

    def _execute(self, op: Op, rng: random.Random) -> None:
        body = op.body()
        if op.twin:
            twin = threading.Thread(target=self._attempt, args=(op, body), daemon=True)
            twin.start()
            self._attempt(op, body)
            twin.join()
        else:
            self._attempt(op, body)
        if op.id is None:
            return  # never retried: a retry without an id may append twice, and that is allowed
        for _ in range(4):
            last = op.attempts[-1]
            if last.status in (200, 201) or self._stop.is_set():
                return  # done, or the run is ending: the checker treats an unanswered write as unknown
            if last.status == 504 and rng.random() < 0.5:
                return  # leave some 504s as they are
            if last.status not in (None, 503, 504):
                return
            self._stop.wait(rng.uniform(0.02, 0.2))
            self._attempt(op, body)

    def _attempt(self, op: Op, body: dict[str, Any]) -> None:
        # Without a timeout a write waits for its w for as long as a fault lasts (a few seconds at most).
        client_timeout = self.max_wait if op.timeout is None else op.timeout + min(10.0, self.max_wait)
        attempt = Attempt(time.monotonic())
        try:
            attempt.status, attempt.body = http_json(
                "POST", self.master_url + "/messages", body, timeout=client_timeout
            )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # The master is down or was killed mid-request: no answer, so the write may or may not be stored.
            attempt.error = f"{type(exc).__name__}: {exc}"
        attempt.ended = time.monotonic()
        with self._lock:
            op.attempts.append(attempt)
        if attempt.status is None:
            self._stop.wait(0.05)  # the master may be down: do not spin
