"""Every handler kind and option against the real apiserver."""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.crds import CRD_GROUP
from helpers.operators import RunningOperator, create_kex, eventually, get_kex, handled
from kubernetes_asyncio import client

import opd
from opd.engine.operation import Operation

MERGE = "application/merge-patch+json"


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


async def _patch(api: client.ApiClient, namespace: str, name: str, body: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        CRD_GROUP, "v1", namespace, "kopfexamples", name, body, _content_type=MERGE)


async def _delete(api: client.ApiClient, namespace: str, name: str) -> None:
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(CRD_GROUP, "v1", namespace, "kopfexamples", name)


async def _gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        await get_kex(api, namespace, name)
    except client.ApiException as exc:
        return exc.status == 404
    return False


async def test_create_update_field_delete_in_order(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    log: list[tuple[str, Any]] = []

    @opd.on.create(crd, registry=registry)
    def on_create(spec: dict[str, Any], **_: Any) -> None:
        log.append(("create", spec.get("size")))

    @opd.on.update(crd, registry=registry)
    def on_update(old: dict[str, Any], new: dict[str, Any], **_: Any) -> None:
        log.append(("update", (old["spec"].get("size"), new["spec"].get("size"))))

    @opd.on.field(crd, field="spec.size", registry=registry)
    def on_size(old: Any, new: Any, diff: Any, **_: Any) -> None:
        log.append(("field", (old, new, diff)))

    @opd.on.field(crd, field="spec.mode", new="fast", registry=registry)
    def on_fast(old: Any, new: Any, **_: Any) -> None:
        log.append(("fast", (old, new)))

    @opd.on.delete(crd, registry=registry)
    def on_delete(**_: Any) -> None:
        log.append(("delete", None))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "life", {"size": 1})
        obj = await eventually(lambda: _marked(api, namespace, "life"))
        assert "opd.dev/finalizer" in obj["metadata"]["finalizers"]
        await _patch(api, namespace, "life", {"spec": {"size": 2}})
        await eventually(lambda: ("update", (1, 2)) in log)
        await _patch(api, namespace, "life", {"spec": {"mode": "slow"}})
        await _patch(api, namespace, "life", {"spec": {"mode": "fast"}})
        await eventually(lambda: any(e[0] == "fast" for e in log))
        await _delete(api, namespace, "life")
        await eventually(lambda: _gone(api, namespace, "life"))
    assert log[0] == ("create", 1)
    assert log[1] == ("field", (None, 1, (("add", (), None, 1),)))
    assert log[2:4] == [("update", (1, 2)), ("field", (1, 2, (("change", (), 1, 2),)))]
    assert ("fast", ("slow", "fast")) in log
    assert [e[0] for e in log].count("update") == 3  # size, mode=slow, mode=fast
    assert [e[0] for e in log].count("field") == 2  # mode changes are not spec.size changes
    assert log[-1] == ("delete", None)


