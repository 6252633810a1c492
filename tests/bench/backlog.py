"""Scenario 1, backlog: N objects exist, then the operator starts; time until all N carry the result.

Each round runs raw and opd (and, in the first rounds, Kopf; at the first size, opd with Event posting)
on fresh namespaces of N objects, in an order that rotates from round to round.

CPU is counted twice: for the whole run (from the process's start to the last result: imports, login and
API discovery included) and for the work alone (from its first LIST of the objects to the last result:
each contender notes the CPU it has spent at that LIST, see firstlist.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import firstlist
from contenders import Contender
from kubeapi import Observer, create_namespace, create_objects, request_counts
from stage import Stage, wait_results

WRITES = ("POST", "PATCH", "PUT", "DELETE")  # API requests that change something


async def prepare(stage: Stage, stem: str, n: int) -> tuple[str, float]:
    """A fresh namespace with N objects; and how long creating them took."""
    namespace = await create_namespace(stage.api, stem)
    started = time.monotonic()
    await create_objects(stage.api, namespace, (f"kex-{i:06d}" for i in range(n)))
    return namespace, time.monotonic() - started


def writes(requests: Counter[str], resource: str) -> int:
    """Writes to ``resource`` (with any subresource) among request counts keyed "VERB resource[/sub] code"."""
    return sum(count for key, count in requests.items()
               if key.split()[0] in WRITES and key.split()[1].split("/")[0] == resource)


async def drained(stage: Stage, since: Counter[str], *, quiet: float = 2.0, most: float = 60.0) -> tuple[int, float]:
    """Event writes since ``since`` once they stop coming (none for ``quiet`` seconds); and when that was."""
    count, changed_at, started = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - started < most:
        now = writes(await request_counts(stage.api) - since, "events")
        if now != count:
            count, changed_at = now, time.monotonic()
        elif time.monotonic() - changed_at >= quiet:
            break
        await asyncio.sleep(0.5)
    return count, changed_at


def startup(noted: tuple[float, float] | None, started_at: float, cpu_s: float, n: int) -> dict[str, Any]:
    """From what the contender noted at its first LIST (CPU seconds, monotonic time): its startup (CPU, and
    seconds from its start), and its CPU after that, per 1000 objects too: the work without the startup.
    Nothing when it noted nothing."""
    if noted is None:
        return {}
    cpu, at = noted
    return {"startup_cpu_s": cpu, "first_list_s": at - started_at, "work_cpu_s": cpu_s - cpu,
            "work_cpu_per_1000": (cpu_s - cpu) * 1000 / n}


async def handle_all(stage: Stage, contender: Contender, namespace: str, n: int) -> dict[str, Any]:
    """Start the contender on a namespace of N unhandled objects; measure until the observer sees N results."""
    observer = await Observer(stage.api, namespace).start()
    await stage.quiesce()
    server_cpu, before = stage.server_cpu(), await request_counts(stage.api)
    first_list = stage.log_path(f"first-list-{contender.name.replace('+', '-')}-{n}.txt")
    child = stage.spawn(contender, namespace, env={firstlist.FIRST_LIST_ENV: str(first_list)})
    try:
        why = await wait_results(observer, child, n)
        if why is not None:
            return stage.fail(f"backlog {contender.name} N={n}", why, child)
        seconds = time.monotonic() - child.started_at
        usage = child.usage()  # at completion: what the work cost, not the shutdown
        server = stage.server_cpu() - server_cpu
        stage.handled[(contender.name, n)] = namespace
        requests = await request_counts(stage.api) - before
        result = {"seconds": seconds, "cpu_s": usage.cpu_s, "cpu_per_1000": usage.cpu_s * 1000 / n,
                  "peak_rss_mb": usage.peak_rss_mb, "server_cpu_s": server, "per_second": n / seconds,
                  "writes_per_object": writes(requests, "kopfexamples") / n}
        result |= startup(firstlist.read(first_list), child.started_at, usage.cpu_s, n)
        if contender.env.get("BENCH_POSTING") == "1":
            # Events go out after the results (one task drains a queue): count them once they stop.
            events, last = await drained(stage, before)
            result |= {"events_per_object": events / n, "events_done_s": last - child.started_at,
                       "cpu_with_events_s": child.cpu_seconds()}
            requests = await request_counts(stage.api) - before
        else:
            result["events_per_object"] = writes(requests, "events") / n
        return result | {"requests": dict(sorted(requests.items()))}
    finally:
        child.stop()
        await observer.close()


async def run_backlog(stage: Stage, contenders: list[Contender], sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        # Events per object and posting's cost do not change with N: opd+events runs at the first size only.
        lineup = [c for c in contenders if n == sizes[0] or c.name != "opd+events"]
        for round_, contender in stage.rounds.schedule(lineup):
            what = f"  backlog N={n} round {round_} {contender.name}"
            namespace, creation = await prepare(stage, f"backlog-{contender.name}-{n}", n)
            print(f"{what}: {n} objects created in {creation:.1f}s", flush=True)
            result = {"scenario": "backlog", "contender": contender.name, "n": n, "round": round_,
                      "namespace": namespace, **await handle_all(stage, contender, namespace, n)}
            if "error" not in result:
                events = (f", {result['events_per_object']:.2f} Events/object (last {result['events_done_s']:.1f}s)"
                          if "events_done_s" in result else "")
                startup_cpu = (f" ({result['startup_cpu_s']:.2f}s of it before its first LIST, "
                               f"{result['first_list_s']:.1f}s after its start)" if "startup_cpu_s" in result else
                               " (its first LIST not noted)")
                print(f"{what}: {result['seconds']:.1f}s, CPU {result['cpu_s']:.1f}s{startup_cpu}, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB{events}", flush=True)
            results.append(result)
    return results
