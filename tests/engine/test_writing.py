"""A handler's patch on its way to the API server: checked once (where a bad one can fail alone),
serialised once (when it is sent), and never copied in between; what lands is checked in the cluster."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.operators import RunningOperator, create_kex, eventually, get_kex, handled
from kubernetes_asyncio import client
from loguru import logger

import opd
from opd.kube import api as kube_api


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


def _holds(value: Any, wanted: object, *, same: bool) -> bool:
    """Whether ``wanted`` is inside ``value``: the very object (``same``), or an equal one."""
    if value is wanted or (not same and value == wanted):
        return True
    if isinstance(value, dict):
        return any(_holds(v, wanted, same=same) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds(v, wanted, same=same) for v in value)
    return False


def _counting(original: Callable[..., Any], wanted: object, calls: list[bool]) -> Callable[..., Any]:
    def counted(value: Any, *args: Any, **kwargs: Any) -> Any:
        # Not state.dump (sorted keys): the object's essence, read back when its echo comes.
        if not kwargs.get("sort_keys") and _holds(value, wanted, same=False):
            calls.append(_holds(value, wanted, same=True))
        return original(value, *args, **kwargs)

    return counted


async def test_a_handlers_patch_is_checked_once_serialised_once_and_not_copied(
        api: client.ApiClient, crd: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was checked twice (once per handler, again by the batcher) and copied four times (into all
    handlers' patch, into the plan, twice by the applier) before orjson serialised it."""
    registry = opd.OperatorRegistry()
    deep = {"marker": "8b0c4f", "items": [1, 2, {"x": "y"}]}

    @opd.on.create(crd, registry=registry)
    def create_fn(patch: opd.Patch, **_: Any) -> str:
        patch.spec["deep"] = deep
        patch.status["seen"] = "yes"
        return "done"

    checks: list[bool] = []  # per json.dumps call with the patch: whether it held the handler's own object
    sends: list[bool] = []  # the same, per orjson.dumps call (the request's body)
    monkeypatch.setattr(json, "dumps", _counting(json.dumps, deep, checks))
    monkeypatch.setattr(kube_api.orjson, "dumps", _counting(orjson.dumps, deep, sends))
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "one")

        async def written() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, "one")
            return obj if handled(obj) and obj.get("status", {}).get("create_fn") == "done" else None

        obj = await eventually(written)
    assert obj["spec"]["deep"] == deep and obj["status"]["seen"] == "yes"
    assert checks == [True], checks  # checked once, by the engine, on the handler's own patch
    assert sends == [True], sends  # serialised once, and what went was the handler's own objects


async def test_opds_own_records_are_still_checked_before_they_are_sent(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """The handlers' outputs are checked once, by the engine; opd's own progress records are not the
    handlers', and a retry delay that is NaN makes one that is not JSON: said in one line, not sent."""
    registry = opd.OperatorRegistry()

    @opd.on.create(crd, registry=registry)
    def create_fn(patch: opd.Patch, **_: Any) -> None:
        patch.spec["tried"] = True
        raise opd.TemporaryError("again", delay=math.nan)

    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="ERROR")
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await create_kex(api, namespace, "nan")
            await eventually(lambda: [line for line in logs if "the outcome cannot be written" in line])
            obj = await get_kex(api, namespace, "nan")
    finally:
        logger.remove(sink)
    said = [line for line in logs if "the outcome cannot be written" in line]
    assert said and all("not JSON" in line and "/nan" in line and "Traceback" not in line for line in said)
    assert obj["spec"]["tried"] is True  # the handler's patch first, as always
    assert "opd" not in (obj.get("status") or {})  # no marker written from it
