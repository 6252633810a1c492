"""Helpers for tests that run operators against the real apiserver."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

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


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not reached within {timeout}s; last value: {last!r}")


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


class RunningOperator:
    """An operator in the test's own loop, with a stop flag; ``async with`` waits until ready."""

    def __init__(self, **kwargs: Any) -> None:
        import opd

        self.stop_flag = asyncio.Event()
        self.ready_flag = asyncio.Event()
        self.kwargs = {"install_signal_handlers": False, **kwargs}
        self.task: asyncio.Task[None] | None = None
        self._opd = opd

    async def __aenter__(self) -> RunningOperator:
        self.task = asyncio.create_task(self._opd.operator(
            stop_flag=self.stop_flag, ready_flag=self.ready_flag, **self.kwargs))
        ready = asyncio.create_task(self.ready_flag.wait())
        await asyncio.wait({ready, self.task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            ready.cancel()
            self.task.result()  # raises what the operator failed with
        assert self.ready_flag.is_set(), "operator not ready within 30s"
        return self

    async def stop(self) -> float:
        assert self.task is not None
        started = time.monotonic()
        self.stop_flag.set()
        await asyncio.wait_for(self.task, 30)
        return time.monotonic() - started

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.stop()
