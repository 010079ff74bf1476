"""The readers of one node waiting for its visible end to grow: long-polls and streams wait here.

A node has one Tail. Its visible end is what the node shows (the master: its durable end; a
secondary: its gap-free durable prefix). The node calls notify() wherever that end may have grown;
each waiter then checks for itself whether it grew past the seq it waits beyond. Nothing polls, and
no thread waits: a waiter is one future of its own, in a set, removed when it returns, times out or
is cancelled (the client went away), so a reader that goes away leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Tail:
    """Wakes readers when end() grows; close() (at shutdown) wakes them all for good."""

    def __init__(self, end: Callable[[], int]) -> None:
        self.end = end  # the node's visible end, read afresh at every check
        self.closed = False  # the node is shutting down: waits end at once, streams close
        self.streams = 0  # open GET /messages/stream answers, for /health and the bench
        self._waiters: set[asyncio.Future[None]] = set()  # one future per waiting reader

    @property
    def waiting(self) -> int:
        """Readers waiting right now (long-polls and idle streams)."""
        return len(self._waiters)

    def notify(self) -> None:
        """The visible end may have grown: wake every waiter to check."""
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Wake every waiter and make later waits return at once."""
        self.closed = True
        self.notify()

    async def wait_past(self, seq: int, timeout: float | None) -> bool:
        """Return True as soon as end() > seq; False after timeout seconds (None: no limit) or once closed."""
        if self.end() > seq:
            return True
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.closed:
            fut = loop.create_future()
            self._waiters.add(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                return self.end() > seq
            finally:
                self._waiters.discard(fut)
            if self.end() > seq:
                return True
        return False
