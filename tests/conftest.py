"""Fixtures of opd's own tests; the generic ones (control_plane, kubeconfig, api, namespace)
come from opd.testing.fixtures, opted in here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.crds import CRD_PLURAL, KOPFEXAMPLE_CRD
from helpers.plugin_venv import build_venv

from opd.testing.fixtures import ensure_crd, make_api

pytest_plugins = ["opd.testing.fixtures"]

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
    """A fresh virtualenv with opd and the fixture plugins installed (see helpers/plugin_venv.py)."""
    return build_venv(tmp_path_factory)
