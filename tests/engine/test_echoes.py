"""opd's own writes come back as watch events (echoes): skipped when nothing else changed in between,
handled when somebody else wrote meanwhile (their change is in the echo, and only there)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import RunningOperator, create_kex, eventually, get_kex
from kubernetes_asyncio import client

import opd


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


async def test_the_echo_of_opds_own_write_is_not_processed_again(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    looked: list[str] = []

    def counted(name: str, **_: Any) -> bool:
        looked.append(name)  # filters are evaluated once per change processed
        return True

    opd.on.create(crd, registry=registry, when=counted)(lambda **_: {"done": True})
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        for i in range(5):
            await create_kex(api, namespace, f"quiet-{i}")

        async def stored() -> bool:
            found = [((await get_kex(api, namespace, f"quiet-{i}")).get("status") or {}) for i in range(5)]
            return all(status.get("<lambda>") for status in found)

        await eventually(stored)
        await asyncio.sleep(1.0)  # every echo has come back
    assert sorted(looked) == [f"quiet-{i}" for i in range(5)]  # once each: the echoes were skipped


async def test_a_change_made_while_opd_writes_is_handled(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    updates: list[Any] = []

    @opd.on.create(crd, registry=registry)
    def slow(**_: Any) -> None:
        time.sleep(1.0)  # meanwhile, somebody changes the spec

    @opd.on.update(crd, registry=registry)
    def changed(new: dict[str, Any], **_: Any) -> None:
        updates.append(new.get("spec"))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "busy", {"size": 1})
        await asyncio.sleep(0.4)
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "kopf.dev", "v1", namespace, crd, "busy", {"spec": {"size": 2}},
            _content_type="application/merge-patch+json")
        await eventually(lambda: updates == [{"size": 2}])


async def test_a_deletion_that_came_before_opds_write_is_handled(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """The object is deleted while its create handler runs; opd's write lands on the deleting object:
    its answer shows the deletion, so the echo is processed and the delete handler runs."""
    registry = opd.OperatorRegistry()
    deleted: list[str] = []

    @opd.on.create(crd, registry=registry)
    def slow(**_: Any) -> dict[str, Any]:
        time.sleep(1.0)
        return {"done": True}

    opd.on.delete(crd, registry=registry)(lambda name, **_: deleted.append(name))
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "doomed")

        async def held() -> bool:
            meta = (await get_kex(api, namespace, "doomed"))["metadata"]
            return "opd.dev/finalizer" in (meta.get("finalizers") or [])

        await eventually(held, every=0.05)
        await client.CustomObjectsApi(api).delete_namespaced_custom_object("kopf.dev", "v1", namespace, crd, "doomed")
        await eventually(lambda: deleted == ["doomed"])
