"""Sub-handlers (opd.subhandler, opd.on.this, opd.execute) on the real apiserver: each with its own
progress, retries and result; done ones are not run again, also after a restart."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import RunningOperator, create_kex, eventually, get_kex
from kubernetes_asyncio import client

import opd


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


async def _status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (await get_kex(api, namespace, name)).get("status") or {}
    return status


@pytest.mark.parametrize("storage", ["status", "annotations"])
async def test_subhandlers_have_their_own_progress_and_results(
        api: client.ApiClient, crd: str, namespace: str, storage: str) -> None:
    registry = opd.OperatorRegistry()
    runs: collections.Counter[str] = collections.Counter()

    @opd.on.create(crd, registry=registry)
    def create_fn(spec: dict[str, Any], **_: Any) -> str:
        runs["create_fn"] += 1
        for item in spec.get("items", []):
            @opd.subhandler(id=f"item-{item}")
            def create_item(item: str = item, retry: int = 0, **_: Any) -> dict[str, Any]:
                runs[item] += 1
                if item == "flaky" and retry < 2:
                    raise opd.TemporaryError("not yet", delay=0.2)
                return {"item": item, "retry": retry}
        return "parent done"

    settings = opd.OperatorSettings()
    settings.persistence.storage = storage
    async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace]):
        await create_kex(api, namespace, "items", {"items": ["ok", "flaky"]})

        async def finished() -> Any:
            status = await _status(api, namespace, "items")
            return status if status.get("create_fn") == "parent done" else None

        status = await eventually(finished)
        await asyncio.sleep(0.5)
    assert status["create_fn/item-ok"] == {"item": "ok", "retry": 0}
    assert status["create_fn/item-flaky"] == {"item": "flaky", "retry": 2}
    # The done sub-handler ran once; the parent ran again for each retry of the flaky one, to declare it.
    assert runs == {"ok": 1, "flaky": 3, "create_fn": 3}


async def test_a_done_subhandler_is_not_run_again_after_a_restart(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = opd.OperatorRegistry()
    runs: collections.Counter[str] = collections.Counter()

    @opd.on.create(crd, registry=registry)
    async def create_fn(**_: Any) -> None:
        async def first(**_: Any) -> None:
            runs["first"] += 1

        async def second(retry: int, **_: Any) -> None:
            runs["second"] += 1
            if retry == 0:
                raise opd.TemporaryError("later", delay=1.5)

        await opd.execute(fns={"first": first, "second": second})

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "restarted")

        async def recorded() -> bool:
            progress = ((await _status(api, namespace, "restarted")).get("opd") or {}).get("progress") or {}
            return bool((progress.get("create_fn/second") or {}).get("retries"))

        await eventually(recorded)  # its first try failed, and that is on the object
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await eventually(lambda: runs["second"] == 2)

        async def done() -> bool:
            return bool(((await _status(api, namespace, "restarted")).get("opd") or {}).get("lastHandled"))

        await eventually(done)
    assert runs == {"first": 1, "second": 2}


async def test_on_this_is_kopfs_spelling_and_a_subhandler_outside_a_handler_is_one_line() -> None:
    with pytest.raises(opd.OpdError, match=r"^opd.subhandler works only inside a running"):
        opd.subhandler(id="x")
    with pytest.raises(opd.OpdError, match=r"^opd.subhandler works only inside a running"):
        opd.on.this(id="x")
