"""The daemon's supervisor, in-process: plugins on shared streams, crash isolation, reload, health."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path

import aiohttp
import daemon_plugins
import pytest
from kubernetes_asyncio import client
from operators import create_kex, eventually

from opd.daemon import config as daemon_config
from opd.daemon.supervisor import PATCH_WINDOW, Supervisor


def _eps(*names: str) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name, f"daemon_plugins:{name.replace('-', '_')}", "opd.plugins") for name in names]


def _config(tmp_path: Path, kubeconfig: Path, namespace: str, extra: str = "") -> Path:
    path = tmp_path / "opd.toml"
    path.write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3

[kubernetes]
kubeconfig = "{kubeconfig}"

[plugins.recorder_a]
label = "a"

[plugins.recorder_b]
label = "b"
{extra}
""")
    return path


class Running:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.supervisor.run(self.stop, self.reload))
        await asyncio.wait_for(self.supervisor.started.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


@pytest.fixture(autouse=True)
def _clean_calls() -> None:
    daemon_plugins.CALLS.clear()
    daemon_plugins.FLAKY_STARTS.clear()


@pytest.fixture
async def running(tmp_path: Path, kubeconfig: Path, namespace: str, crd: str) -> AsyncIterator[Running]:
    config = daemon_config.load(_config(tmp_path, kubeconfig, namespace))
    async with Running(Supervisor(config, env={}, entry_points=_eps("recorder_a", "recorder_b", "flaky"))) as run:
        yield run


async def test_plugins_share_one_stream_and_survive_a_crashing_neighbour(
    running: Running, api: client.ApiClient, namespace: str
) -> None:
    supervisor = running.supervisor
    await eventually(lambda: asyncio.sleep(0, supervisor.ready()), timeout=30)
    assert supervisor.runners["flaky"].restarts == 1  # crashed once, restarted, now ready
    assert "first start fails" in (supervisor.runners["flaky"].last_error or "")
    assert supervisor.cluster is not None
    assert len(supervisor.cluster.hub.watchers) == 1  # three plugins, one LIST+WATCH
    assert supervisor.cluster.client.patches.window == PATCH_WINDOW  # and their writes of an object shared
    await create_kex(api, namespace, "daemon-obj")
    await eventually(lambda: asyncio.sleep(0, len(daemon_plugins.CALLS) == 3))
    assert sorted(daemon_plugins.CALLS) == [("a", "daemon-obj"), ("b", "daemon-obj"), ("flaky", "daemon-obj")]

    async def stored() -> dict[str, object] | None:
        obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "daemon-obj")
        status = obj.get("status") or {}
        return status if all(status.get(p, {}).get("record") for p in ("recorder_a", "recorder_b", "flaky")) else None

    # Each plugin's results under its own name, though all three handlers are called 'record'.
    status = await eventually(stored)
    assert [status[p]["record"] for p in ("recorder_a", "recorder_b", "flaky")] == ["a", "b", "flaky"]
    report = supervisor.report()
    assert report["ready"]
    assert report["plugins"]["flaky"]["restarts"] == 1


async def test_reload_restarts_only_the_changed_plugin(
    running: Running, tmp_path: Path, kubeconfig: Path, namespace: str
) -> None:
    supervisor = running.supervisor
    await eventually(lambda: asyncio.sleep(0, supervisor.ready()), timeout=30)
    before = dict(supervisor.runners)
    _config(tmp_path, kubeconfig, namespace, extra="\n[plugins.flaky]\nsetting = 2\n")
    running.reload.set()
    await eventually(lambda: asyncio.sleep(0, supervisor.runners.get("flaky") is not before["flaky"]))
    assert supervisor.runners["recorder_a"] is before["recorder_a"]
    assert supervisor.runners["recorder_b"] is before["recorder_b"]
    assert dict(supervisor.runners["flaky"].plugin.config.options) == {"setting": 2}

    # A broken file is refused: the running configuration stays.
    (tmp_path / "opd.toml").write_text("[opd]\nnamespaces = 5\n")
    running.reload.set()
    await asyncio.sleep(0.5)
    assert set(supervisor.runners) == {"recorder_a", "recorder_b", "flaky"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_endpoints(tmp_path: Path, kubeconfig: Path, namespace: str, crd: str,
                                api: client.ApiClient) -> None:
    port = _free_port()
    path = _config(tmp_path, kubeconfig, namespace)
    text = path.read_text().replace("shutdown_timeout = 3", f'shutdown_timeout = 3\nlisten = "127.0.0.1:{port}"')
    path.write_text(text)
    config = daemon_config.load(path)
    assert dataclasses.asdict(config.opd)["listen"] is not None
    async with Running(Supervisor(config, env={}, entry_points=_eps("recorder_a"))) as run:
        await eventually(lambda: asyncio.sleep(0, run.supervisor.ready()), timeout=30)
        await create_kex(api, namespace, "metered")
        await eventually(lambda: asyncio.sleep(0, bool(daemon_plugins.CALLS)))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
                body = await response.json()
                assert body["plugins"]["recorder_a"]["ready"] is True
                assert body["watchers"][0]["listed"] is True

            async def metrics() -> str:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    return await response.text()

            text = await eventually(lambda: _with_runs(metrics))
            assert 'opd_plugin_ready{plugin="recorder_a"} 1.0' in text
            assert "opd_watch_streams 1.0" in text


async def _with_runs(metrics: object) -> str | None:
    text: str = await metrics()  # type: ignore[operator]
    return text if 'outcome="success"' in text else None


async def test_a_plugin_in_its_own_thread(tmp_path: Path, kubeconfig: Path, namespace: str, crd: str,
                                          api: client.ApiClient) -> None:
    import threading

    path = _config(tmp_path, kubeconfig, namespace, extra='isolation = "thread"\n')  # in [plugins.recorder_b]
    config = daemon_config.load(path)
    assert config.plugin("recorder_b").isolation == "thread"
    async with Running(Supervisor(config, env={}, entry_points=_eps("recorder_a", "recorder_b"))) as run:
        await eventually(lambda: asyncio.sleep(0, run.supervisor.ready()), timeout=30)
        assert any(t.name == "opd-plugin-recorder_b" for t in threading.enumerate())
        await create_kex(api, namespace, "threaded")
        both = [("a", "threaded"), ("b", "threaded")]
        await eventually(lambda: asyncio.sleep(0, sorted(daemon_plugins.CALLS) == both))
    assert not any(t.name == "opd-plugin-recorder_b" for t in threading.enumerate())
