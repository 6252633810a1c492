"""Scenario 4 of the issue, idle memory: RSS of an operator watching already-handled objects with nothing to do.

Each contender starts afresh three times: on no object, on N1 and on N2 objects it handled before,
and is measured once it is ready and quiet. What a watched object costs is the slope
(RSS(N2) - RSS(N1)) / (N2 - N1): listing leaves a fixed amount behind (a page of parsed objects
that the allocator keeps), which (RSS(N) - RSS(0)) / N, shown too, spreads over the objects.

Contenders: ``opd run`` with one handler, Kopf, and ``opd start`` with K plugins (one handler each,
every object handled by all of them: the goal). ``opd start`` says READY=1 on a stand-in for
systemd's socket: how long after its start (the API answers all along), and how long after the last page of
its LIST (the daemon's own log says when that came: its caches synced, issue #22's readiness goal).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from backlog import handle_all, prepare
from children import Child
from contenders import Contender
from kubeapi import Observer, create_namespace
from many_plugins import has_all, last_list, spawn_daemon, write_plugins
from notify import NotifySocket
from stage import Stage, wait_quiet, wait_ready, wait_results

READY_TIMEOUT = 120.0

Start = Callable[[str, int], Awaitable[dict[str, Any]]]  # a fresh operator on (namespace, N): its figures


async def settle(child: Child) -> bool:
    """Wait until the contender is quiet (after 10s at least: workers that linger a while after an
    object's last event, as Kopf's do, must be gone too)."""
    return await wait_quiet(child.cpu_seconds, quiet=0.02, window=2.0, least=10.0, most=120.0)


async def quiet_usage(stage: Stage, what: str, child: Child, observer: Observer, namespace: str) -> dict[str, Any]:
    """RSS once the contender has handled a new probe object (its watches are up) and is quiet."""
    probe = f"probe-{time.monotonic_ns()}"  # the namespace may be reused: a name not seen before
    why = await wait_ready(stage, observer, child, namespace, probe=probe)
    if why is not None:
        return stage.fail(what, why, child)
    if not await settle(child):
        print(f"  {what}: still busy after 120s; measuring anyway", flush=True)
    usage = child.usage()
    return {"rss_mb": usage.rss_mb, "peak_rss_mb": usage.peak_rss_mb}


def per_object(found: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figures of three starts on 0 < N1 < N2 objects."""
    (_, empty), (small, mid), (n, full) = sorted(found.items())
    result = {"n_small": small, "rss_0_mb": empty["rss_mb"], "rss_small_mb": mid["rss_mb"], "rss_n_mb": full["rss_mb"],
              "bytes_per_object": (full["rss_mb"] - mid["rss_mb"]) * 2**20 / (n - small),
              "bytes_per_object_from_empty": (full["rss_mb"] - empty["rss_mb"]) * 2**20 / n}
    if "ready_s" in empty:
        result |= {"ready_0_s": empty["ready_s"], "ready_small_s": mid["ready_s"], "ready_n_s": full["ready_s"]}
    for size, start in (("0", empty), ("small", mid), ("n", full)):  # a LIST of one page is not logged
        if start.get("ready_after_list_s") is not None:
            result |= {f"ready_list_{size}_s": start["ready_after_list_s"], f"list_{size}_s": start["list_s"]}
    return result


async def three_starts(stage: Stage, label: str, sizes: tuple[int, int], start: Start,
                       handled: Callable[[int], Awaitable[str | None]]) -> dict[str, Any]:
    found = {0: await start(await create_namespace(stage.api, f"idle-{label}-0"), 0)}
    for n in sizes:
        if any("error" in r for r in found.values()):
            break
        namespace = await handled(n)
        if namespace is None:
            return {"error": f"idle {label}: could not prepare {n} handled objects"}
        found[n] = await start(namespace, n)
    failed = next((r for r in found.values() if "error" in r), None)
    return failed if failed is not None else per_object(found)


# -- opd run and Kopf --------------------------------------------------------------------------------------------------
async def idle_rss(stage: Stage, contender: Contender, namespace: str, n: int) -> dict[str, Any]:
    """A fresh contender on a namespace whose objects are all handled: RSS once it is ready and quiet."""
    observer = await Observer(stage.api, namespace).start()
    child = stage.spawn(contender, namespace)
    try:
        return await quiet_usage(stage, f"idle {contender.name} N={n}", child, observer, namespace)
    finally:
        child.stop()
        await observer.close()


async def handled_namespace(stage: Stage, contender: Contender, n: int) -> str | None:
    """A namespace of N objects this contender has handled: the backlog's, or one made now."""
    if (contender.name, n) not in stage.handled:
        namespace, creation = await prepare(stage, f"idle-{contender.name}-{n}", n)
        handled = await handle_all(stage, contender, namespace, n)
        if "error" in handled:
            return None
        print(f"  idle {contender.name}: {n} objects created in {creation:.0f}s, handled in "
              f"{handled['seconds']:.0f}s", flush=True)
    return stage.handled[(contender.name, n)]


