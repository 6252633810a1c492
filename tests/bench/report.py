"""Tables for people, with the issue's targets next to the measured ratios; JSON for machines."""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The targets; the backlog ones are set at N=5000.
TARGET_N = 5000
OPD_OVER_RAW = 1.25  # opd time <= 1.25x raw
KOPF_OVER_OPD = 2.5  # Kopf time >= 2.5x opd
RSS_OPD_OVER_KOPF = 1 / 3  # opd peak RSS <= 1/3 of Kopf's
LIVE_P99_MS = 100.0  # opd p99 at 200/s
IDLE_BYTES = 2048  # opd RSS per watched, handled object
PLUGINS_THROUGHPUT = 0.9  # results/s with many plugins >= 90% of one plugin's

Result = dict[str, Any]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(value: float | None, target: float, better: Callable[[float, float], bool]) -> str:
    if value is None:
        return "n/a"
    return "ok" if better(value, target) else "MISSED"


def _by_contender(results: list[Result]) -> dict[str, Result]:
    return {r["contender"]: r for r in results if "error" not in r}


def _ratio(results: dict[str, Result], top: str, bottom: str, key: str) -> float | None:
    if top in results and bottom in results and results[bottom][key]:
        return float(results[top][key] / results[bottom][key])
    return None


def summarize(results: list[Result]) -> list[Result]:
    """One row per contender, in the order they first ran: each number the median of its successful runs."""
    rows = []
    for name in dict.fromkeys(r["contender"] for r in results):
        runs = [r for r in results if r["contender"] == name]
        ok = [r for r in runs if "error" not in r]
        row = dict(ok[0] if ok else runs[0])
        for key, value in row.items():
            if ok and isinstance(value, int | float) and not isinstance(value, bool):
                row[key] = statistics.median(r[key] for r in ok)
        row["runs"] = f"{len(ok)}/{len(runs)}"
        rows.append(row)
    return rows


def _row(result: Result, columns: Sequence[tuple[str, int]]) -> list[str]:
    if "error" in result:
        return [result["contender"], result["runs"], "FAILED", *["-"] * (len(columns) - 1)]
    return [result["contender"], result["runs"], *(_num(result.get(key), digits) for key, digits in columns)]


def backlog(results: list[Result]) -> str:
    columns = [("seconds", 1), ("per_second", 0), ("cpu_s", 1), ("peak_rss_mb", 0), ("server_cpu_s", 1),
               ("writes_per_object", 2)]
    headers = ["contender", "ok runs", "time s", "objects/s", "CPU s", "peak RSS MB", "apiserver+etcd CPU s",
               "API writes/object"]
    parts = []
    for n in sorted({r["n"] for r in results}):
        runs = summarize([r for r in results if r["n"] == n])
        ok = _by_contender(runs)
        opd_raw = _ratio(ok, "opd", "raw", "seconds")
        kopf_opd = _ratio(ok, "kopf", "opd", "seconds")
        rss = _ratio(ok, "opd", "kopf", "peak_rss_mb")
        scope = "" if n == TARGET_N else f" (targets are set at N={TARGET_N})"
        parts += [
            f"Backlog N={n}: from operator start until the observer sees all {n} results",
            table(headers, [_row(r, columns) for r in runs]),
            f"  opd/raw time   {_num(opd_raw, 2):>6}   target <= {OPD_OVER_RAW}: "
            f"{_verdict(opd_raw, OPD_OVER_RAW, operator.le)}{scope}",
            f"  Kopf/opd time  {_num(kopf_opd, 2):>6}   target >= {KOPF_OVER_OPD}: "
            f"{_verdict(kopf_opd, KOPF_OVER_OPD, operator.ge)}{scope}",
            f"  RSS opd/Kopf   {_num(rss, 2):>6}   target <= 0.33: "
            f"{_verdict(rss, RSS_OPD_OVER_KOPF, operator.le)}{scope}",
            "",
        ]
    return "\n".join(parts)


