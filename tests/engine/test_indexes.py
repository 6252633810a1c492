"""In-memory indexes (opd.index) on the real apiserver: filled from the watch streams, kept current,
complete before any handler runs, given to every handler by name; errors as Kopf documents them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import RunningOperator, create_kex, eventually, get_kex
from kubernetes_asyncio import client

import opd
from opd.engine.cluster import Cluster
from opd.engine.indexing import Index, Store
from opd.engine.operation import Operation


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


def test_index_and_store_shapes() -> None:
    index = Index()
    index.put("u1", {"a": 1, ("x", "y"): None})
    index.put("u2", {"a": 2})
    assert dict(index.items()) == index._stores and sorted(index["a"]) == [1, 2] and 1 in index["a"]
    assert list(index[("x", "y")]) == [None] and isinstance(index["a"], Store)
    index.put("u1", {"b": 3})  # replaces u1's values
    assert sorted(index) == ["a", "b"] and list(index["a"]) == [2]
    index.remove("u2")
    assert list(index) == ["b"] and index.objects == 1


async def _configmap(core: client.CoreV1Api, namespace: str, name: str, labels: dict[str, str]) -> None:
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})  # type: ignore[arg-type]


async def test_handlers_see_complete_indexes_kept_current(api: client.ApiClient, crd: str, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(120):  # listed in pages of 25: handlers must not see a partial index
        await _configmap(core, namespace, f"cm-{i:03d}", {"app": "web" if i % 2 else "db"})
    registry = opd.OperatorRegistry()

    one_at_a_time = asyncio.Lock()

    @opd.index("configmaps", registry=registry, labels={"app": opd.PRESENT})
    async def by_app(labels: dict[str, str], name: str, **_: Any) -> dict[str, str]:
        async with one_at_a_time:  # slower than the handler: it must still wait for the whole index
            await asyncio.sleep(0.005)
        return {labels["app"]: name}

    @opd.index("configmaps", registry=registry)
    def names(name: str, **_: Any) -> str:
        return name  # not a dict: all under the key None

    @opd.on.create(crd, registry=registry)
    def count(by_app: opd.Index, names: opd.Index, spec: dict[str, Any], **_: Any) -> dict[str, int]:
        return {"web": len(by_app.get("web", [])), "db": len(by_app.get("db", [])), "all": len(names.get(None, []))}

    seen: dict[str, opd.Index] = {}

    @opd.on.startup(registry=registry)
    def grab(by_app: opd.Index, **_: Any) -> None:  # operator-level handlers get the indexes too
        seen["by_app"] = by_app

    @opd.on.update(crd, registry=registry)
    def recount(by_app: opd.Index, patch: opd.Patch, **_: Any) -> None:
        patch.status["recount"] = {app: sorted(store) for app, store in by_app.items()}

    settings = opd.OperatorSettings()
    settings.watching.list_page_size = 25
    await create_kex(api, namespace, "counter", {"n": 1})  # there before the start: handled at once
    async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace]):

        async def counted() -> Any:
            return ((await get_kex(api, namespace, "counter")).get("status") or {}).get("count")

        assert await eventually(counted) == {"web": 60, "db": 60, "all": 120}
        await core.delete_collection_namespaced_config_map(namespace, label_selector="app=db")
        await core.patch_namespaced_config_map("cm-001", namespace, {"metadata": {"labels": {"app": "api"}}})
        await core.patch_namespaced_config_map("cm-003", namespace, {"metadata": {"labels": {"app": None}}})

        async def settled() -> bool:
            index = seen["by_app"]
            return set(index) == {"web", "api"} and len(index["web"]) == 58

        await eventually(settled)
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "counter", {"spec": {"n": 2}},
            _content_type="application/merge-patch+json")

        async def recounted() -> Any:
            return ((await get_kex(api, namespace, "counter")).get("status") or {}).get("recount")

        found = await eventually(recounted)
        assert found["api"] == ["cm-001"] and "cm-003" not in found["web"] and len(found["web"]) == 58


async def test_index_errors_as_documented(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    registry = opd.OperatorRegistry()
    calls: list[str] = []

    indexes: dict[str, opd.Index] = {}
    opd.on.startup(registry=registry)(lambda ignored, permanent, **_: indexes.update(ignored=ignored,
                                                                                      permanent=permanent))

    @opd.index("configmaps", registry=registry)
    def ignored(name: str, labels: dict[str, str], **_: Any) -> dict[str, str]:
        if labels.get("fail"):
            raise RuntimeError("keep the stale value")
        return {name: labels.get("v", "")}

    @opd.index("configmaps", registry=registry, errors="permanent")
    def permanent(name: str, labels: dict[str, str], **_: Any) -> dict[str, str]:
        calls.append(name)
        if labels.get("fail"):
            raise RuntimeError("out for good")
        return {name: labels.get("v", "")}

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await _configmap(core, namespace, "cm", {"v": "1"})
        await eventually(lambda: "cm" in indexes["ignored"] and "cm" in indexes["permanent"])
        await core.patch_namespaced_config_map("cm", namespace, {"metadata": {"labels": {"fail": "yes", "v": "2"}}})
        await eventually(lambda: "cm" not in indexes["permanent"])
        assert list(indexes["ignored"]["cm"]) == ["1"]  # the earlier value stays
        runs = len(calls)
        await core.patch_namespaced_config_map("cm", namespace, {"metadata": {"labels": {"fail": None, "v": "3"}}})
        await eventually(lambda: list(indexes["ignored"].get("cm", [])) == ["3"])
        assert len(calls) == runs and "cm" not in indexes["permanent"]  # excluded: not even called again


async def test_indexes_of_two_operators_share_one_stream(kubeconfig: Path, api: client.ApiClient,
                                                        namespace: str) -> None:
    cluster = await Cluster.connect(opd.Login(kubeconfig=str(kubeconfig)), opd.OperatorSettings())
    tasks: list[asyncio.Task[None]] = []
    operations = []
    try:
        for label in ("one", "two"):
            registry = opd.OperatorRegistry()
            opd.index("configmaps", registry=registry, id="names")(lambda name, **_: name)
            ready = asyncio.Event()
            operation = Operation(registry=registry, settings=opd.OperatorSettings(), memo=opd.Memo(),
                                  namespaces=[namespace], clusterwide=False, cluster=cluster, on_ready=ready.set,
                                  name=label)
            operations.append(operation)
            tasks.append(asyncio.create_task(operation.run()))
            await asyncio.wait_for(ready.wait(), 30)
        await _configmap(client.CoreV1Api(api), namespace, "shared", {})

        def both() -> bool:
            return all(op.indexes is not None and "shared" in op.indexes.indexes["names"].get(None, [])
                       for op in operations)

        await eventually(lambda: both())
        assert len(cluster.hub.watchers) == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.close()
