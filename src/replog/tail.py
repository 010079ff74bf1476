"""The readers of one node waiting for its visible end to grow: long-polls and streams wait here.

A node has one Tail. Its visible end is what the node shows (the master: its durable end; a
secondary: its gap-free durable prefix). The node calls notify() wherever that end may have grown;
notify() wakes exactly the waiters whose seq the end has now passed, so a reader waiting far past
the end (an idle stream) costs nothing per append. Nothing polls, and no thread waits: a waiter is
one future of its own, filed under the seq it waits past and removed when it returns, times out or
is cancelled (the client went away), so a reader that goes away leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable


class Tail:
    """Wakes readers when end() grows past their seq; close() (at shutdown) wakes them all for good."""

    def __init__(self, end: Callable[[], int]) -> None:
        self.end = end  # the node's visible end, read afresh at every check
        self.closed = False  # the node is shutting down: waits end at once, streams close
        self.streams = 0  # open GET /messages/stream answers, for /health and the bench
        self._by_seq: dict[int, set[asyncio.Future[None]]] = {}  # seq waited past -> its waiters' futures
        self._seqs: list[int] = []  # the keys of _by_seq, ascending
        self._count = 0  # futures in _by_seq

    @property
    def waiting(self) -> int:
        """Readers waiting right now (long-polls and idle streams)."""
        return self._count

    def notify(self) -> None:
        """The visible end may have grown: wake every waiter it has passed."""
        if not self._seqs:
            return
        self._wake(bisect.bisect_left(self._seqs, self.end()))

    def close(self) -> None:
        """Wake every waiter and make later waits return at once."""
        self.closed = True
        self._wake(len(self._seqs))

    async def wait_past(self, seq: int, timeout: float | None) -> bool:
        """Return True as soon as end() > seq; False after timeout seconds (None: no limit) or once closed."""
        if self.end() > seq:
            return True
        if self.closed:
            return False
        fut = asyncio.get_running_loop().create_future()
        self._add(seq, fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            pass
        finally:
            self._remove(seq, fut)
        return self.end() > seq

    def _wake(self, upto: int) -> None:
        """Wake the waiters of the first upto seqs and forget them."""
        woken, self._seqs = self._seqs[:upto], self._seqs[upto:]
        for seq in woken:
            futures = self._by_seq.pop(seq)
            self._count -= len(futures)
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)

    def _add(self, seq: int, fut: asyncio.Future[None]) -> None:
        futures = self._by_seq.get(seq)
        if futures is None:
            futures = self._by_seq[seq] = set()
            bisect.insort(self._seqs, seq)
        futures.add(fut)
        self._count += 1

    def _remove(self, seq: int, fut: asyncio.Future[None]) -> None:
        """Forget fut, if notify() has not already (a timeout, a cancellation)."""
        futures = self._by_seq.get(seq)
        if futures is None or fut not in futures:
            return
        futures.discard(fut)
        self._count -= 1
        if not futures:
            del self._by_seq[seq]
            del self._seqs[bisect.bisect_left(self._seqs, seq)]
