"""The embedding contract (shared/seeds/embedding.rst): each code block, with kopf
replaced by opd, runs as written against the real apiserver."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import RunningOperator, ScriptProcess, create_kex, eventually, get_kex, handled
from kubernetes_asyncio import client

import opd

BLOCK_THREAD = """
    import asyncio
    import threading

    import opd

    @opd.on.create('kopfexamples')
    def create_fn(**_):
        pass

    def kopf_thread():
        asyncio.run(opd.operator())

    def main():
        thread = threading.Thread(target=kopf_thread)
        thread.start()
        # ...
        thread.join()

    main()
"""

BLOCK_ORCHESTRATED = """
    import asyncio
    import threading

    import opd

    @opd.on.create('kopfexamples')
    def create_fn(**_):
        pass

    def kopf_thread():
        loop = asyncio.get_event_loop_policy().get_event_loop()
        tasks = loop.run_until_complete(opd.spawn_tasks())
        loop.run_until_complete(opd.run_tasks(tasks, return_when=asyncio.FIRST_COMPLETED))

    def main():
        thread = threading.Thread(target=kopf_thread)
        thread.start()
        # ...
        thread.join()

    main()
"""

BLOCK_WAIT = """
    import asyncio
    import threading

    import opd

    @opd.on.create('kopfexamples')
    def create_fn(**_):
        pass

    def kopf_thread():
        loop = asyncio.get_event_loop_policy().get_event_loop()
        tasks = loop.run_until_complete(opd.spawn_tasks())
        loop.run_until_complete(asyncio.wait(tasks))

    def main():
        thread = threading.Thread(target=kopf_thread)
        thread.start()
        # ...
        thread.join()

    main()
"""

BLOCK_MULTIPLE = """
    import asyncio
    import threading

    import opd

    registry = opd.OperatorRegistry()

    @opd.on.create('kopfexamples', registry=registry)
    def create_fn(**_):
        pass

    def kopf_thread():
        asyncio.run(opd.operator(
            registry=registry,
        ))

    def main():
        thread = threading.Thread(target=kopf_thread)
        thread.start()
        # ...
        thread.join()

    main()
