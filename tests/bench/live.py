"""Scenario 2, live latency: a ready operator; objects created at a steady rate;
latency from the client's send time to the observer seeing the result.

Raw and opd run in every round (Kopf in the first rounds only), in a rotating order; the goals are
opd's p50 and p99 as ratios to the raw client's of the same round. The opd contender runs a 10 ms
ticker on its event loop (``BENCH_TICKER``): how late its ticks come during the load is the loop lag.
An object whose result never came counts as infinitely late.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contenders import TICKER_ENV, Contender
from kubeapi import Api, Observer, create_namespace, create_object
from stage import Stage, wait_ready
from stats import percentile

GRACE = 30.0  # seconds after the load for the last results; what is missing then is reported missing


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Load:
    sent: dict[str, float] = field(default_factory=dict)  # name -> when its create request was sent
    answered: dict[str, float] = field(default_factory=dict)  # name -> when the create was answered
    rate: float = 0.0  # achieved


async def steady_load(api: Api, namespace: str, rate: float, seconds: float) -> Load:
    """Create ``rate * seconds`` objects on a fixed schedule (each on time, whatever the others wait for)."""
    load = Load()
    tasks: list[asyncio.Task[None]] = []

    async def send(name: str, index: int) -> None:
        load.sent[name] = time.monotonic()
        await create_object(api, namespace, name, index)
        load.answered[name] = time.monotonic()

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(send(f"live-{i:06d}", i)))
    load.rate = len(tasks) / max(1e-9, time.monotonic() - started)
    await asyncio.gather(*tasks)
    return load


def latencies(load: Load, observer: Observer) -> dict[str, Any]:
    """Send -> result seen, and its parts: the create's round trip, and the object seen -> result seen."""
    done = [name for name in load.sent if name in observer.seen]
    # The missing ones count as infinitely late: 1 % missing makes the p99 infinite, as it should.
    total = [observer.seen[n] - load.sent[n] if n in observer.seen else math.inf for n in load.sent]
    create = [load.answered[n] - load.sent[n] for n in load.answered]
    operator = [observer.seen[n] - observer.added[n] for n in done]
    return {"sent": len(load.sent), "missing": len(load.sent) - len(done),
            "p50_ms": percentile(total, 50) * 1000, "p99_ms": percentile(total, 99) * 1000,
            "max_ms": max(total) * 1000, "create_p50_ms": percentile(create, 50) * 1000,
            "seen_to_result_p50_ms": percentile(operator, 50) * 1000,
            "seen_to_result_p99_ms": percentile(operator, 99) * 1000}


def loop_lags(path: Path, start: float, end: float) -> list[float]:
    """The ticker's lags (ms) of the lines written between ``start`` and ``end`` (monotonic seconds)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    lags: list[float] = []
    for line in lines:
        try:
            at, *values = (float(field) for field in line.split())
        except ValueError:  # an empty line, or the one being written as we read
            continue
        if start <= at <= end:
            lags += values
    return lags


def lag_figures(lags: list[float]) -> dict[str, float]:
    if not lags:
        return {}
    return {"lag_p50_ms": percentile(lags, 50), "lag_p99_ms": percentile(lags, 99), "lag_max_ms": max(lags),
            "ticks": len(lags)}


async def measure(stage: Stage, contender: Contender, rate: float, seconds: float) -> dict[str, Any]:
    what = f"live {contender.name}"
    namespace = await create_namespace(stage.api, f"live-{contender.name}")
    observer = await Observer(stage.api, namespace).start()
    await stage.quiesce()
    ticks = stage.log_path(f"ticks-{namespace}.txt")
    env = {TICKER_ENV: str(ticks)} if contender.framework == "opd" else {}
    child = stage.spawn(contender, namespace, env=env)
    try:
        why = await wait_ready(stage, observer, child, namespace)
        if why is not None:
            return stage.fail(what, why, child)
        ready = time.monotonic() - child.started_at
        cpu, server_cpu, bench_cpu = child.cpu_seconds(), stage.server_cpu(), own_cpu()
        started = time.monotonic()
        load = await steady_load(stage.api, namespace, rate, seconds)
        expected = len(load.sent) + 1  # and the probe
        await observer.wait(lambda: len(observer.seen) >= expected, timeout=GRACE)
        ended = max([started, *observer.seen.values()])
        usage = child.usage()
        if not any(name in observer.seen for name in load.sent):
            return stage.fail(what, "no result seen for any object", child)
        return {"ready_s": ready, "rate": load.rate, **latencies(load, observer), "cpu_s": usage.cpu_s - cpu,
                "peak_rss_mb": usage.peak_rss_mb, "server_cpu_s": stage.server_cpu() - server_cpu,
                "bench_cpu_s": own_cpu() - bench_cpu, **lag_figures(loop_lags(ticks, started, ended))}
    finally:
        child.stop()
        await observer.close()


async def run_live(stage: Stage, contenders: list[Contender], rate: float, seconds: float) -> list[dict[str, Any]]:
    results = []
    for round_, contender in stage.rounds.schedule(contenders):
        result = {"scenario": "live", "contender": contender.name, "round": round_, "target_rate": rate,
                  "seconds": seconds, **await measure(stage, contender, rate, seconds)}
        if "error" not in result:
            lag = (f"; loop lag p99 {result['lag_p99_ms']:.1f} ms, max {result['lag_max_ms']:.0f} ms"
                   if "lag_p99_ms" in result else "")
            print(f"  live round {round_} {contender.name}: p50 {result['p50_ms']:.0f} ms, "
                  f"p99 {result['p99_ms']:.0f} ms (create p50 {result['create_p50_ms']:.0f} ms; "
                  f"object seen -> result p50 "
                  f"{result['seen_to_result_p50_ms']:.0f} ms), missing {result['missing']}{lag}", flush=True)
        results.append(result)
    return results
