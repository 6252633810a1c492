"""Scenario "paired", live latency that the machine's noise cannot swamp: raw and opd both ready on one namespace,
objects created at a steady rate (100/s: at 200/s two clients and the server saturate 2 cores), each contender
writing its own status field (raw: ``.status.raw`` through ``BENCH_RESULT_KEY``; opd: its handler's
``.status.create_fn``). One observer, on one watch stream, notes when each result first appears.

Run one after the other, the raw client's own p99 ranged from 32 ms to 2.8 s between rounds: a p99 ratio of two
runs mostly measures what else the machine did meanwhile. Here both contenders answer the same object at the same
moment of the machine, so each object gives a pair, and opd's added latency is opd's minus raw's object by object
(the create's send time cancels out); its p50 and p99 per round, then the median over rounds, are the goals.
A result that never came counts as infinitely late, as in the live scenario.

Pairing cancels what hits both contenders alike; it cannot undo a server that falls behind the load. A round in
which the raw client's own median latency exceeds 1 s (100 objects queued at 100/s: busy neighbours on the
machine) measured the API server's queue, where whose PATCH is served first decides the difference: it is shown,
marked saturated, and not counted in the goals. Each round also says how many cores everything else on the
machine took meanwhile (all CPU time from /proc/stat minus the contenders', the server's and the bench's).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from children import Child
from contender_raw import RESULT_KEY_ENV
from contenders import OPD, TICKER_ENV, Contender
from kubeapi import PLURAL, RESULT_KEY, Api, Observer, create_namespace, create_object, request_counts
from live import GRACE, lag_figures, loop_lags, own_cpu, steady_load
from stage import Stage, rotated, wait_quiet
from stats import percentile

RAW_KEY, OPD_KEY = "raw", RESULT_KEY  # where each one writes its result in .status
RAW = Contender("raw", "contender_raw.py", {RESULT_KEY_ENV: RAW_KEY})
PAIR = "opd vs raw"  # the one "contender" of this scenario's results: each run holds both
RATE = 100.0  # objects/s (the default of --paired-rate)
SATURATED_MS = 1000.0  # the raw client's own p50 above this: the server fell behind, the round is not counted
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy since boot (every core, every process): /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    return sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4)) / _CLK_TCK


class PairObserver(Observer):
    """An observer of several result keys at once: when each key first appeared in each object's .status.

    ``seen`` (the base class's) holds the objects that carry every key: waiting on it waits for both contenders.
    """

    def __init__(self, api: Api, namespace: str, keys: Sequence[str]) -> None:
        super().__init__(api, namespace, done=lambda status: all(key in status for key in keys))
        self.keys = tuple(keys)
        self.first: dict[str, dict[str, float]] = {key: {} for key in keys}  # key -> name -> when first seen

    def _saw(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        for key in self.keys:
            if key in status:
                self.first[key].setdefault(name, now)
        super()._saw(obj)


# -- the pairing arithmetic -------------------------------------------------------------------------------------------
def latency(sent: float, seen: float | None) -> float:
    """Seconds from the create's send time to the result seen; infinite when it never came."""
    return math.inf if seen is None else seen - sent


def added_latencies(sent: Mapping[str, float], raw: Mapping[str, float], opd: Mapping[str, float]) -> list[float]:
    """opd's latency minus raw's, for every object sent (in seconds). Only opd's result missing: +inf; only raw's:
    -inf; neither: no pair (nothing to compare; the missing counts say so)."""
    added = []
    for name, at in sent.items():
        if name in raw or name in opd:
            added.append(latency(at, opd.get(name)) - latency(at, raw.get(name)))
    return added


def pair_figures(sent: Mapping[str, float], raw: Mapping[str, float], opd: Mapping[str, float]) -> dict[str, Any]:
    """One round's figures, in ms: opd's added latency (p50, p99 of the differences object by object), and each
    contender's own latency percentiles, whose ratio is the unpaired figure."""
    if not sent:
        return {"sent": 0, "pairs": 0}
    raw_ms = [latency(at, raw.get(name)) * 1000 for name, at in sent.items()]
    opd_ms = [latency(at, opd.get(name)) * 1000 for name, at in sent.items()]
    added_ms = [d * 1000 for d in added_latencies(sent, raw, opd)]
    raw_p99, opd_p99 = percentile(raw_ms, 99), percentile(opd_ms, 99)
    ratio = opd_p99 / raw_p99 if raw_p99 else math.inf
    raw_p50 = percentile(raw_ms, 50)
    figures: dict[str, Any] = {
        "sent": len(sent), "pairs": len(added_ms),
        "missing_raw": sum(name not in raw for name in sent), "missing_opd": sum(name not in opd for name in sent),
        "raw_p50_ms": raw_p50, "raw_p99_ms": raw_p99, "saturated": raw_p50 > SATURATED_MS,
        "opd_p50_ms": percentile(opd_ms, 50), "opd_p99_ms": opd_p99,
        "opd_p99_over_raw": None if math.isnan(ratio) else ratio,  # both infinite: no ratio
    }
    if added_ms:
        # The same figure the other way round: how late raw's tail comes after opd's on the same objects; what a
        # machine's stalls of one process or the other alone leave in the pairs, whichever the framework.
        figures |= {"added_p50_ms": percentile(added_ms, 50), "added_p99_ms": percentile(added_ms, 99),
                    "raw_added_p99_ms": percentile([-d for d in added_ms], 99),
                    "opd_first": sum(d < 0 for d in added_ms) / len(added_ms)}
    return figures


# -- the scenario -----------------------------------------------------------------------------------------------------
async def wait_both_ready(stage: Stage, observer: PairObserver, children: Sequence[Child], namespace: str, *,
                          probe: str = "probe", timeout: float = 120.0) -> tuple[str, Child] | None:
    """Both are ready when a probe object created now carries both results; else why not, and whose fault."""
    await create_object(stage.api, namespace, probe)
    deadline = time.monotonic() + timeout
    while not await observer.wait(lambda: probe in observer.seen, timeout=0.5):
        for child in children:
            if not child.alive():
                return f"{child.name} {child.describe_exit()} before it was ready", child
        if time.monotonic() > deadline:
            late = [c for c, key in zip(children, (RAW_KEY, OPD_KEY), strict=True) if probe not in observer.first[key]]
            child = late[0] if late else children[0]
            return f"probe object not handled by {child.name} within {timeout:.0f}s", child
    return None


async def measure(stage: Stage, round_: int, rate: float, seconds: float) -> dict[str, Any]:
    what = f"paired round {round_}"
    namespace = await create_namespace(stage.api, "paired")
    observer = PairObserver(stage.api, namespace, (RAW_KEY, OPD_KEY))
    await observer.start()
    await stage.quiesce()
    ticks = stage.log_path(f"ticks-{namespace}.txt")
    started: dict[str, Child] = {}
    try:
        for contender in rotated([RAW, OPD], round_ - 1):  # who starts first changes with the round
            env = {TICKER_ENV: str(ticks)} if contender.framework == "opd" else {}
            started[contender.framework] = stage.spawn(contender, namespace, env=env)
        children = [started["raw"], started["opd"]]
        failed = await wait_both_ready(stage, observer, children, namespace)
        if failed is not None:
            return stage.fail(what, *failed)
        # A moment with half a core to spare, if one comes within 30 s: pairing cancels noise, not saturation.
        spare = await wait_quiet(machine_cpu, quiet=(os.cpu_count() or 2) - 0.5, most=30.0)
        cpu = {name: child.cpu_seconds() for name, child in started.items()}
        server_cpu, bench_cpu, machine = stage.server_cpu(), own_cpu(), machine_cpu()
        requests = await request_counts(stage.api)
        began = time.monotonic()
        load = await steady_load(stage.api, namespace, rate, seconds)
        expected = len(load.sent) + 1  # and the probe
        await observer.wait(lambda: len(observer.seen) >= expected, timeout=GRACE)
        ended = max([began, *observer.seen.values()])
        used = {"raw_cpu_s": started["raw"].cpu_seconds() - cpu["raw"],
                "opd_cpu_s": started["opd"].cpu_seconds() - cpu["opd"],
                "server_cpu_s": stage.server_cpu() - server_cpu, "bench_cpu_s": own_cpu() - bench_cpu}
        others = machine_cpu() - machine - sum(used.values())  # whatever else ran on the machine meanwhile
        requests = await request_counts(stage.api) - requests
        patches = sum(count for key, count in requests.items() if key.startswith(f"PATCH {PLURAL}"))
        figures = pair_figures(load.sent, observer.first[RAW_KEY], observer.first[OPD_KEY])
        if not figures["pairs"]:
            return stage.fail(what, "no result seen for any object", started["opd"])
        create = [load.answered[name] - load.sent[name] for name in load.answered]
        return {"rate": load.rate, "spare_core_at_start": spare, **figures, **used,
                "create_p50_ms": percentile(create, 50) * 1000, "patches_per_object": patches / len(load.sent),
                "others_cores": max(0.0, others) / max(1e-9, time.monotonic() - began),
                **lag_figures(loop_lags(ticks, began, ended))}
    finally:
        for child in started.values():
            child.stop()
        await observer.close()


def describe(result: dict[str, Any]) -> str:
    lag = f"; loop lag p99 {result['lag_p99_ms']:.1f} ms" if "lag_p99_ms" in result else ""
    lag += f"; other processes took {result['others_cores']:.1f} cores" if "others_cores" in result else ""
    lag += "; SATURATED: raw's own p50 over 1 s, not counted" if result.get("saturated") else ""
    return (f"opd adds p50 {result['added_p50_ms']:.1f} ms, p99 {result['added_p99_ms']:.1f} ms "
            f"(raw over opd, p99: {result['raw_added_p99_ms']:.1f} ms) "
            f"(raw p50 {result['raw_p50_ms']:.0f} / p99 {result['raw_p99_ms']:.0f} ms, opd p50 "
            f"{result['opd_p50_ms']:.0f} / p99 {result['opd_p99_ms']:.0f} ms), missing raw {result['missing_raw']}, "
            f"opd {result['missing_opd']}{lag}")


async def run_paired(stage: Stage, rate: float, seconds: float) -> list[dict[str, Any]]:
    results = []
    for round_ in range(1, stage.rounds.rounds + 1):
        result = {"scenario": "paired", "contender": PAIR, "round": round_, "target_rate": rate, "seconds": seconds,
                  **await measure(stage, round_, rate, seconds)}
        if "error" not in result:
            print(f"  paired round {round_}: {describe(result)}", flush=True)
        results.append(result)
    return results
