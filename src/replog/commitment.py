"""Ack counting: how far each node holds the log, and which writes wait for their w.

A write of seq s with concern w is satisfied once w nodes (the master included) hold
s and everything before it. Node i's "match" is the highest seq it holds with no gap,
so seq s is held by the nodes whose match >= s, and the highest seq held by w nodes
is the w-th largest match (sort the matches, take the quorum one).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any


def majority(nodes: int) -> int:
    """The smallest number of nodes that any two such sets share one of: the quorum of a cluster of nodes."""
    return nodes // 2 + 1


def reached(matches: list[int], w: int) -> int:
    """The highest seq held by at least w of the nodes whose matches are given (0 if none)."""
    if w < 1 or w > len(matches):
        return 0
    return sorted(matches, reverse=True)[w - 1]


def one_per_process(counts: list[tuple[str | None, int]]) -> list[int]:
    """Each node's count, given as (incarnation, count), with a process counted once however many nodes'
    slots reach it (one process under two URLs answers every slot with its one incarnation): of the nodes
    that report one incarnation, the one with the highest count keeps it (the first on a tie), the others
    count 0. A node with no incarnation (no answer yet) keeps its count."""
    best: dict[str, int] = {}
    for i, (incarnation, count) in enumerate(counts):
        if incarnation is not None and (incarnation not in best or count > counts[best[incarnation]][1]):
            best[incarnation] = i
    return [c if inc is None or best[inc] == i else 0 for i, (inc, c) in enumerate(counts)]


class Waiter:
    """One write waiting for its w; token is the caller's (a future, in the server)."""

    __slots__ = ("seq", "w", "token", "live")

    def __init__(self, seq: int, w: int, token: Any) -> None:
        self.seq = seq
        self.w = w
        self.token = token
        self.live = True


class Commitment:
    """Matches of every node (index 0 is the master) and the writes waiting on them."""

    def __init__(self, nodes: int) -> None:
        self.matches = [0] * nodes  # matches[i]: highest gap-free seq node i holds
        # per w: a heap of (seq, order, waiter); order breaks ties without comparing waiters
        self._heaps: dict[int, list[tuple[int, int, Waiter]]] = {}
        self._order = itertools.count()
        self._dead = 0  # waiters removed but still in a heap (dropped lazily)
        self._live = 0

    @property
    def nodes(self) -> int:
        return len(self.matches)

    @property
    def waiting(self) -> int:
        return self._live

    def acks(self, seq: int) -> int:
        """How many nodes hold seq (and everything before it)."""
        return sum(1 for m in self.matches if m >= seq)

    def wait(self, seq: int, w: int, token: Any) -> Waiter | None:
        """Register a write waiting for w nodes to hold seq; None if that is already so."""
        if self.acks(seq) >= w:
            return None
        waiter = Waiter(seq, w, token)
        heapq.heappush(self._heaps.setdefault(w, []), (seq, next(self._order), waiter))
        self._live += 1
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """Forget a waiter whose client went away or timed out."""
        if waiter.live:
            waiter.live = False
            self._live -= 1
            self._dead += 1
            if self._dead > 1024 and self._dead > self._live:
                self._compact()

    def drain(self) -> list[Waiter]:
        """Forget every waiting write and return them (the master stops taking writes)."""
        released = [item[2] for heap in self._heaps.values() for item in heap if item[2].live]
        for waiter in released:
            waiter.live = False
        self._heaps.clear()
        self._live = self._dead = 0
        return released

    def update(self, node: int, match: int) -> list[Waiter]:
        """Node now holds everything up to match; return the waiters this satisfies."""
        self.matches[node] = match
        released: list[Waiter] = []
        for w, heap in self._heaps.items():
            top = reached(self.matches, w)
            while heap and heap[0][0] <= top:
                waiter = heapq.heappop(heap)[2]
                if waiter.live:
                    waiter.live = False
                    self._live -= 1
                    released.append(waiter)
                else:
                    self._dead -= 1
        return released

    def _compact(self) -> None:
        for w, heap in self._heaps.items():
            kept = [item for item in heap if item[2].live]
            heapq.heapify(kept)
            self._heaps[w] = kept
        self._dead = 0
