"""Scenario 4 of the issue, idle memory: RSS of an operator watching N already-handled objects with nothing to do,
against the same operator watching none; the difference per object is what each watched object costs."""

from __future__ import annotations

import time
from typing import Any

from backlog import handle_all, prepare
from children import Child
from contenders import Contender
from kubeapi import Observer, create_namespace
from stage import Stage, wait_quiet, wait_ready


async def settle(child: Child) -> bool:
    """Wait until the contender is quiet (after 10s at least: workers that linger a while after an
    object's last event, as Kopf's do, must be gone too)."""
    return await wait_quiet(child.cpu_seconds, quiet=0.02, window=2.0, least=10.0, most=120.0)


async def idle_rss(stage: Stage, contender: Contender, namespace: str, n: int) -> dict[str, Any]:
    """A fresh contender on a namespace whose objects are all handled: RSS once it is ready and quiet."""
    what = f"idle {contender.name} N={n}"
    observer = await Observer(stage.api, namespace).start()
    child = stage.spawn(contender, namespace)
    try:
        probe = f"probe-{time.monotonic_ns()}"  # the namespace may be reused: a name not seen before
        why = await wait_ready(stage, observer, child, namespace, probe=probe)
        if why is not None:
            return stage.fail(what, why, child)
        if not await settle(child):
            print(f"  {what}: still busy after 120s; measuring anyway", flush=True)
        usage = child.usage()
        return {"rss_mb": usage.rss_mb, "peak_rss_mb": usage.peak_rss_mb}
    finally:
        child.stop()
        await observer.close()


async def handled_namespace(stage: Stage, contender: Contender, n: int) -> str | None:
    """A namespace of N objects this contender has handled: the backlog's, or one made now."""
    if (contender.name, n) not in stage.handled:
        namespace, _ = await prepare(stage, f"idle-{contender.name}-{n}", n)
        print(f"  idle {contender.name}: handling {n} objects first", flush=True)
        if "error" in await handle_all(stage, contender, namespace, n):
            return None
    return stage.handled[(contender.name, n)]


async def measure(stage: Stage, contender: Contender, n: int) -> dict[str, Any]:
    empty = await idle_rss(stage, contender, await create_namespace(stage.api, f"idle-{contender.name}-0"), 0)
    if "error" in empty:
        return empty
    namespace = await handled_namespace(stage, contender, n)
    if namespace is None:
        return {"error": f"idle {contender.name}: could not prepare {n} handled objects"}
    full = await idle_rss(stage, contender, namespace, n)
    if "error" in full:
        return full
    return {"rss_0_mb": empty["rss_mb"], "rss_n_mb": full["rss_mb"],
            "bytes_per_object": (full["rss_mb"] - empty["rss_mb"]) * 2**20 / n}


async def run_idle(stage: Stage, contenders: list[Contender], n: int) -> list[dict[str, Any]]:
    results = []
    for contender in contenders:
        result = {"scenario": "idle", "contender": contender.name, "n": n, **await measure(stage, contender, n)}
        if "error" not in result:
            print(f"  idle {contender.name}: {result['rss_0_mb']:.1f} MB empty, {result['rss_n_mb']:.1f} MB "
                  f"with {n} objects: {result['bytes_per_object']:.0f} B/object", flush=True)
        results.append(result)
    return results
