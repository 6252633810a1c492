"""The bench's arithmetic: medians with their spread, and ratios of two contenders taken round by round.

A ratio is taken within each round (both contenders ran minutes apart, on the same machine load)
and then the median over the rounds: a busy neighbour slows one round, not one contender.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]


@dataclass(frozen=True)
class Spread:
    """The median of some runs, with the lowest and highest value and how many runs there were."""

    median: float
    low: float
    high: float
    count: int

    def format(self, digits: int = 2) -> str:
        if self.count == 1:
            return number(self.median, digits)
        return f"{number(self.median, digits)} ({number(self.low, digits)}-{number(self.high, digits)})"


def number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def spread(values: Iterable[float]) -> Spread | None:
    """The median and range of ``values``; None when there is none."""
    found = sorted(values)
    if not found:
        return None
    return Spread(statistics.median(found), found[0], found[-1], len(found))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ok(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if "error" not in r]


def values(results: Iterable[Result], contender: str, key: str | Callable[[Result], float | None]) -> list[float]:
    """``key`` of every successful run of ``contender`` (a key, or a function of the run)."""
    found = []
    for result in ok(results):
        if result["contender"] != contender:
            continue
        value = key(result) if callable(key) else result.get(key)
        if value is not None:
            found.append(float(value))
    return found


def round_ratios(results: Iterable[Result], top: str, bottom: str,
                 key: str | Callable[[Result], float | None]) -> list[float]:
    """top/bottom of ``key`` in every round where both contenders succeeded, in round order."""
    by_round: dict[int, dict[str, float]] = {}
    for result in ok(results):
        value = key(result) if callable(key) else result.get(key)
        if value is not None:
            by_round.setdefault(int(result.get("round", 1)), {})[result["contender"]] = float(value)
    ratios = []
    for round_ in sorted(by_round):
        pair = by_round[round_]
        if top in pair and bottom in pair:
            above, below = pair[top], pair[bottom]
            ratio = above / below if below else math.inf
            if not math.isnan(ratio):  # both infinite (every result missing): no ratio in that round
                ratios.append(ratio)
    return ratios
