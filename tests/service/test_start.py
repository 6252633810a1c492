"""`opd start` and `opd run` as processes: installed plugins, systemd notifications, signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex, eventually, get_kex
from helpers.processes import Process, _env
from kubernetes_asyncio import client


class NotifySocket:
    """A fake $NOTIFY_SOCKET: what systemd would receive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def has(self, field: str) -> bool:
        return any(field in m.splitlines() for m in self.drain())


def _config(path: Path, kubeconfig: Path, namespace: str, greeting: str) -> Path:
    path.write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3
log_format = "text"

[kubernetes]
kubeconfig = "{kubeconfig}"

[plugins]
enable = ["good", "decorated", "broken-import", "broken-register"]

[plugins.good]
greeting = "{greeting}"
""")
    return path


@pytest.mark.timeout(300)
async def test_opd_start_runs_plugins_notifies_reloads_and_stops(
    venv: Path, kubeconfig: Path, crd: str, namespace: str, api: client.ApiClient, tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    config = _config(tmp_path / "opd.toml", kubeconfig, namespace, "hello")
    proc = Process([str(venv / "bin" / "opd"), "start", "--config", str(config)], tmp_path / "opd.log",
                   _env(NOTIFY_SOCKET=str(notify.path)))
    try:
        await eventually(lambda: notify.has("READY=1"), timeout=60)
        out = proc.output()
        # The broken plugins are reported, one line each, and the others run.
        assert "plugin 'broken-import' failed: " in out
        assert "plugin 'broken-register' failed: " in out
        assert "Traceback" not in out

        await create_kex(api, namespace, "first", {"size": 1})
        first = await eventually(lambda: _result(api, namespace, "first"))
        assert first == {"size": 1, "greeting": "hello"}

        _config(config, kubeconfig, namespace, "hi")  # only the good plugin's table changes
        proc.popen.send_signal(signal.SIGHUP)
        await eventually(lambda: "restarted: good" in proc.output(), timeout=30)
        await create_kex(api, namespace, "second", {"size": 2})
        second = await eventually(lambda: _result(api, namespace, "second"))
        assert second == {"size": 2, "greeting": "hi"}

        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.popen.wait, 30)
        took = time.monotonic() - started
        assert code == 0, proc.output()
        assert took < 10, f"stopping took {took:.1f}s"
        assert notify.has("STOPPING=1")
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()


async def _result(api: client.ApiClient, namespace: str, name: str) -> Any:
    obj = await get_kex(api, namespace, name)
    return ((obj.get("status") or {}).get("good") or {}).get("create_fn")


def test_opd_start_refuses_a_bad_config_before_running(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "opd.toml"
    config.write_text('[opd]\nnamespaces = 7\nnamespace = ["x"]\n')
    result = subprocess.run([str(venv / "bin" / "opd"), "start", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("[opd].namespaces: expected a list of strings, got integer" in line for line in lines), lines
    assert any("did you mean 'namespaces'" in line for line in lines), lines
    assert "Traceback" not in result.stderr


HANDLERS = """
import opd

@opd.on.create('kopfexamples')
def create_fn(spec, **_):
    return {'doubled': spec.get('size', 0) * 2}