async def _marked(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    obj = await get_kex(api, namespace, name)
    return obj if handled(obj) else None


async def test_finalizer_only_when_needed(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    opd.on.create(crd, registry=registry)(lambda **_: None)
    opd.on.delete(crd, registry=registry, optional=True)(lambda **_: None)
    opd.on.delete(crd, registry=registry, labels={"guarded": "yes"}, id="guarded")(lambda **_: None)
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "free")
        await create_kex(api, namespace, "guarded", labels={"guarded": "yes"})
        free = await eventually(lambda: _marked(api, namespace, "free"))
        guarded = await eventually(lambda: _marked(api, namespace, "guarded"))
        assert "opd.dev/finalizer" not in (free["metadata"].get("finalizers") or [])
        assert "opd.dev/finalizer" in guarded["metadata"]["finalizers"]
        # The label goes: no handler needs the object held any more.
        await _patch(api, namespace, "guarded", {"metadata": {"labels": {"guarded": None}}})

        async def released() -> bool:
            obj = await get_kex(api, namespace, "guarded")
            return "opd.dev/finalizer" not in (obj["metadata"].get("finalizers") or [])

        await eventually(released)


async def test_permanent_error_is_not_retried(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    calls: list[int] = []

    @opd.on.create(crd, registry=registry)
    def fail(retry: int, **_: Any) -> None:
        calls.append(retry)
        raise opd.PermanentError("no way")

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "perm")
        obj = await eventually(lambda: _marked(api, namespace, "perm"))
        await asyncio.sleep(1.0)
    assert calls == [0]
    assert "fail" not in obj["status"]  # no result, and done: not retried


async def test_retries_bound_and_ignored_errors(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    calls: collections.Counter[str] = collections.Counter()

    @opd.on.create(crd, registry=registry, retries=3, backoff=0.1)
    def bounded(**_: Any) -> None:
        calls["bounded"] += 1
        raise ValueError("again")

    @opd.on.create(crd, registry=registry, errors="ignored")
    def careless(**_: Any) -> None:
        calls["careless"] += 1
        raise ValueError("whatever")

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "bound")
        await eventually(lambda: _marked(api, namespace, "bound"))
        await asyncio.sleep(0.5)
    assert calls == {"bounded": 3, "careless": 1}


async def test_restart_mid_retry_resumes_without_rerunning_finished_handlers(
    api: client.ApiClient, crd: str, namespace: str
) -> None:
    registry = opd.OperatorRegistry()
    calls: list[tuple[str, int]] = []

    @opd.on.create(crd, registry=registry)
    def first(retry: int, **_: Any) -> str:
        calls.append(("first", retry))
        return "done"

    @opd.on.create(crd, registry=registry)
    def second(retry: int, **_: Any) -> str:
        calls.append(("second", retry))
        if retry == 0:
            raise opd.TemporaryError("later", delay=1.5)
        return "done too"

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "mid")

        async def in_progress() -> bool:
            obj = await get_kex(api, namespace, "mid")
            progress = ((obj.get("status") or {}).get("opd") or {}).get("progress", {})
            return progress.get("second", {}).get("retries") == 1

        await eventually(in_progress)
    assert calls == [("first", 0), ("second", 0)]
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        obj = await eventually(lambda: _marked(api, namespace, "mid"))
    assert calls == [("first", 0), ("second", 0), ("second", 1)]
    assert obj["status"]["first"] == "done"
    assert obj["status"]["second"] == "done too"


async def test_handler_timeout(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()

    @opd.on.create(crd, registry=registry, timeout=0.5)
    async def slow(**_: Any) -> str:
        await asyncio.sleep(30)
        return "never"

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "slow")
        obj = await eventually(lambda: _marked(api, namespace, "slow"))
    assert "slow" not in obj["status"]


async def test_timer_fires_at_its_interval_and_stops_with_the_object(
    api: client.ApiClient, crd: str, namespace: str
) -> None:
    registry = opd.OperatorRegistry()
    ticks: list[float] = []

    @opd.on.timer(crd, registry=registry, interval=0.3)
    def tick(**_: Any) -> int:
        ticks.append(time.monotonic())
        return len(ticks)

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "ticking")
        await eventually(lambda: len(ticks) >= 4)
        obj = await get_kex(api, namespace, "ticking")
        assert "opd.dev/finalizer" in obj["metadata"]["finalizers"]  # held while the timer runs
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert all(g >= 0.25 for g in gaps), gaps
        await _delete(api, namespace, "ticking")
        await eventually(lambda: _gone(api, namespace, "ticking"))
        count = len(ticks)
        await asyncio.sleep(0.8)
    assert len(ticks) == count  # no tick after the object went


async def test_timer_idle_waits_for_quiet(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    ticks: list[float] = []
    opd.on.timer(crd, registry=registry, interval=0.2, idle=1.5)(lambda **_: ticks.append(time.monotonic()))
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "busy")
        started = time.monotonic()
        for i in range(4):  # keep changing it for ~1.2 s
            await _patch(api, namespace, "busy", {"spec": {"n": i}})
            await asyncio.sleep(0.3)
        await eventually(lambda: bool(ticks))
    assert ticks[0] - started >= 1.5


