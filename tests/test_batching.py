"""Patches of one object from several operators sharing a client, against the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from operators import create_kex

from opd.kube.api import APIError, KubeClient
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