"""


async def test_opd_run_loads_files_and_stops_on_sigterm(
    kubeconfig: Path, crd: str, namespace: str, api: client.ApiClient, tmp_path: Path
) -> None:
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLERS)
    proc = Process([sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace, "--kubeconfig",
                    str(kubeconfig), "--log-format", "text"], tmp_path / "run.log", _env())
    try:
        await eventually(lambda: "ready" in proc.output(), timeout=30)
        await create_kex(api, namespace, "dev", {"size": 21})

        async def doubled() -> Any:
            obj = await get_kex(api, namespace, "dev")
            return (obj.get("status") or {}).get("create_fn")

        assert await eventually(doubled) == {"doubled": 42}
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.get_running_loop().run_in_executor(None, proc.popen.wait, 15) == 0
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot load handlers from {path}: no such file"),
    ("def broken(:\n", "cannot load handlers from {path}: SyntaxError"),
    ("import opd\nraise RuntimeError('no config')\n", "RuntimeError: no config (handlers.py:2)"),
    ("x = 1\n", "no handlers registered"),
])
def test_opd_run_bad_input_is_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "handlers.py"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "opd", "run", str(path)], capture_output=True, text=True,
                            timeout=60, env=_env())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert expected.format(path=path) in lines[0]


async def test_with_no_cluster_configured_the_running_local_cluster_is_used(
    control_plane: Any, crd: str, namespace: str, api: client.ApiClient, tmp_path: Path
) -> None:
    import json

    assert control_plane.assets is not None
    cache = tmp_path / "cache"
    env = _env(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(cache))
    env.pop("KUBECONFIG", None)
    folder = cache / "opd" / "local-cluster"  # where `opd local-cluster start` keeps its state
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({
        "kubeconfig": str(control_plane.kubeconfig), "server": control_plane.server, "pids": control_plane.pids,
        "binaries": {"etcd": str(control_plane.assets.etcd), "kube-apiserver": str(control_plane.assets.kube_apiserver),
                     "kube-controller-manager": str(control_plane.assets.kube_controller_manager)},
    }))
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLERS)
    proc = Process([sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace, "--log-format", "text"],
                   tmp_path / "run.log", env)
    try:
        await eventually(lambda: "ready" in proc.output(), timeout=30)
        assert f"no cluster configured: using the local cluster at {control_plane.server}" in proc.output()
        await create_kex(api, namespace, "local", {"size": 1})

        async def doubled() -> Any:
            obj = await get_kex(api, namespace, "local")
            return (obj.get("status") or {}).get("create_fn")

        assert await eventually(doubled) == {"doubled": 2}
    finally:
        proc.stop()


@pytest.mark.timeout(300)
async def test_opd_start_runs_the_example_plugins(
    venv: Path, kubeconfig: Path, namespace: str, api: client.ApiClient, tmp_path: Path
) -> None:
    """The three example plugins, pip-installed, each acting through `opd start`."""
    import uuid

    core = client.CoreV1Api(api)
    stem = f"ex-{uuid.uuid4().hex[:6]}"
    target, fresh = f"{stem}-target", f"{stem}-fresh"
    await core.create_namespace({"metadata": {"name": target}})
    config = tmp_path / "opd.toml"
    config.write_text(f"""
[opd]
namespaces = ["{namespace}", "{target}"]
shutdown_timeout = 3

[kubernetes]
kubeconfig = "{kubeconfig}"

[plugins]
enable = ["mirror", "ttl", "nsdefaults"]

[plugins.mirror]
resync = 0
[[plugins.mirror.rules]]
from = "{namespace}"
to = ["{target}"]

[plugins.ttl]
interval = 0.5

[plugins.nsdefaults]
include = ["{stem}-*"]
""")
    proc = Process([str(venv / "bin" / "opd"), "start", "--config", str(config), "--log-format", "text"],
                   tmp_path / "opd.log", _env())
    try:
        try:
            await eventually(lambda: "3 plugin(s) ready" in proc.output(), timeout=60)
        except AssertionError:
            pytest.fail(f"not ready; opd said:\n{proc.output()}")
        await core.create_namespaced_config_map(namespace, {"metadata": {
            "name": "shared", "labels": {"opd.dev/mirror": "true"}, "annotations": {"opd.dev/mirror-to": target}},
            "data": {"k": "v"}})
        await core.create_namespaced_config_map(namespace, {"metadata": {
            "name": "short-lived", "annotations": {"opd.dev/ttl": "1s"}}})
        await core.create_namespace({"metadata": {"name": fresh}})

        async def read(ns: str, name: str) -> Any:
            try:
                return await core.read_namespaced_config_map(name, ns)
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        copy = await eventually(lambda: read(target, "shared"), timeout=30)
        assert copy.data == {"k": "v"}  # mirror
        await eventually(lambda: read(fresh, "defaults"), timeout=30)  # nsdefaults

        async def expired() -> bool:
            return await read(namespace, "short-lived") is None

        await eventually(expired, timeout=30)  # ttl
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.get_running_loop().run_in_executor(None, proc.popen.wait, 30) == 0
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()
        for ns in (target, fresh):
            await core.delete_namespace(ns)
