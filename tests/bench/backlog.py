"""Scenario 1, backlog: N objects exist, then the operator starts; time until all N carry the result."""

from __future__ import annotations

import time
from typing import Any

from contenders import Contender
from kubeapi import Observer, create_namespace, create_objects, request_counts
from stage import Stage, rotated, wait_results

WRITES = ("POST", "PATCH", "PUT", "DELETE")  # API requests that change something (of our resource, or events)


async def prepare(stage: Stage, stem: str, n: int) -> tuple[str, float]:
    """A fresh namespace with N objects; and how long creating them took."""
    namespace = await create_namespace(stage.api, stem)
    started = time.monotonic()
    await create_objects(stage.api, namespace, (f"kex-{i:06d}" for i in range(n)))
    return namespace, time.monotonic() - started


async def handle_all(stage: Stage, contender: Contender, namespace: str, n: int) -> dict[str, Any]:
    """Start the contender on a namespace of N unhandled objects; measure until the observer sees N results."""
    observer = await Observer(stage.api, namespace).start()
    await stage.quiesce()
    server_cpu, requests = stage.server_cpu(), await request_counts(stage.api)
    child = stage.spawn(contender, namespace)
    try:
        why = await wait_results(observer, child, n)
        if why is not None:
            return stage.fail(f"backlog {contender.name} N={n}", why, child)
        seconds = time.monotonic() - child.started_at
        usage = child.usage()  # at completion: what the work cost, not the shutdown
        stage.handled[(contender.name, n)] = namespace
        requests = await request_counts(stage.api) - requests
        writes = sum(count for key, count in requests.items() if key.split()[0] in WRITES)
        return {"seconds": seconds, "cpu_s": usage.cpu_s, "peak_rss_mb": usage.peak_rss_mb,
                "server_cpu_s": stage.server_cpu() - server_cpu, "per_second": n / seconds,
                "writes_per_object": writes / n, "requests": dict(sorted(requests.items()))}
    finally:
        child.stop()
        await observer.close()


async def run_backlog(stage: Stage, contenders: list[Contender], sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        for contender in [c for round_ in range(stage.repeat) for c in rotated(contenders, round_)]:
            namespace, creation = await prepare(stage, f"backlog-{contender.name}-{n}", n)
            print(f"  backlog N={n} {contender.name}: {n} objects created in {creation:.1f}s", flush=True)
            result = {"scenario": "backlog", "contender": contender.name, "n": n, "namespace": namespace,
                      **await handle_all(stage, contender, namespace, n)}
            if "error" not in result:
                print(f"  backlog N={n} {contender.name}: {result['seconds']:.1f}s, CPU {result['cpu_s']:.1f}s, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
            results.append(result)
    return results
