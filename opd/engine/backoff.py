"""Exponential backoff with a cap: one type for every retry loop of the engine.

Watch streams, discovery, handler retries, daemon restarts and refused writes all
wait ``initial * factor**attempt`` seconds, capped at ``maximum``; an optional
jitter spreads retries of many objects that failed together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float
    maximum: float
    factor: float = 2.0
    jitter: float = 0.0  # a fraction of the delay, added at random: 0.1 = up to +10 %
    attempt: int = 0

    def delay(self, attempt: int | None = None) -> float:
        """The delay before try number ``attempt`` + 1 (default: the current one), without advancing."""
        n = self.attempt if attempt is None else attempt
        # min() before the power would overflow: 2.0 ** 2000 is a float error.
        base = self.initial * self.factor ** min(n, 64)
        capped = min(self.maximum, base)
        if self.jitter:
            capped += capped * self.jitter * random.random()
        return capped

    def next(self) -> float:
        """The delay to wait now; the next call returns a longer one."""
        value = self.delay()
        self.attempt += 1
        return value

    def reset(self) -> None:
        self.attempt = 0