def live(results: list[Result]) -> str:
    columns = [("ready_s", 1), ("sent", 0), ("rate", 0), ("p50_ms", 0), ("p99_ms", 0), ("max_ms", 0),
               ("missing", 0), ("create_p50_ms", 0), ("seen_to_result_p50_ms", 0), ("seen_to_result_p99_ms", 0),
               ("cpu_s", 1), ("peak_rss_mb", 0), ("server_cpu_s", 1), ("bench_cpu_s", 1)]
    headers = ["contender", "ok runs", "ready s", "sent", "rate/s", "p50 ms", "p99 ms", "max ms", "missing",
               "create p50", "seen>result p50", "p99", "CPU s", "peak RSS MB", "server CPU s", "bench CPU s"]
    results = summarize(results)
    first = results[0]
    opd = _by_contender(results).get("opd")
    p99 = None if opd is None or opd["missing"] else opd["p99_ms"]
    return "\n".join([
        f"Live: {first['target_rate']:.0f} objects/s for {first['seconds']:.0f}s; latency from the create "
        "request's send time to the observer seeing the result",
        "(create: the create request's round trip; seen>result: the observer sees the object, then its result;"
        " CPU: during the load; server: apiserver+etcd; bench: this process, creating and observing)",
        table(headers, [_row(r, columns) for r in results]),
        f"  opd p99        {_num(p99, 0):>6}   target <= {LIVE_P99_MS:.0f} ms with none missing: "
        f"{_verdict(p99, LIVE_P99_MS, operator.le)}",
        "",
    ])


def idle(results: list[Result]) -> str:
    columns = [("rss_0_mb", 1), ("rss_n_mb", 1), ("bytes_per_object", 0)]
    results = summarize(results)
    n = results[0]["n"]
    headers = ["contender", "ok runs", "RSS, 0 objects MB", f"RSS, {n} objects MB", "bytes/object"]
    opd = _by_contender(results).get("opd")
    per_object = None if opd is None else opd["bytes_per_object"]
    return "\n".join([
        f"Idle memory: a fresh operator, ready and quiet, watching {n} already-handled objects vs none",
        table(headers, [_row(r, columns) for r in results]),
        f"  opd per object {_num(per_object, 0):>6}   target <= {IDLE_BYTES} B: "
        f"{_verdict(per_object, IDLE_BYTES, operator.le)}",
        "",
    ])


def plugins(results: list[Result]) -> str:
    columns = [("seconds", 1), ("results_per_second", 0), ("cpu_s", 1), ("peak_rss_mb", 0),
               ("watch_connections", 0), ("lists", 0), ("patches_per_object", 2)]
    headers = ["daemon", "ok runs", "time s", "results/s", "CPU s", "peak RSS MB", "watch connections", "LISTs",
               "PATCHes/object"]
    rows = summarize(results)
    ok = [r for r in rows if "error" not in r]
    one = next((r for r in ok if r["plugins"] == 1), None)
    many = next((r for r in ok if r["plugins"] > 1), None)
    ratio = None if one is None or many is None else many["results_per_second"] / one["results_per_second"]
    watches = None if many is None else many["watch_connections"]
    k = max(r["plugins"] for r in results)
    return "\n".join([
        f"Many plugins: opd start with {k} plugins vs 1, one on.create handler each on one resource; "
        f"{results[0]['n']} objects; time from the daemon's start; results/s (objects x plugins) from the "
        "first object done to the last",
        table(headers, [_row(r, columns) for r in rows]),
        f"  {k} plugins vs 1, results/s {_num(ratio, 2):>6}   target >= {PLUGINS_THROUGHPUT}: "
        f"{_verdict(ratio, PLUGINS_THROUGHPUT, operator.ge)}",
        f"  watch connections with {k} plugins {_num(watches, 0):>3}   target 1: "
        f"{_verdict(watches, 1, operator.eq)}",
        "",
    ])


def render(results: dict[str, list[Result]]) -> str:
    """Every scenario's table; with several runs of a contender, the medians (the JSON keeps each run)."""
    parts = []
    if results.get("backlog"):
        parts.append(backlog(results["backlog"]))
    if results.get("live"):
        parts.append(live(results["live"]))
    if results.get("idle"):
        parts.append(idle(results["idle"]))
    if results.get("plugins"):
        parts.append(plugins(results["plugins"]))
    return "\n".join(parts)


def write_json(path: Path, meta: dict[str, Any], results: dict[str, list[Result]]) -> None:
    path.write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
