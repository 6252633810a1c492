"""KopfRunner: a Kopf user's test (Kopf's example 09) runs on opd with its import changed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from operators import create_kex, eventually

from opd.testing import KopfRunner

HANDLERS = '''
import opd as kopf

@kopf.on.create("kopfexamples")
def created(name, logger, **_):
    logger.info(f"created {name}, and here we are")
    return {"seen": name}

@kopf.on.delete("kopfexamples")
def deleted(name, logger, **_):
    logger.info(f"deleted {name}, really deleted")
'''


async def test_kopf_runner_runs_an_operator_for_a_test(
        api: client.ApiClient, crd: str, namespace: str, kubeconfig: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    handlers = tmp_path / "example.py"
    handlers.write_text(HANDLERS)
    custom = client.CustomObjectsApi(api)
    with KopfRunner(["run", "-n", namespace, "--verbose", str(handlers)]) as runner:
        await create_kex(api, namespace, "runner")
        await eventually(lambda: _said(runner, "created runner, and here we are"))
        await custom.delete_namespaced_custom_object("kopf.dev", "v1", namespace, crd, "runner")
        await eventually(lambda: _said(runner, "deleted runner, really deleted"))
    assert runner.exit_code == 0 and runner.exception is None
    assert "created runner" in runner.stdout


async def _said(runner: KopfRunner, text: str) -> bool:
    return text in runner.output


def test_kopf_runner_reports_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    started = time.monotonic()
    with KopfRunner(["run", "-A", str(broken)], reraise=False) as runner:
        pass
    assert runner.exit_code == 1 and "SyntaxError" in str(runner.exception)
    assert time.monotonic() - started < 10
    with pytest.raises(Exception, match="SyntaxError"), KopfRunner(["run", "-A", str(broken)]):
        pass
