"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """delay(n) for the n-th consecutive failure: base * 2**(n-1), capped, with equal jitter.

    Equal jitter keeps half the delay fixed, so delays visibly grow, and randomises the
    other half, so replicators that failed together do not retry in lockstep.
    """

    base: float = 0.05
    cap: float = 2.0

    def ceiling(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # 2**60 is far past any cap; clamping the exponent avoids float overflow.
        return min(self.cap, self.base * 2.0 ** min(failures - 1, 60))

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        top = self.ceiling(failures)
        return top / 2 + top / 2 * rand()