async def test_daemon_runs_and_stops_when_the_object_is_deleted(
    api: client.ApiClient, crd: str, namespace: str
) -> None:
    registry = opd.OperatorRegistry()
    events: list[str] = []

    @opd.on.daemon(crd, registry=registry)
    async def worker(stopped: opd.Stopped, name: str, **_: Any) -> None:
        events.append(f"start {name}")
        while not stopped:
            await stopped.wait(0.1)
        events.append(f"stop {name}: {stopped.reason}")

    @opd.on.daemon(crd, registry=registry, cancellation_timeout=0.5)
    def sync_worker(stopped: opd.Stopped, **_: Any) -> None:
        assert threading.current_thread() is not threading.main_thread()
        events.append("sync start")
        stopped.wait(30)
        events.append("sync stop")

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "daemonic")
        await eventually(lambda: {"start daemonic", "sync start"} <= set(events))
        await _delete(api, namespace, "daemonic")
        await eventually(lambda: _gone(api, namespace, "daemonic"))
    assert "stop daemonic: object deleted" in events
    assert "sync stop" in events


async def test_daemons_stop_with_the_operator(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    events: list[str] = []

    @opd.on.daemon(crd, registry=registry)
    async def worker(stopped: opd.Stopped, **_: Any) -> None:
        events.append("start")
        await stopped.wait()
        events.append(f"stop: {stopped.reason}")

    async with RunningOperator(registry=registry, namespaces=[namespace]) as op:
        await create_kex(api, namespace, "kept")
        await eventually(lambda: events == ["start"])
        took = await op.stop()
    assert events == ["start", "stop: operator stopping"]
    assert took < 5


async def test_startup_cleanup_and_events(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    calls: list[str] = []

    @opd.on.startup(registry=registry)
    def boot(settings: opd.OperatorSettings, memo: opd.Memo, **_: Any) -> None:
        settings.posting.batch_window = 0.1
        memo.booted = True
        calls.append("startup")

    @opd.on.cleanup(registry=registry)
    async def bye(memo: opd.Memo, **_: Any) -> None:
        calls.append(f"cleanup booted={memo.booted}")

    @opd.on.create(crd, registry=registry)
    def announce(body: dict[str, Any], memo: opd.Memo, **_: Any) -> None:
        opd.info(body, reason="Hello", message=f"booted={memo.booted}")

    core = client.CoreV1Api(api)
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        assert calls == ["startup"]
        await create_kex(api, namespace, "evented")

        async def events() -> set[tuple[str, str, str]]:
            found = await core.list_namespaced_event(namespace, field_selector="involvedObject.name=evented")
            return {(e.type, e.reason, e.message) for e in found.items}

        seen = await eventually(lambda: _both(events))
    assert ("Normal", "Hello", "booted=True") in seen
    assert ("Normal", "Handled", "Handler 'announce' succeeded.") in seen
    assert calls == ["startup", "cleanup booted=True"]


async def _both(events: Any) -> set[tuple[str, str, str]] | None:
    found: set[tuple[str, str, str]] = await events()
    return found if len(found) >= 2 else None


async def test_failed_startup_stops_the_operator(crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()

    @opd.on.startup(registry=registry)
    def boot(**_: Any) -> None:
        raise opd.PermanentError("missing prerequisite")

    with pytest.raises(opd.OpdError, match="startup handler 'boot' failed: missing prerequisite"):
        await asyncio.wait_for(opd.operator(registry=registry, namespaces=[namespace],
                                            install_signal_handlers=False), 30)


async def test_login_and_probe_handlers(kubeconfig: Path, crd: str, namespace: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", "/nonexistent")  # nothing to find: only the login handler knows
    registry = opd.OperatorRegistry()

    @opd.on.login(registry=registry)
    def login(**_: Any) -> opd.Login:
        return opd.Login(kubeconfig=str(kubeconfig))

    @opd.on.probe(registry=registry, id="answer")
    def answer(memo: opd.Memo, **_: Any) -> int:
        return 42

    opd.on.create(crd, registry=registry)(lambda **_: None)
    ready = asyncio.Event()
    operation = Operation(registry=registry, settings=opd.OperatorSettings(), memo=opd.Memo(),
                          namespaces=[namespace], clusterwide=False, on_ready=ready.set)
    task = asyncio.create_task(operation.run())
    try:
        await asyncio.wait_for(ready.wait(), 30)
        assert await operation.probe() == {"answer": 42}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_event_handlers_see_every_event_in_order(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    seen: list[tuple[str, Any]] = []
    gate = asyncio.Event()

    @opd.on.event(crd, registry=registry)
    async def watch_all(type: str, spec: dict[str, Any], **_: Any) -> None:
        await gate.wait()  # hold the object's processing while more events queue up behind it
        seen.append((type, spec.get("n")))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "evts", {"n": 0})
        for n in range(1, 4):
            await _patch(api, namespace, "evts", {"spec": {"n": n}})
        await asyncio.sleep(0.5)
        gate.set()
        await eventually(lambda: len(seen) >= 4)
        await _delete(api, namespace, "evts")
        await eventually(lambda: seen[-1][0] == "DELETED")
    assert seen == [("ADDED", 0), ("MODIFIED", 1), ("MODIFIED", 2), ("MODIFIED", 3), ("DELETED", 3)]


async def test_users_own_opd_dev_annotations_are_neither_removed_nor_ignored(
    api: client.ApiClient, crd: str, namespace: str
) -> None:
    registry = opd.OperatorRegistry()
    updates: list[Any] = []
    tries: list[int] = []

    @opd.on.create(crd, registry=registry)
    def flaky(retry: int, **_: Any) -> None:
        tries.append(retry)
        if retry == 0:
            raise opd.TemporaryError("once", delay=0.1)  # progress is written, then purged

    opd.on.update(crd, registry=registry, field="metadata.annotations")(
        lambda new, **_: updates.append(dict(new or {})))
    settings = opd.OperatorSettings()
    settings.persistence.storage = "annotations"  # markers beside the user's own annotations
    settings.persistence.prefix = "mine.opd.dev"  # as the daemon names a plugin's
    async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace]):
        await create_kex(api, namespace, "annotated", annotations={"opd.dev/ttl": "3600", "mine.opd.dev/ttl": "1"})
        await eventually(lambda: _annotated(api, namespace, "annotated"))
        await _patch(api, namespace, "annotated", {"metadata": {"annotations": {"opd.dev/ttl": "60"}}})
        await eventually(lambda: bool(updates))
        obj = await get_kex(api, namespace, "annotated")
    assert tries == [0, 1]
    # Not a handler's progress record, though in opd's domain and valid JSON: left alone.
    assert obj["metadata"]["annotations"]["mine.opd.dev/ttl"] == "1"
    assert obj["metadata"]["annotations"]["opd.dev/ttl"] == "60"
    assert updates == [{"opd.dev/ttl": "60"}]  # the bare opd.dev domain is the user's: a change


async def _annotated(api: client.ApiClient, namespace: str, name: str) -> bool:
    obj = await get_kex(api, namespace, name)
    return "mine.opd.dev/last-handled-configuration" in (obj["metadata"].get("annotations") or {})


async def test_timers_stop_when_their_filters_stop_matching(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    ticks: list[float] = []
    opd.on.timer(crd, registry=registry, interval=0.2, labels={"tick": "yes"},
                 when=lambda spec, **_: not spec.get("paused"))(lambda **_: ticks.append(time.monotonic()))
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "filtered", labels={"tick": "yes"})
        await eventually(lambda: len(ticks) >= 2)
        await _patch(api, namespace, "filtered", {"spec": {"paused": True}})

        async def released() -> bool:
            obj = await get_kex(api, namespace, "filtered")
            return "opd.dev/finalizer" not in (obj["metadata"].get("finalizers") or [])

        await eventually(released)
        count = len(ticks)
        await asyncio.sleep(0.6)
        assert len(ticks) == count
        await _patch(api, namespace, "filtered", {"spec": {"paused": None}, "metadata": {"labels": {"tick": None}}})
        await asyncio.sleep(0.6)
        assert len(ticks) == count  # the label went too: still nothing
