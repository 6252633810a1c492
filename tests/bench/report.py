"""Tables for people: each scenario's medians with their range over rounds, the ratios taken round by round,
the machine's load while it ran; then the summary of the issues' goals. JSON for machines (every run)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import goals
from coldstart import OPD_RUN
from goals import Goal, Outcome, table
from stats import Result, Spread, number, ok, round_ratios, spread, values

GOAL_SIZES = (5000, 20000)  # the backlog sizes the issues set their goals at
WHOLE_CPU_SIZES = (5000,)  # issue #22's goal for the whole run's CPU
READY_SIZE, DAEMON_PLUGINS = 20000, 20  # issue #22's READY goal: opd start with 20 plugins over 20 000 objects
BACKLOG_TIME = Goal("opd/raw time", "<=", 1.2, "x", issue="#15 #22")
BACKLOG_CPU = Goal("opd/raw CPU per object, startup excluded (from the first LIST on)", "<=", 1.3, "x", issue="#22")
BACKLOG_CPU_WHOLE = Goal("opd/raw CPU per object, whole run (startup included)", "<=", 1.5, "x", issue="#22")
BACKLOG_KOPF = Goal("Kopf/opd time", ">=", 3.0, "x")
COLDSTART = Goal("cold start: opd run, one handler, CPU s to its first LIST (no kubernetes package)", "<=", 0.5,
                 " s", issue="#22")
LIVE_P50 = Goal("live: opd/raw p50 latency", "<=", 2.0, "x")
LIVE_P99 = Goal("live: opd/raw p99 latency", "<=", 1.5, "x")
STREAM_REQUESTS = Goal("idle streams: API requests a minute per quiet stream (its own WATCH and LIST)", "<=", 1.0)
MEMORY = Goal("idle memory per watched object, opd start with {k} plugins{span}", "<=", 1024, " B", 0)
READY = Goal("opd start with {k} plugins: READY=1 after its start, no object", "<=", 2.0, " s")
READY_LIST = Goal("opd start with {k} plugins: READY=1 after its LIST's last page, {n} objects", "<=", 2.0, " s",
                  issue="#22")
PLUGINS_RATE = Goal("many plugins: results/s with {k} plugins vs 1 (earlier target)", ">=", 0.9, "x")
PLUGINS_WATCHES = Goal("many plugins: watch connections with {k} plugins (earlier target)", "==", 1, "", 0)

Cell = str | Callable[[Result], float | None]


def _contenders(results: Sequence[Result]) -> list[str]:
    return list(dict.fromkeys(r["contender"] for r in results))


def _cell(results: Sequence[Result], contender: str, key: Cell, digits: int) -> str:
    found = spread(values(results, contender, key))
    return "-" if found is None else found.format(digits)


def _runs(results: Sequence[Result], contender: str) -> str:
    mine = [r for r in results if r["contender"] == contender]
    return f"{len(ok(mine))}/{len(mine)}"


def _table(results: Sequence[Result], columns: Sequence[tuple[str, Cell, int]], first: str = "contender") -> str:
    rows = [[name, _runs(results, name), *(_cell(results, name, key, digits) for _, key, digits in columns)]
            for name in _contenders(results)]
    return table([first, "ok runs", *(header for header, _, _ in columns)], rows)


def _ratio_line(label: str, ratios: Spread | None, note: str = "") -> str:
    text = "-" if ratios is None else ratios.format(2)
    rounds = "" if ratios is None else f"  ({ratios.count} round{'s' if ratios.count > 1 else ''})"
    return f"  {label:<34} {text}{rounds}{'  ' + note if note else ''}"


def _load(load: dict[str, float] | None) -> str:
    if not load:
        return ""
    return (f"  machine load (1-min average) during the scenario: {load['min']:.1f}-{load['max']:.1f}, "
            f"mean {load['mean']:.1f} (the bench itself adds ~1.5-2 while a contender works)")


def ratios(results: Sequence[Result], top: str, bottom: str, key: Cell) -> Spread | None:
    return spread(round_ratios(results, top, bottom, key))


# -- the scenarios ---------------------------------------------------------------------------------------------------
BACKLOG_TIME_COLUMNS: list[tuple[str, Cell, int]] = [
    ("time s", "seconds", 1), ("objects/s", "per_second", 0), ("CPU s", "cpu_s", 1),
    ("CPU s/1000 objects", "cpu_per_1000", 2), ("peak RSS MB", "peak_rss_mb", 0)]
BACKLOG_STARTUP_COLUMNS: list[tuple[str, Cell, int]] = [
    ("first LIST s", "first_list_s", 2), ("CPU s by then", "startup_cpu_s", 2), ("CPU s after it", "work_cpu_s", 1),
    ("CPU s/1000 objects after it", "work_cpu_per_1000", 2)]
BACKLOG_API_COLUMNS: list[tuple[str, Cell, int]] = [
    ("apiserver+etcd CPU s", "server_cpu_s", 1), ("object writes/object", "writes_per_object", 2),
    ("Events/object", "events_per_object", 2)]


def backlog(results: list[Result], load: dict[str, float] | None = None) -> str:
    parts = []
    for n in sorted({r["n"] for r in results}):
        runs = [r for r in results if r["n"] == n]
        parts += [
            f"Backlog N={n}: from operator start until the observer sees all {n} results "
            "(median, and the range over rounds)",
            _table(runs, BACKLOG_TIME_COLUMNS),
            "its startup: when it sent its first LIST of the objects (seconds after its start) and the CPU it had "
            "spent by then (imports, login, API discovery); the CPU after it is the work",
            _table(runs, BACKLOG_STARTUP_COLUMNS),
            "what it cost the API server (Events: counted once they stop coming)",
            _table(runs, BACKLOG_API_COLUMNS),
            "ratios taken within each round, then the median (range):",
            _ratio_line("opd/raw time", ratios(runs, "opd", "raw", "seconds"), f"goal {BACKLOG_TIME.target}"),
            _ratio_line("opd/raw CPU s, startup excluded", ratios(runs, "opd", "raw", "work_cpu_per_1000"),
                        f"goal {BACKLOG_CPU.target}"),
            _ratio_line("opd/raw CPU s, whole run", ratios(runs, "opd", "raw", "cpu_per_1000"),
                        f"goal {BACKLOG_CPU_WHOLE.target}" + (" (at N=5000)" if n not in WHOLE_CPU_SIZES else "")),
            _ratio_line("Kopf/opd time", ratios(runs, "kopf", "opd", "seconds"), f"goal {BACKLOG_KOPF.target}"),
            _ratio_line("opd+events/opd time", ratios(runs, "opd+events", "opd", "seconds"),
                        "Event posting on vs off"),
            _ratio_line("opd+events/raw time", ratios(runs, "opd+events", "raw", "seconds"), "opd as it comes"),
            _ratio_line("peak RSS opd/Kopf", ratios(runs, "opd", "kopf", "peak_rss_mb")),
        ]
        events = spread(values(runs, "opd+events", "events_done_s"))
        if events is not None:
            parts.append(f"  opd+events: its last Event written {events.format(1)} s after its start "
                         "(results came first: Events are posted from a queue)")
        parts.append("")
    parts.append(_load(load))
    return "\n".join(parts)


COLDSTART_COLUMNS: list[tuple[str, Cell, int]] = [
    ("CPU s to its first LIST", "cpu_s", 2), ("importing opd", "import_s", 2),
    ("then to its first request", "connect_s", 2), ("then API discovery", "discovery_s", 2)]


def coldstart(results: list[Result], load: dict[str, float] | None = None) -> str:
    runs = [r for r in ok(results) if r["contender"] == OPD_RUN]
    return "\n".join([
        "Cold start: fresh processes, each ending itself as it sends its first LIST: opd run with one handler "
        "(on.create, configmaps; without the kubernetes package, as pip install opd has it) and the raw client; the "
        "process's CPU seconds by then, from its start (median, and the range over rounds)",
        _table(results, COLDSTART_COLUMNS),
        _ratio_line("opd/raw CPU s to the first LIST", ratios(results, OPD_RUN, "raw", "cpu_s")),
        f"  kubernetes_asyncio's models imported by opd's first LIST in {sum(bool(r.get('models')) for r in runs)} "
        f"of {len(runs)} rounds",
        _load(load),
        "",
    ])


LIVE_LATENCY: list[tuple[str, Cell, int]] = [
    ("p50 ms", "p50_ms", 0), ("p99 ms", "p99_ms", 0), ("max ms", "max_ms", 0), ("missing", "missing", 0),
    ("create p50 ms", "create_p50_ms", 0), ("seen>result p50", "seen_to_result_p50_ms", 0),
    ("seen>result p99", "seen_to_result_p99_ms", 0)]
LIVE_COST: list[tuple[str, Cell, int]] = [
    ("ready s", "ready_s", 1), ("sent", "sent", 0), ("rate/s", "rate", 0), ("CPU s", "cpu_s", 1),
    ("apiserver+etcd CPU s", "server_cpu_s", 1), ("bench CPU s", "bench_cpu_s", 1),
    ("loop lag p99 ms", "lag_p99_ms", 1), ("loop lag max ms", "lag_max_ms", 0)]


def live(results: list[Result], load: dict[str, float] | None = None) -> str:
    first = results[0]
    return "\n".join([
        f"Live: {first['target_rate']:.0f} objects/s for {first['seconds']:.0f}s; latency from the create "
        "request's send time to the observer seeing the result (median, and the range over rounds)",
        "(create: the create request's round trip; seen>result: from the observer seeing the object to seeing "
        "its result; a result that never came counts as infinitely late)",
        _table(results, LIVE_LATENCY),
        "what it cost during the load (bench: this process, creating and observing; loop lag: how late opd's "
        "10 ms ticker came)",
        _table(results, LIVE_COST),
        "ratios taken within each round, then the median (range):",
        _ratio_line("opd/raw p50", ratios(results, "opd", "raw", "p50_ms"), f"goal {LIVE_P50.target}"),
        _ratio_line("opd/raw p99", ratios(results, "opd", "raw", "p99_ms"), f"goal {LIVE_P99.target}"),
        _ratio_line("opd/raw CPU s", ratios(results, "opd", "raw", "cpu_s")),
        _load(load),
        "",
    ])


PAIRED_LATENCY: list[tuple[str, Cell, int]] = [
    ("added p50 ms", "added_p50_ms", 1), ("added p99 ms", "added_p99_ms", 1),
    ("raw over opd p99 ms", "raw_added_p99_ms", 1), ("opd first", "opd_first", 2),
    ("raw p50 ms", "raw_p50_ms", 0), ("raw p99 ms", "raw_p99_ms", 0), ("opd p50 ms", "opd_p50_ms", 0),
    ("opd p99 ms", "opd_p99_ms", 0), ("missing raw", "missing_raw", 0), ("missing opd", "missing_opd", 0)]
PAIRED_COST: list[tuple[str, Cell, int]] = [
    ("sent", "sent", 0), ("rate/s", "rate", 0), ("create p50 ms", "create_p50_ms", 0),
    ("PATCHes/object, both", "patches_per_object", 2), ("raw CPU s", "raw_cpu_s", 1),
    ("opd CPU s", "opd_cpu_s", 1), ("apiserver+etcd CPU s", "server_cpu_s", 1), ("bench CPU s", "bench_cpu_s", 1),
    ("others' cores", "others_cores", 1), ("loop lag p99 ms", "lag_p99_ms", 1)]


def paired(results: list[Result], load: dict[str, float] | None = None) -> str:
    first = results[0]
    counted = [r for r in results if not r.get("saturated")]
    return "\n".join([
        f"Live, paired: raw and opd both on the same {first['target_rate']:.0f} objects/s for {first['seconds']:.0f}s, "
        "each writing its own status field; added: opd's latency minus raw's, object by object (latency: the "
        "create request's send time to the observer seeing that one's result), its p50 and p99 in each round "
        "(median, and the range over the rounds the server kept up in); opd first: the share of objects opd "
        "answered before raw; raw over opd: the same p99 the other way round (raw's latency minus opd's)",
        _table(counted, PAIRED_LATENCY, "pairs") if counted else "  no round the server kept up in",
        "what it cost during the load, every round (others' cores: what every other process on the machine took "
        "meanwhile)",
        _table(results, PAIRED_COST, "pairs"),
        f"  saturated rounds (raw's own p50 over 1 s: the server fell behind; not counted in the goals): "
        f"{_saturated(results)}",
        *(f"    round {r['round']}: raw p50 {number(r.get('raw_p50_ms'), 0)} ms; opd added p50 "
          f"{number(r.get('added_p50_ms'))} ms, p99 {number(r.get('added_p99_ms'))} ms; other processes took "
          f"{number(r.get('others_cores'))} cores" for r in ok(results) if r.get("saturated")),
        _ratio_line("opd/raw p99, unpaired", _paired(results, "opd_p99_over_raw"),
                    "each one's own p99, same round"),
        _load(load),
        "",
    ])


def _paired(results: Sequence[Result], key: str, *, counted: bool = False) -> Spread | None:
    """``key`` of every successful paired round (each holds both contenders), median and range; ``counted``:
    of the rounds the server kept up in only."""
    return spread(float(r[key]) for r in ok(results)
                  if r.get(key) is not None and not (counted and r.get("saturated")))


def _saturated(results: Sequence[Result]) -> str:
    good = ok(results)
    return f"{sum(bool(r.get('saturated')) for r in good)} of {len(good)}"


def _paired_outcome(goal: Goal, runs: Sequence[Result], key: str) -> Outcome:
    """Judged on the rounds the server kept up in; the saturated ones are named, not hidden."""
    if not runs:
        return Outcome(goal, None, "paired not run")
    if not ok(runs):
        return Outcome(goal, None, "failed")
    measured = _paired(runs, key, counted=True)
    saturated = sum(bool(r.get("saturated")) for r in ok(runs))
    if measured is None:
        every = _paired(runs, key)
        return Outcome(goal, None, "every round saturated" + ("" if every is None else f": {every.format(1)} ms"))
    return Outcome(goal, measured, f"{saturated} saturated round(s) not counted" if saturated else "")


def idle(results: list[Result], load: dict[str, float] | None = None) -> str:
    n = results[0]["n"]
    small = next((r["n_small"] for r in ok(results)), "N1")
    memory: list[tuple[str, Cell, int]] = [
        ("RSS, 0 objects MB", "rss_0_mb", 1), (f"RSS, {small} MB", "rss_small_mb", 1), (f"RSS, {n} MB", "rss_n_mb", 1),
        (f"B/object, {small} to {n}", "bytes_per_object", 0), ("B/object, 0 to N", "bytes_per_object_from_empty", 0)]
    ready: list[tuple[str, Cell, int]] = [
        ("READY=1 s, 0 objects", "ready_0_s", 2), (f"{small} objects", "ready_small_s", 2),
        (f"{n} objects", "ready_n_s", 2), (f"after the LIST, {small}", "ready_list_small_s", 2),
        (f"after the LIST, {n}", "ready_list_n_s", 2), (f"LIST s, {small}", "list_small_s", 2),
        (f"LIST s, {n}", "list_n_s", 2)]
    daemons = [r for r in results if "ready_0_s" in r or ("error" in r and r["contender"].startswith("opd start"))]
    lines = [
        "Idle memory: fresh operators, ready and quiet, watching already-handled objects: what a watched object "
        f"costs is the RSS difference from {small} to {n} objects, per object (0 to N also counts what listing "
        "leaves behind)",
        _table(results, memory),
    ]
    if daemons:
        lines += ["opd start: READY=1 on systemd's socket, seconds after its start (the API answers all along), and "
                  "after its LIST's last page (by the daemon's log; the LIST s: how long that LIST took in it)",
                  _table(daemons, ready, "daemon")]
    lines += [_load(load), ""]
    return "\n".join(lines)


def streams(results: list[Result], load: dict[str, float] | None = None) -> str:
    columns: list[tuple[str, Cell, int]] = [
        ("streams", "streams", 0), ("minutes", lambda r: r["seconds"] / 60, 1),
        ("watch timeout s", lambda r: r.get("watch_timeout"), 0),
        ("requests/min", "requests_per_min", 1), ("of which unlisted", "unlisted_per_min", 1),
        ("WATCH/min", "watch_per_min", 1), ("new connections/min", "connections_per_min", 1),
        ("per stream/min", "stream_requests_per_stream_min", 2), ("per cluster/min", "cluster_requests_per_min", 1),
        ("opd CPU s/min", "cpu_s_per_min", 2), ("RSS MB", "rss_mb", 0)]
    lines = [
        "Idle cost: opd watching empty namespaces, one quiet watch stream each, for at least two watch timeouts; "
        "every request counted by the API server as it came in (unlisted: not in apiserver_request_total, e.g. "
        "GET /version), new connections by a TCP proxy in between; per stream: the requests on the watched "
        "resource over the streams; per cluster: every other request (the liveness probe, discovery)",
        _table(results, columns),
    ]
    for result in ok(results):
        before, after = result["open_watches"]
        lines.append(f"  open WATCH streams on the resource: {before} at the start, {after} at the end")
        top = sorted(result["requests"].items(), key=lambda kv: -kv[1])[:8]
        if top:
            lines.append("  in apiserver_request_total (a WATCH counted as it ends): "
                         + ", ".join(f"{key} x{count}" for key, count in top))
    lines += [_load(load), ""]
    return "\n".join(lines)


def plugins(results: list[Result], load: dict[str, float] | None = None) -> str:
    columns: list[tuple[str, Cell, int]] = [
        ("time s", "seconds", 1), ("results/s", "results_per_second", 0), ("CPU s", "cpu_s", 1),
        ("peak RSS MB", "peak_rss_mb", 0), ("watch connections", "watch_connections", 0), ("LISTs", "lists", 0),
        ("PATCHes/object", "patches_per_object", 2)]
    k = max(r["plugins"] for r in results)
    many = f"{k} plugins"
    return "\n".join([
        f"Many plugins: opd start with {k} plugins vs 1, one on.create handler each on one resource; "
        f"{results[0]['n']} objects; time from the daemon's start; results/s (objects x plugins) from the "
        "first object done to the last",
        _table(results, columns, "daemon"),
        _ratio_line(f"results/s, {k} plugins vs 1", ratios(results, many, "1 plugin", "results_per_second"),
                    f"goal {PLUGINS_RATE.target}"),
        _load(load),
        "",
    ])


RENDERERS: dict[str, Callable[[list[Result], dict[str, float] | None], str]] = {
    "coldstart": coldstart, "backlog": backlog, "live": live, "streams": streams, "idle": idle, "plugins": plugins}

RENDERERS["paired"] = paired


# -- the goals -------------------------------------------------------------------------------------------------------
def _named(goal: Goal, prefix: str = "", **fields: Any) -> Goal:
    """The goal with its blanks filled in: {k} plugins, N={n}."""
    return dataclasses.replace(goal, what=(prefix + goal.what).format(**fields))


def _single(value: float | None) -> Spread | None:
    return None if value is None else Spread(value, value, value, 1)


def _outcome(goal: Goal, measured: Spread | None, why_not: str) -> Outcome:
    return Outcome(goal, measured, "" if measured is not None else why_not)


def outcomes(results: dict[str, list[Result]]) -> list[Outcome]:
    """Every goal of the issues with what this run measured for it (None where it did not)."""
    found: list[Outcome] = []
    runs = results.get("coldstart") or []
    found.append(_outcome(COLDSTART, spread(values(runs, OPD_RUN, "cpu_s")),
                          "failed" if runs else "coldstart not run"))
    runs = results.get("backlog") or []
    for n in sorted({r["n"] for r in runs} | set(GOAL_SIZES)):
        mine = [r for r in runs if r["n"] == n]
        why = "not in this run's backlog sizes" if not mine else "no round with both"
        judged = [(BACKLOG_TIME, "opd", "raw", "seconds", why),
                  (BACKLOG_CPU, "opd", "raw", "work_cpu_per_1000",
                   why if not ok(mine) or values(mine, "opd", "work_cpu_per_1000") else "opd's first LIST not noted"),
                  (BACKLOG_KOPF, "kopf", "opd", "seconds", why)]
        if n in WHOLE_CPU_SIZES:
            judged.insert(2, (BACKLOG_CPU_WHOLE, "opd", "raw", "cpu_per_1000", why))
        for goal, top, bottom, key, why_not in judged:
            found.append(_outcome(_named(goal, n=n, prefix="backlog N={n}: "), ratios(mine, top, bottom, key),
                                  why_not))
    runs = results.get("live") or []
    why = "no live round with both raw and opd" if runs else "live not run"
    found += [_outcome(LIVE_P50, ratios(runs, "opd", "raw", "p50_ms"), why),
              _outcome(LIVE_P99, ratios(runs, "opd", "raw", "p99_ms"), why)]
    runs = results.get("paired") or []
    found += [_paired_outcome(goals.PAIRED_P50, runs, "added_p50_ms"),
              _paired_outcome(goals.PAIRED_P99, runs, "added_p99_ms")]
    runs = ok(results.get("streams") or [])
    found.append(_outcome(STREAM_REQUESTS, spread(r["stream_requests_per_stream_min"] for r in runs),
                          "streams not run" if not results.get("streams") else "failed"))
    runs = results.get("idle") or []
    daemon = next((r for r in runs if r["contender"].startswith("opd start")), None)
    why = "idle not run" if not runs else ("failed" if daemon is not None else "no plugins")
    good = daemon if daemon is not None and "error" not in daemon else {}
    k, n = good.get("plugins", DAEMON_PLUGINS), runs[0]["n"] if runs else READY_SIZE
    span = f" ({good['n_small']} to {good['n']} objects)" if "n_small" in good else ""
    found += [_outcome(_named(MEMORY, k=k, span=span), _single(good.get("bytes_per_object")), why),
              _outcome(_named(READY, k=k), _single(good.get("ready_0_s")), why),
              _outcome(_named(READY_LIST, k=k, n=n), _single(good.get("ready_list_n_s")),
                       "no LIST of more than one page in the daemon's log" if good else why)]
    runs = results.get("plugins") or []
    why = "failed" if runs else "plugins not run"
    k = max((r["plugins"] for r in runs), default=DAEMON_PLUGINS)
    found.append(_outcome(_named(PLUGINS_RATE, k=k),
                          ratios(runs, f"{k} plugins", "1 plugin", "results_per_second"), why))
    found.append(_outcome(_named(PLUGINS_WATCHES, k=k),
                          spread(values(runs, f"{k} plugins", "watch_connections")), why))
    return found


def reported(results: dict[str, list[Result]]) -> list[tuple[str, str]]:
    """Figures the issue asks to report next to the goals, without a target of their own."""
    lines: list[tuple[str, str]] = []
    runs = results.get("coldstart") or []
    for key, label in (("import_s", "importing opd"), ("connect_s", "then to its first request"),
                       ("discovery_s", "then API discovery")):
        figure = spread(values(runs, OPD_RUN, key))
        if figure is not None:
            lines.append((f"cold start: opd run's CPU s {label}", figure.format(2)))
    raw = spread(values(runs, "raw", "cpu_s"))
    if raw is not None:
        lines.append(("cold start: the raw client's CPU s to its first LIST", raw.format(2)))
    runs = results.get("backlog") or []
    for n in sorted({r["n"] for r in runs}):
        mine = [r for r in runs if r["n"] == n]
        whole = ratios(mine, "opd", "raw", "cpu_per_1000")
        if n not in WHOLE_CPU_SIZES and whole is not None:
            lines.append((f"backlog N={n}: opd/raw CPU s per 1000 objects, whole run", whole.format(2)))
        events = spread(values(mine, "opd+events", "events_per_object"))
        if events is not None:
            on_off = ratios(mine, "opd+events", "opd", "seconds")
            lines.append((f"backlog N={n}: Events written per object, posting on (opd's default)",
                          events.format(2)))
            lines.append((f"backlog N={n}: time with posting on / off", "-" if on_off is None else on_off.format(2)))
        for name in ("raw", "opd", "kopf"):
            cpu = spread(values(mine, name, "cpu_per_1000"))
            if cpu is not None:
                lines.append((f"backlog N={n}: {name} CPU s per 1000 objects", cpu.format(2)))
            work = spread(values(mine, name, "work_cpu_per_1000"))
            startup = spread(values(mine, name, "startup_cpu_s"))
            if work is not None and startup is not None:
                lines.append((f"backlog N={n}: {name} CPU s by its first LIST / per 1000 objects after it",
                              f"{startup.format(2)} / {work.format(2)}"))
    runs = results.get("live") or []
    for key, label in (("lag_p99_ms", "p99"), ("lag_max_ms", "max")):
        lag = spread(values(runs, "opd", key))
        if lag is not None:
            lines.append((f"live: opd event loop lag {label} (10 ms ticker), ms", lag.format(1)))
    for name in _contenders(runs):
        p50, p99 = spread(values(runs, name, "p50_ms")), spread(values(runs, name, "p99_ms"))
        if p50 is not None and p99 is not None:
            lines.append((f"live: {name} p50 / p99 ms", f"{p50.format(0)} / {p99.format(0)}"))
    runs = results.get("paired") or []
    for key, label in (("raw_added_p99_ms", "raw's latency over opd's, p99 (the same figure the other way round)"),
                       ("opd_p99_over_raw", "opd/raw p99 of each one's own latencies (unpaired, same moment)"),
                       ("raw_p99_ms", "raw p99 ms"), ("opd_p99_ms", "opd p99 ms")):
        figure = _paired(runs, key)
        if figure is not None:
            digits = {"opd_p99_over_raw": 2, "raw_added_p99_ms": 1}.get(key, 0)
            lines.append((f"live, paired: {label}", figure.format(digits)))
    for result in ok(results.get("streams") or []):
        lines.append(("idle streams: requests a minute per cluster (liveness probe, discovery)",
                      number(result["cluster_requests_per_min"], 1)))
        lines.append(("idle streams: WATCH requests a minute per stream", number(result["watch_per_stream_min"], 2)))
        lines.append(("idle streams: new TLS connections a minute per stream",
                      number(result["connections_per_stream_min"], 2)))
    for result in ok(results.get("idle") or []):
        lines.append((f"idle memory per watched object, {result['contender']}",
                      f"{number(result['bytes_per_object'], 0)} B"))
        if "ready_0_s" not in result:
            continue
        small, n = result["n_small"], result["n"]
        lines.append((f"{result['contender']}: READY=1 after its start, {small} / {n} objects, s",
                      f"{number(result['ready_small_s'], 2)} / {number(result['ready_n_s'], 2)}"))
        lines.append((f"{result['contender']}: READY=1 after its LIST's last page, {small} objects, s",
                      number(result.get("ready_list_small_s"), 2)))
        lines.append((f"{result['contender']}: its LIST of {small} / {n} objects took, s",
                      f"{number(result.get('list_small_s'), 2)} / {number(result.get('list_n_s'), 2)}"))
    return lines


def summary(results: dict[str, list[Result]]) -> str:
    parts = [goals.render(outcomes(results))]
    extra = reported(results)
    if extra:
        parts += ["", "Also measured (no target):", table(["figure", "value"], [list(row) for row in extra],
                                                          right=False)]
    return "\n".join(parts)


def render(results: dict[str, list[Result]], loads: dict[str, dict[str, float]] | None = None) -> str:
    """Every scenario's table, in the order they ran; the JSON keeps each run."""
    loads = loads or {}
    return "\n".join(RENDERERS[name](runs, loads.get(name)) for name, runs in results.items()
                     if name in RENDERERS and runs)


def write_json(path: Path, meta: dict[str, Any], results: dict[str, list[Result]]) -> None:
    def finite(value: Any) -> Any:  # JSON has no infinity: a latency that never came is null
        if isinstance(value, float) and math.isinf(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value

    path.write_text(json.dumps(finite({"meta": meta, **results}), indent=2) + "\n")
