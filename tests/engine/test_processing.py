"""Processing changes against the real apiserver: outcomes persisted on the object,
no re-handling after a restart, markers that survive structural schemas, bad input."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
from helpers.crds import CRD_GROUP, ensure_crd
from helpers.operators import RunningOperator, create_kex, eventually, get_kex, handled
from kubernetes_asyncio import client
from loguru import logger

import opd
from opd.localcluster import LocalControlPlane
from opd.testing.proxy import FaultProxy


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


async def test_handled_once_and_not_again_after_restart(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    created: collections.Counter[str] = collections.Counter()
    resumed: collections.Counter[str] = collections.Counter()

    @opd.on.create(crd, registry=registry)
    def create_fn(name: str, spec: dict[str, Any], **_: Any) -> dict[str, Any]:
        created[name] += 1
        return {"size": spec.get("size")}

    @opd.on.resume(crd, registry=registry)
    def resume_fn(name: str, **_: Any) -> None:
        resumed[name] += 1

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "once", {"size": 3})
        await eventually(lambda: created["once"] == 1)
        obj = await eventually(lambda: _handled(api, namespace, "once"))
        assert obj["status"]["create_fn"] == {"size": 3}
        await asyncio.sleep(0.5)
    assert created == {"once": 1}
    assert resumed == {}  # a new object is created, not resumed

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await eventually(lambda: resumed["once"] == 1)
        await asyncio.sleep(0.5)
    assert created == {"once": 1}
    assert resumed == {"once": 1}


async def _handled(api: client.ApiClient, namespace: str, name: str, field: str = "opd") -> dict[str, Any] | None:
    obj = await get_kex(api, namespace, name)
    return obj if handled(obj, field) else None


async def test_update_gets_old_new_and_diff(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    updates: list[tuple[Any, Any, Any]] = []
    opd.on.create(crd, registry=registry)(lambda **_: None)

    @opd.on.update(crd, registry=registry)
    def update_fn(old: dict[str, Any], new: dict[str, Any], diff: Any, **_: Any) -> None:
        updates.append((old["spec"], new["spec"], diff))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "upd", {"size": 1})
        await eventually(lambda: _handled(api, namespace, "upd"))
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            CRD_GROUP, "v1", namespace, crd, "upd", {"spec": {"size": 2}},
            _content_type="application/merge-patch+json")
        await eventually(lambda: bool(updates))
        # A status-only change (ours or anybody's) is not an update.
        await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            CRD_GROUP, "v1", namespace, crd, "upd", {"status": {"other": 1}},
            _content_type="application/merge-patch+json")
        await asyncio.sleep(0.5)
    assert updates == [({"size": 1}, {"size": 2}, (("change", ("spec", "size"), 1, 2),))]


async def test_temporary_error_is_retried_and_its_result_stored(
    api: client.ApiClient, crd: str, namespace: str
) -> None:
    registry = opd.OperatorRegistry()
    tries: list[int] = []

    @opd.on.create(crd, registry=registry)
    def flaky(retry: int, **_: Any) -> dict[str, int]:
        tries.append(retry)
        if retry < 2:
            raise opd.TemporaryError("not yet", delay=0.2)
        return {"after": retry}

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "flaky")
        obj = await eventually(lambda: _handled(api, namespace, "flaky"))
    assert tries == [0, 1, 2]
    assert obj["status"]["flaky"] == {"after": 2}
    assert not obj["status"]["opd"].get("progress")  # purged once done


STRICT = ("strict.opd.dev", "v1", "strictthings")


async def _strict_crd(api: client.ApiClient) -> None:
    """A kind whose structural schema prunes every status field but ``phase``: opd's markers included."""
    await ensure_crd(api, {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "strictthings.strict.opd.dev"},
        "spec": {"group": "strict.opd.dev", "scope": "Namespaced",
                 "names": {"plural": "strictthings", "singular": "strictthing", "kind": "StrictThing"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                   "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                               }}}}]},
    })


async def _create_strict(api: client.ApiClient, namespace: str, name: str) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        *STRICT[:2], namespace, STRICT[2],
        {"apiVersion": "strict.opd.dev/v1", "kind": "StrictThing", "metadata": {"name": name}, "spec": {}})