async def measure(stage: Stage, contender: Contender, sizes: tuple[int, int]) -> dict[str, Any]:
    async def start(namespace: str, n: int) -> dict[str, Any]:
        return await idle_rss(stage, contender, namespace, n)

    async def handled(n: int) -> str | None:
        return await handled_namespace(stage, contender, n)

    return await three_starts(stage, contender.name, sizes, start, handled)


# -- opd start with K plugins ----------------------------------------------------------------------------------------
async def daemon_idle(stage: Stage, plugins_dir: Path, names: list[str], namespace: str, n: int) -> dict[str, Any]:
    """A fresh ``opd start``: seconds from its start to READY=1, and from its LIST's last page (when the
    LIST took more than one); RSS once it is ready and quiet."""
    what = f"idle opd start, {len(names)} plugins, N={n}"
    observer = await Observer(stage.api, namespace, done=has_all(names)).start()
    await stage.quiesce()
    async with NotifySocket(stage.log_path("notify.sock")) as systemd:
        child = spawn_daemon(stage, plugins_dir, names, namespace, notify_socket=systemd.path)
        try:
            ready_at = await systemd.wait("READY=1", timeout=READY_TIMEOUT, alive=child.alive)
            if ready_at is None:
                return stage.fail(what, f"no READY=1 within {READY_TIMEOUT:.0f}s ({child.describe_exit()})", child)
            usage = await quiet_usage(stage, what, child, observer, namespace)
            if "error" in usage:
                return usage
            after_list, list_s = last_list(child.log, ready_at) or (None, None)
            return {"ready_s": ready_at - child.started_at, "ready_after_list_s": after_list, "list_s": list_s,
                    **usage}
        finally:
            child.stop()
            await observer.close()


async def daemon_handled(stage: Stage, plugins_dir: Path, names: list[str], n: int) -> str | None:
    """A namespace of N objects that every one of these plugins has handled."""
    namespace, creation = await prepare(stage, f"idle-{len(names)}plugins-{n}", n)
    observer = await Observer(stage.api, namespace, done=has_all(names)).start()
    child = spawn_daemon(stage, plugins_dir, names, namespace)
    try:
        why = await wait_results(observer, child, n)
        if why is not None:
            stage.fail(f"idle opd start ({len(names)} plugins): handling {n} objects", why, child)
            return None
        print(f"  idle opd start ({len(names)} plugins): {n} objects created in {creation:.0f}s, handled by "
              f"every plugin in {time.monotonic() - child.started_at:.0f}s", flush=True)
        return namespace
    finally:
        child.stop()
        await observer.close()


async def measure_daemon(stage: Stage, count: int, sizes: tuple[int, int]) -> dict[str, Any]:
    plugins_dir = stage.workdir / "plugins"
    names = write_plugins(plugins_dir, count)

    async def start(namespace: str, n: int) -> dict[str, Any]:
        return await daemon_idle(stage, plugins_dir, names, namespace, n)

    async def handled(n: int) -> str | None:
        return await daemon_handled(stage, plugins_dir, names, n)

    return {"plugins": count, **await three_starts(stage, f"{count}plugins", sizes, start, handled)}


def say(result: dict[str, Any]) -> None:
    if "error" in result:
        return
    n, small = result["n"], result["n_small"]
    if "ready_0_s" in result:
        print(f"  idle {result['contender']}: READY=1 {result['ready_0_s']:.2f}s after its start with no object, "
              f"{result['ready_small_s']:.2f}s with {small}, {result['ready_n_s']:.2f}s with {n}", flush=True)
        for size, count in (("small", small), ("n", n)):
            if f"ready_list_{size}_s" in result:
                print(f"  idle {result['contender']}, {count} objects: READY=1 {result[f'ready_list_{size}_s']:.2f}s "
                      f"after its LIST's last page (the LIST took {result[f'list_{size}_s']:.2f}s)", flush=True)
    print(f"  idle {result['contender']}: RSS {result['rss_0_mb']:.1f} MB empty, {result['rss_small_mb']:.1f} MB "
          f"with {small} objects, {result['rss_n_mb']:.1f} MB with {n}: {result['bytes_per_object']:.0f} B/object "
          f"({result['bytes_per_object_from_empty']:.0f} B counted from empty)", flush=True)


async def run_idle(stage: Stage, contenders: list[Contender], sizes: tuple[int, int],
                   plugins: int) -> list[dict[str, Any]]:
    results = []
    base = {"scenario": "idle", "n": sizes[1]}
    for contender in contenders:
        results.append({**base, "contender": contender.name, **await measure(stage, contender, sizes)})
        say(results[-1])
    if plugins:
        results.append({**base, "contender": f"opd start, {plugins} plugins",
                        **await measure_daemon(stage, plugins, sizes)})
        say(results[-1])
    return results
