"""Where opd's CPU goes, per component, from py-spy's raw (collapsed) stacks.

``run.py --profile DIR`` with ``BENCH_PROFILE_FORMAT=raw`` records one ``.txt`` per opd contender
(``py-spy record --gil --format raw``: a line per stack, ``frame;frame;... count``); this reads
them and prints each component's share of the samples. A sample is put on the innermost frame
that belongs to a component (json.dumps under ``state.dump`` counts as diff-base work, an
aiohttp frame under opd's kube client as HTTP), and anything that imports a module as startup.
With ``--gil`` a sample is taken of the thread holding the GIL: the shares are of the time the
interpreter ran Python (or held the GIL in C), close to but not the same as CPU seconds.

Usage: ``python tests/bench/cpu_breakdown.py DIR_OR_FILES...``
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# (component, substrings of a frame "function (path:line)"), most specific first for a frame.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("TLS (ssl)", ("ssl.py:", "sslproto.py:")),
    ("HTTP client (aiohttp, yarl, multidict)", ("aiohttp/", "yarl/", "multidict/")),
    ("opd's kube client (kube/api.py, batching.py)", ("opd/kube/",)),
    ("watch streams and LIST pages: parse, check, fan out", (
        "opd/engine/shapes.py", "opd/engine/watching.py", "opd/engine/listing.py", "opd/engine/hub.py",
        "opd/engine/intake.py")),
    ("sync handler's hop to a thread and back", (
        "opd/engine/invocation.py", "concurrent/futures/", "threading.py")),
    ("the handler itself", ("contender_opd.py",)),
    ("diff-base and progress (state.py, storages.py)", ("opd/engine/state.py", "opd/storages.py")),
    ("change detection (causes.py, diffs.py)", ("opd/engine/causes.py", "opd/engine/diffs.py")),
    ("handler kwargs (arguments.py, typedefs.py)", ("opd/engine/arguments.py", "opd/typedefs.py")),
    ("plan and apply (applying.py)", ("opd/engine/applying.py",)),
    ("logging and reporting", ("opd/engine/reporting.py", "loguru/", "logging/")),
    ("handling, execution, processing, queueing (awaits resumed, bookkeeping)", (
        "opd/engine/handling.py", "opd/engine/execution.py", "opd/engine/processing.py",
        "opd/engine/queueing.py", "opd/registry.py")),
    ("event loop (asyncio, selectors)", ("asyncio/", "selectors.py")),
]
STARTUP = "startup (imports)"


def component(frames: list[str]) -> str:
    if any("importlib" in frame for frame in frames):
        return STARTUP
    for frame in reversed(frames):
        for name, marks in COMPONENTS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def breakdown(paths: list[Path]) -> tuple[int, Counter[str]]:
    shares: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            total += int(count)
            shares[component(stack.split(";"))] += int(count)
    return total, shares


def main(args: list[str]) -> None:
    paths = [p for arg in args for p in (sorted(Path(arg).glob("*.txt")) if Path(arg).is_dir() else [Path(arg)])]
    if not paths:
        raise SystemExit("usage: cpu_breakdown.py DIR_OR_FILES... (py-spy raw stacks: BENCH_PROFILE_FORMAT=raw)")
    total, shares = breakdown(paths)
    print(f"{total} samples in {len(paths)} profile(s)")
    for name, count in shares.most_common():
        print(f"{100 * count / total:5.1f} %  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
