"""The issues' goals, each judged on one measured median: met, missed, or not measured in this run."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stats import Spread

MET, MISSED, NOT_MEASURED = "met", "MISSED", "not measured"

_COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass(frozen=True)
class Goal:
    what: str  # what is measured, as the summary says it
    op: str  # "<=", ">=" or "=="
    bound: float
    unit: str = ""  # after the bound: "x", " s", " B"
    digits: int = 2
    issue: str = "#15"  # the issue(s) that set this target

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ValueError(f"unknown comparison {self.op!r} in goal {self.what!r}")

    @property
    def target(self) -> str:
        return f"{self.op} {self.bound:g}{self.unit}"


@dataclass(frozen=True)
class Outcome:
    goal: Goal
    measured: Spread | None  # the median over rounds, with its range; None: not measured in this run
    note: str = ""  # why not measured, or what the figure is

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return NOT_MEASURED
        return MET if _COMPARE[self.goal.op](self.measured.median, self.goal.bound) else MISSED

    @property
    def value(self) -> str:
        if self.measured is None:
            return "-"
        text = self.measured.format(self.goal.digits) + self.goal.unit
        return text if self.measured.count == 1 else f"{text}, {self.measured.count} rounds"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: bool = True) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned (or all left)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]),
                          *((c.rjust(w) if right else c.ljust(w)) for c, w in zip(rest, widths[1:], strict=True))
                          ]).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render(outcomes: Sequence[Outcome]) -> str:
    """The summary: every goal, its measured median (range over rounds), and met / MISSED / not measured."""
    rows = [[o.goal.what, o.goal.issue, o.value, o.goal.target, o.verdict + (f" ({o.note})" if o.note else "")]
            for o in outcomes]
    met = sum(o.verdict == MET for o in outcomes)
    missed = sum(o.verdict == MISSED for o in outcomes)
    return "\n".join([
        "Summary: the goals of issues #15 and #22 (median over rounds, with the range in parentheses)",
        table(["goal", "issue", "measured", "target", "verdict"], rows, right=False),
        f"{met} met, {missed} missed, {len(outcomes) - met - missed} not measured",
    ])


# Issue #22 item 4: the paired live scenario (tests/bench/paired.py), opd's latency minus raw's object by object.
PAIRED_P50 = Goal("live, paired: opd's added latency over raw, p50", "<=", 5.0, " ms", 1, "#22")
PAIRED_P99 = Goal("live, paired: opd's added latency over raw, p99", "<=", 20.0, " ms", 1, "#22")
