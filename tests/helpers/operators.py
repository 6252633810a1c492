"""Helpers for tests that run operators against the real apiserver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from opd.testing.running import RunningOperator, eventually

__all__ = ["RunningOperator", "ScriptProcess", "create_kex", "eventually", "get_kex", "handled"]

GROUP, VERSION, PLURAL = "kopf.dev", "v1", "kopfexamples"


async def create_kex(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any] | None = None,
                     **meta: Any) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "KopfExample",
            "metadata": {"name": name, **meta}, "spec": spec or {}}
    result: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body)
    return result


async def get_kex(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name)
    return result




def handled(obj: dict[str, Any], field: str = "opd") -> bool:
    return bool((obj.get("status") or {}).get(field, {}).get("lastHandled"))


class ScriptProcess:
    """A Python script run as a child process, stopped by its PID."""

    def __init__(self, code: str, tmp_path: Path, env: dict[str, str]) -> None:
        self.path = tmp_path / "script.py"
        self.path.write_text(textwrap.dedent(code))
        self.log = tmp_path / "script.log"
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ScriptProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(self.path)], stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

