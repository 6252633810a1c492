"""Scenario 2, live latency: a ready operator; objects created at a steady rate;
latency from the client's send time to the observer seeing the result."""

from __future__ import annotations

import asyncio
import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from contenders import Contender
from kubeapi import Api, Observer, create_namespace, create_object
from stage import Stage, rotated, wait_ready


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


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
    total = [observer.seen[n] - load.sent[n] for n in done]
    create = [load.answered[n] - load.sent[n] for n in load.answered]
    operator = [observer.seen[n] - observer.added[n] for n in done]
    return {"sent": len(load.sent), "missing": len(load.sent) - len(done),
            "p50_ms": percentile(total, 50) * 1000, "p99_ms": percentile(total, 99) * 1000,
            "max_ms": max(total) * 1000, "create_p50_ms": percentile(create, 50) * 1000,
            "seen_to_result_p50_ms": percentile(operator, 50) * 1000,
            "seen_to_result_p99_ms": percentile(operator, 99) * 1000}


async def measure(stage: Stage, contender: Contender, rate: float, seconds: float) -> dict[str, Any]:
    what = f"live {contender.name}"
    namespace = await create_namespace(stage.api, f"live-{contender.name}")
    observer = await Observer(stage.api, namespace).start()
    await stage.quiesce()
    child = stage.spawn(contender, namespace)
    try:
        why = await wait_ready(stage, observer, child, namespace)
        if why is not None:
            return stage.fail(what, why, child)
        ready = time.monotonic() - child.started_at
        cpu, server_cpu, bench_cpu = child.cpu_seconds(), stage.server_cpu(), own_cpu()
        load = await steady_load(stage.api, namespace, rate, seconds)
        # Stragglers get a grace period; what is still missing then is reported, not waited for.
        expected = len(load.sent) + 1  # and the probe
        await observer.wait(lambda: len(observer.seen) >= expected, timeout=30.0)
        usage = child.usage()
        if not any(name in observer.seen for name in load.sent):
            return stage.fail(what, "no result seen for any object", child)
        return {"ready_s": ready, "rate": load.rate, **latencies(load, observer), "cpu_s": usage.cpu_s - cpu,
                "peak_rss_mb": usage.peak_rss_mb, "server_cpu_s": stage.server_cpu() - server_cpu,
                "bench_cpu_s": own_cpu() - bench_cpu}
    finally:
        child.stop()
        await observer.close()


async def run_live(stage: Stage, contenders: list[Contender], rate: float, seconds: float) -> list[dict[str, Any]]:
    results = []
    for contender in [c for round_ in range(stage.repeat) for c in rotated(contenders, round_)]:
        result = {"scenario": "live", "contender": contender.name, "target_rate": rate, "seconds": seconds,
                  **await measure(stage, contender, rate, seconds)}
        if "error" not in result:
            print(f"  live {contender.name}: p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms "
                  f"(create p50 {result['create_p50_ms']:.0f} ms; object seen -> result p50 "
                  f"{result['seen_to_result_p50_ms']:.0f} ms), missing {result['missing']}", flush=True)
        results.append(result)
    return results
