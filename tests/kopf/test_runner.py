"""KopfRunner: a Kopf user's test (Kopf's example 09) runs on opd with its import changed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client

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


PROBED = '''
import opd as kopf

@kopf.on.probe(id="answer")
def answer(**_):
    return 42
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, json.loads(response.read())


async def test_kopf_runner_takes_kopf_runs_flags_and_result_attributes(
        namespace: str, kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf run's short and logging flags, --liveness included; Kopf's result attributes."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    handlers = tmp_path / "probed.py"
    handlers.write_text(PROBED)
    url = f"http://127.0.0.1:{_free_port()}/healthz"
    with KopfRunner(["run", "-n", namespace, "-d", "-L", url, "--log-format", "full", "--no-log-prefix",
                     "--log-refkey", "k8s", str(handlers)]) as runner:
        assert await asyncio.to_thread(_get, url) == (200, {"answer": 42})
    assert (runner.exit_code, runner.exception, runner.exc_info) == (0, None, None)
    assert b"liveness endpoint at" in runner.stdout_bytes and runner.stderr == ""
    with KopfRunner(["run", "-A", "-P", "mine", str(handlers)], reraise=False) as refused:
        pass
    assert refused.exit_code == 1 and refused.exc_info is not None
    assert str(refused.exception).startswith("--peering: opd run does not peer")


def test_opd_run_takes_kopf_runs_short_and_logging_flags(tmp_path: Path) -> None:
    """-d, -L, --no-log-prefix and --log-refkey are read (a bad -L URL is then the one error)."""
    handlers = tmp_path / "probed.py"
    handlers.write_text(PROBED)
    result = subprocess.run([sys.executable, "-m", "opd", "run", str(handlers), "-d", "--no-log-prefix",
                             "--log-refkey", "k8s", "-L", "127.0.0.1:8080/healthz"],
                            capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --liveness: expected http://HOST:PORT/PATH (e.g. http://0.0.0.0:8080/healthz), "
        "got '127.0.0.1:8080/healthz'")
    assert result.returncode == 1
