"""pytest fixtures for tests against a real local control plane, opt-in: a project's
top-level conftest.py says ``pytest_plugins = ["opd.testing.fixtures"]``. They need
pytest-asyncio (``opd[test]``), so opd does not register them for every project with pytest.

- ``control_plane``: one LocalControlPlane per test session (etcd + kube-apiserver).
- ``kubeconfig``: its kubeconfig file.
- ``api``: a kubernetes_asyncio ApiClient for it.
- ``namespace``: a fresh namespace per test, deleted afterwards.

PYTEST_DONT_REWRITE: a conftest may import ``make_api``/``ensure_crd`` from here before pytest
loads the module as a plugin (which would warn that it cannot rewrite it); it has no asserts.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config

from opd.errors import ControlPlaneError
from opd.localcluster import LocalControlPlane


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
        await ext.create_custom_resource_definition(body)  # type: ignore[arg-type]  # dicts serialize as well
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


@pytest_asyncio.fixture
async def api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    async with await make_api(kubeconfig) as api_client:
        yield api_client


@pytest_asyncio.fixture
async def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (the namespace controller finishes it)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    yield name
    try:
        await core.delete_namespace(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "apiserver: uses the local kube-apiserver (marked by opd.testing.fixtures)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the cluster, through any fixture that needs ``control_plane``, carries the
    ``apiserver`` marker: ``-m 'not apiserver'`` runs the rest without starting one."""
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.apiserver)