"""


@pytest.mark.parametrize("code", [BLOCK_THREAD, BLOCK_ORCHESTRATED, BLOCK_WAIT, BLOCK_MULTIPLE],
                         ids=["thread", "spawn-run-tasks", "spawn-asyncio-wait", "multiple-operators"])
async def test_seed_block_runs_as_written(code: str, kubeconfig: Path, crd: str, namespace: str,
                                          api: client.ApiClient, tmp_path: Path) -> None:
    script = ScriptProcess(code, tmp_path, {"KUBECONFIG": str(kubeconfig)}).start()
    try:
        await create_kex(api, namespace, "seeded")

        async def done() -> bool:
            return handled(await get_kex(api, namespace, "seeded"))

        try:
            await eventually(done, timeout=30)
        except AssertionError:
            pytest.fail(f"the object was not handled; the script said:\n{script.output()}")
        output = script.output()
        assert "Traceback" not in output, output
        assert "ready: every watch has listed" in output
    finally:
        script.stop()


async def test_isolated_operators_in_threads(kubeconfig: Path, crd: str, namespace: str,
                                             api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registries in two threads/loops: each sees only its handlers, settings and memo."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    calls: list[tuple[str, str, str, int]] = []
    stops = {"a": threading.Event(), "b": threading.Event()}
    readies = {"a": threading.Event(), "b": threading.Event()}
    memos = {"a": opd.Memo(owner="a"), "b": opd.Memo(owner="b")}

    def make(label: str) -> opd.OperatorRegistry:
        registry = opd.OperatorRegistry()

        @opd.on.create("kopfexamples", registry=registry, id=f"create_{label}")
        def create_fn(memo: opd.Memo, settings: opd.OperatorSettings, **_: Any) -> dict[str, str]:
            calls.append((label, memo.owner, settings.persistence.status_field, threading.get_ident()))
            return {"by": label}

        return registry

    def run(label: str, registry: opd.OperatorRegistry) -> None:
        settings = opd.OperatorSettings()
        settings.persistence.status_field = f"op{label}"
        settings.persistence.prefix = f"{label}.opd.dev"
        asyncio.run(opd.operator(registry=registry, settings=settings, memo=memos[label],
                                 namespaces=[namespace], stop_flag=stops[label], ready_flag=readies[label]))

    threads = [threading.Thread(target=run, args=(label, make(label)), name=f"op-{label}") for label in "ab"]
    for thread in threads:
        thread.start()
    try:
        assert readies["a"].wait(30)
        assert readies["b"].wait(30)
        await create_kex(api, namespace, "shared")

        async def both() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, "shared")
            return obj if handled(obj, "opa") and handled(obj, "opb") else None

        obj = await eventually(both)
        assert obj["status"]["create_a"] == {"by": "a"}
        assert obj["status"]["create_b"] == {"by": "b"}
        await asyncio.sleep(0.5)  # any duplicate would show up by now
        assert sorted(c[:3] for c in calls) == [("a", "a", "opa"), ("b", "b", "opb")]
        assert calls[0][3] != calls[1][3]  # sync handlers ran in each operator's own pool
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads:
            thread.join(15)
    assert not any(t.is_alive() for t in threads)


def test_default_registry_is_per_context() -> None:
    import contextvars

    process_default = opd.get_default_registry()
    mine = opd.OperatorRegistry()

    def in_context() -> opd.OperatorRegistry:
        opd.set_default_registry(mine)

        @opd.on.create("kopfexamples")
        def fn(**_: Any) -> None:
            pass

        return opd.get_default_registry()

    assert contextvars.copy_context().run(in_context) is mine
    assert [h.id for h in mine.handlers] == ["fn"]
    assert opd.get_default_registry() is process_default
    seen: list[opd.OperatorRegistry] = []
    thread = threading.Thread(target=lambda: seen.append(opd.get_default_registry()))
    thread.start()
    thread.join()
    assert seen == [process_default]


async def test_host_tasks_are_never_cancelled(kubeconfig: Path, crd: str, namespace: str,
                                              api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = opd.OperatorRegistry()
    spawned: list[asyncio.Task[None]] = []

    @opd.on.create("kopfexamples", registry=registry)
    async def create_fn(**_: Any) -> None:
        # A task the host app starts from inside a handler is the host's, not opd's.
        spawned.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))

    before = asyncio.create_task(asyncio.sleep(3600), name="host before")
    baseline = asyncio.all_tasks()
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = await opd.spawn_tasks(registry=registry, namespaces=[namespace], stop_flag=stop, ready_flag=ready)
    runner = asyncio.create_task(opd.run_tasks(tasks, return_when=asyncio.FIRST_COMPLETED))
    await asyncio.wait_for(ready.wait(), 30)
    after = asyncio.create_task(asyncio.sleep(3600), name="host after")
    await create_kex(api, namespace, "host")
    await eventually(lambda: bool(spawned))
    stop.set()
    await asyncio.wait_for(runner, 15)
    try:
        assert not before.done()
        assert not after.done()
        assert not spawned[0].done()
        leftover = asyncio.all_tasks() - baseline - {after, spawned[0]}
        assert not leftover, f"opd left tasks behind: {leftover}"
    finally:
        for task in (before, after, *spawned):
            task.cancel()


async def test_stop_flag_stops_within_the_bound(kubeconfig: Path, crd: str, namespace: str,
                                                api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = opd.OperatorRegistry()
    started = asyncio.Event()

    @opd.on.create("kopfexamples", registry=registry)
    async def slow(**_: Any) -> None:
        started.set()
        await asyncio.sleep(3600)

    settings = opd.OperatorSettings()
    settings.shutdown.timeout = 1.0
    async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace]) as op:
        await create_kex(api, namespace, "slow")
        await asyncio.wait_for(started.wait(), 30)
        took = await op.stop()
    assert took < 5.0, f"stopping took {took:.1f}s with a 1s shutdown bound"


async def test_cancelling_the_operator_task_stops_it(kubeconfig: Path, crd: str, namespace: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = opd.OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(lambda **_: None)
    baseline = asyncio.all_tasks()
    ready = asyncio.Event()
    task = asyncio.create_task(opd.operator(registry=registry, namespaces=[namespace], ready_flag=ready))
    await asyncio.wait_for(ready.wait(), 30)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    assert not (asyncio.all_tasks() - baseline)


@pytest.mark.parametrize("kind", ["asyncio.Event", "threading.Event", "asyncio.Future", "concurrent.Future"])
async def test_flags_of_every_kind(kind: str, kubeconfig: Path, crd: str, namespace: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    make: dict[str, Any] = {
        "asyncio.Event": asyncio.Event, "threading.Event": threading.Event,
        "asyncio.Future": lambda: asyncio.get_running_loop().create_future(),
        "concurrent.Future": concurrent.futures.Future,
    }
    stop, ready = make[kind](), make[kind]()
    registry = opd.OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(lambda **_: None)
    task = asyncio.create_task(opd.operator(registry=registry, namespaces=[namespace],
                                            stop_flag=stop, ready_flag=ready))

    def is_set(flag: Any) -> bool:
        return bool(flag.is_set() if hasattr(flag, "is_set") else flag.done())

    await eventually(lambda: is_set(ready))
    if hasattr(stop, "set"):
        stop.set()
    else:
        stop.set_result(None)
    await asyncio.wait_for(task, 15)
