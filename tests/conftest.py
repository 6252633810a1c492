"""Fixtures: one real local control plane per test session, a fresh namespace per test."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from opd.errors import ControlPlaneError
from opd.testing import LocalControlPlane

CRD_GROUP = "kopf.dev"
CRD_PLURAL = "kopfexamples"

KOPFEXAMPLE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{CRD_PLURAL}.{CRD_GROUP}"},
    "spec": {
        "group": CRD_GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": CRD_PLURAL,
            "singular": "kopfexample",
            "kind": "KopfExample",
            "shortNames": ["kex"],
        },
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }},
        }],
    },
}


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    cp = LocalControlPlane()
    try:
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(f"local control plane: {exc}", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: LocalControlPlane) -> Path:
    return control_plane.kubeconfig


async def make_api(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


async def ensure_crd(api: client.ApiClient, body: dict[str, Any]) -> None:
    ext = client.ApiextensionsV1Api(api)
    try:
        await ext.create_custom_resource_definition(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    name = body["metadata"]["name"]
    for _ in range(100):
        crd = await ext.read_custom_resource_definition(name)
        conditions = crd.status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"CRD {name} not established")


@pytest.fixture(scope="session")
def crd(kubeconfig: Path) -> str:
    """The KopfExample CRD (kopfexamples.kopf.dev/v1, status subresource)."""

    async def create() -> None:
        async with await make_api(kubeconfig) as api:
            await ensure_crd(api, KOPFEXAMPLE_CRD)

    asyncio.run(create())
    return CRD_PLURAL


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    async with await make_api(kubeconfig) as api_client:
        yield api_client


@pytest.fixture
async def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (the namespace controller finishes it)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        await core.delete_namespace(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
