"""Patches of one object from several operators sharing a client, against the real API server."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex
from kubernetes_asyncio import client

from opd.kube.api import APIError, KubeClient
from opd.kube.batching import PatchNotJSON
from opd.kube.credentials import Login, load_configuration

PATH = "/apis/kopf.dev/v1/namespaces/{namespace}/kopfexamples/{name}"


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
    async with KubeClient(cfg, source=source) as kube_client:
        kube_client.patches.window = 0.05  # as opd start sets it for plugins sharing the client
        yield kube_client


async def test_patches_within_the_window_land_as_one_write(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    await create_kex(api, namespace, "shared")
    path = PATH.format(namespace=namespace, name="shared") + "/status"
    before = await kube.get(path)
    writes = [kube.patch(path, {"status": {f"plugin{i}": {"create_fn": {"n": i}}}}) for i in range(5)]
    responses = await asyncio.gather(*writes)
    versions = {r["metadata"]["resourceVersion"] for r in responses}
    assert len(versions) == 1  # one write: every writer saw the same new version
    assert versions != {before["metadata"]["resourceVersion"]}
    assert kube.patches.merged == 4
    status = (await kube.get(path))["status"]
    assert [status[f"plugin{i}"]["create_fn"]["n"] for i in range(5)] == [0, 1, 2, 3, 4]


async def test_an_invalid_patch_fails_alone(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    await create_kex(api, namespace, "picky")
    path = PATH.format(namespace=namespace, name="picky")
    good = kube.patch(path, {"metadata": {"labels": {"good": "yes"}}})
    bad = kube.patch(path, {"metadata": {"annotations": {"not a valid key!": "x"}}})  # the server refuses: 422
    outcomes = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(outcomes[1], APIError) and outcomes[1].status == 422
    assert not isinstance(outcomes[0], BaseException)
    assert (await kube.get(path))["metadata"]["labels"] == {"good": "yes"}


@pytest.mark.parametrize("bad", [{"x", "y"}, math.nan])
async def test_a_patch_that_is_not_json_fails_only_its_writer(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str, bad: Any
) -> None:
    await create_kex(api, namespace, "mixed")
    path = PATH.format(namespace=namespace, name="mixed")
    good = kube.patch(path, {"metadata": {"labels": {"good": "yes"}}})
    wrong = kube.patch(path, {"metadata": {"annotations": {"bad": bad}}})
    other = kube.patch(path, {"spec": {"kept": True}})
    outcomes = await asyncio.gather(good, wrong, other, return_exceptions=True)
    assert isinstance(outcomes[1], PatchNotJSON), outcomes
    assert str(outcomes[1]).startswith(f"the patch of {path} is not JSON at metadata.annotations.bad: ")
    assert not isinstance(outcomes[0], BaseException) and not isinstance(outcomes[2], BaseException), outcomes
    assert outcomes[0]["metadata"]["resourceVersion"] == outcomes[2]["metadata"]["resourceVersion"]  # one write
    obj = await kube.get(path)
    assert obj["metadata"]["labels"] == {"good": "yes"}
    assert obj["spec"] == {"kept": True}
    assert "bad" not in (obj["metadata"].get("annotations") or {})