async def _annotated(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(*STRICT[:2], namespace, STRICT[2], name)
    return obj if "opd.dev/last-handled-configuration" in (obj["metadata"].get("annotations") or {}) else None


async def test_markers_fall_back_to_annotations_when_status_is_pruned(
    api: client.ApiClient, namespace: str
) -> None:
    """A structural schema drops unknown status fields: opd notices and keeps its markers in annotations."""
    await _strict_crd(api)
    registry = opd.OperatorRegistry()
    calls: list[str] = []
    opd.on.create("strictthings", registry=registry)(lambda name, **_: calls.append(name))
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await _create_strict(api, namespace, "s")
        await eventually(lambda: _annotated(api, namespace, "s"))
        await asyncio.sleep(1.0)
    assert calls == ["s"]


async def test_markers_of_objects_handled_meanwhile_follow_the_fall_back(
    api: client.ApiClient, namespace: str
) -> None:
    """Objects whose markers went to the status while another object's write found it pruned: theirs
    are lost too, so they go to annotations as well (tunnel-operator's Services were created again)."""
    await _strict_crd(api)
    registry = opd.OperatorRegistry()
    names = [f"s{n}" for n in range(4)]
    calls: collections.Counter[str] = collections.Counter()
    together = asyncio.Event()

    @opd.on.create("strictthings", registry=registry)
    async def create_fn(name: str, **_: Any) -> None:
        calls[name] += 1
        if len(calls) == len(names):
            together.set()
        await together.wait()  # all finish at once: their marker writes leave side by side

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        for name in names:
            await _create_strict(api, namespace, name)
        for name in names:
            await eventually(lambda name=name: _annotated(api, namespace, name))
        await asyncio.sleep(1.0)
    assert calls == dict.fromkeys(names, 1)


async def test_a_failing_handler_does_not_stop_other_objects(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    logs: list[str] = []

    @opd.on.create(crd, registry=registry)
    def picky(name: str, **_: Any) -> str:
        if name == "bad":
            raise ValueError("I do not like this one")
        return "ok"

    sink = logger.add(lambda m: logs.append(str(m)), level="ERROR")
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await create_kex(api, namespace, "bad")
            for i in range(3):
                await create_kex(api, namespace, f"good-{i}")
            for i in range(3):
                obj = await eventually(lambda i=i: _handled(api, namespace, f"good-{i}"))
                assert obj["status"]["picky"] == "ok"
            await eventually(lambda: any(f"{namespace}/bad" in m for m in logs))
    finally:
        logger.remove(sink)
    line = next(m for m in logs if f"{namespace}/bad" in m)
    assert "I do not like this one" in line
    assert "picky" in line


async def test_bad_kubeconfig_is_one_clear_error(tmp_path: Path) -> None:
    registry = opd.OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(lambda **_: None)
    missing = tmp_path / "nope"
    with pytest.raises(opd.ConfigError, match=f"kubeconfig {missing}: no such file"):
        await opd.operator(registry=registry, login=opd.Login(kubeconfig=str(missing)))
    broken = tmp_path / "broken"
    broken.write_text("clusters: [this is: not: yaml")
    with pytest.raises(opd.ConfigError, match=f"kubeconfig {broken}: ") as info:
        await opd.operator(registry=registry, login=opd.Login(kubeconfig=str(broken)))
    assert "\n" not in str(info.value)


async def test_unreachable_api_then_up_without_restart(
    control_plane: LocalControlPlane, api: client.ApiClient, crd: str, namespace: str, tmp_path: Path
) -> None:
    registry = opd.OperatorRegistry()
    seen: list[str] = []
    opd.on.create(crd, registry=registry)(lambda name, **_: seen.append(name))
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="WARNING")
    with FaultProxy("127.0.0.1", control_plane.apiserver_port) as proxy:
        proxy.refuse_new(True)
        kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
        ready = asyncio.Event()
        settings = opd.OperatorSettings()
        settings.watching.backoff_max = 1.0
        task = asyncio.create_task(opd.operator(
            registry=registry, settings=settings, namespaces=[namespace], ready_flag=ready,
            login=opd.Login(kubeconfig=str(kubeconfig)), install_signal_handlers=False))
        try:
            await eventually(lambda: any("unreachable" in m for m in logs))
            await asyncio.sleep(1.5)
            assert not ready.is_set()
            assert not task.done()
            proxy.refuse_new(False)
            await asyncio.wait_for(ready.wait(), 30)
            await create_kex(api, namespace, "late")
            await eventually(lambda: seen == ["late"])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            logger.remove(sink)
    assert sum("unreachable" in m for m in logs) == 1  # one line, not one per retry
