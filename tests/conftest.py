"""Fixtures of opd's own tests; the generic ones (control_plane, kubeconfig, api, namespace)
come from opd.testing.fixtures, opted in here."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from plugin_venv import build_venv

from opd.testing.fixtures import ensure_crd, make_api

pytest_plugins = ["opd.testing.fixtures"]

__all__ = ["CRD_GROUP", "CRD_PLURAL", "KOPFEXAMPLE_CRD", "ensure_crd", "make_api"]

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
def crd(kubeconfig: Path) -> str:
    """The KopfExample CRD (kopfexamples.kopf.dev/v1, status subresource)."""

    async def create() -> None:
        async with await make_api(kubeconfig) as api:
            await ensure_crd(api, KOPFEXAMPLE_CRD)

    asyncio.run(create())
    return CRD_PLURAL




@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with opd and the fixture plugins installed (see plugin_venv.py)."""
    return build_venv(tmp_path_factory)
