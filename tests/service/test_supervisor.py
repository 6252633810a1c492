"""The daemon's supervisor, in-process: plugins on shared streams, crash isolation, reload, health."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import socket
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest
from helpers import daemon_plugins
from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client

import opd
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry
from opd.service import config as daemon_config
from opd.service.plugins import Plugin
from opd.service.runner import PluginRunner, RestartBackoff
from opd.service.supervisor import PATCH_WINDOW, Supervisor
from opd.settings import OperatorSettings


def _eps(*names: str) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name, f"helpers.daemon_plugins:{name.replace('-', '_')}", "opd.plugins")
            for name in names]


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
    await eventually(lambda: supervisor.ready(), timeout=30)
    assert supervisor.runners["flaky"].restarts == 1  # crashed once, restarted, now ready
    assert "first start fails" in (supervisor.runners["flaky"].last_error or "")
    assert supervisor.cluster is not None
    assert len(supervisor.cluster.hub.watchers) == 1  # three plugins, one LIST+WATCH
    assert supervisor.cluster.client.patches.window == PATCH_WINDOW  # and their writes of an object shared
    await create_kex(api, namespace, "daemon-obj")
    await eventually(lambda: len(daemon_plugins.CALLS) == 3)
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
    await eventually(lambda: supervisor.ready(), timeout=30)
    before = dict(supervisor.runners)
    _config(tmp_path, kubeconfig, namespace, extra="\n[plugins.flaky]\nsetting = 2\n")
    running.reload.set()
    await eventually(lambda: supervisor.runners.get("flaky") is not before["flaky"])
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
        await eventually(lambda: run.supervisor.ready(), timeout=30)
        await create_kex(api, namespace, "metered")
        await eventually(lambda: bool(daemon_plugins.CALLS))
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
            # No process metrics: the unit's ProcSubset=pid hides what they would read.
            assert "process_" not in text and "python_" not in text


async def _with_runs(metrics: object) -> str | None:
    text: str = await metrics()  # type: ignore[operator]
    return text if 'outcome="success"' in text else None


async def test_a_plugin_in_its_own_thread(tmp_path: Path, kubeconfig: Path, namespace: str, crd: str,
                                          api: client.ApiClient) -> None:
    """It runs, and shows in /readyz, /metrics and the watcher list like the others (its own connection)."""
    import threading

    port = _free_port()
    path = _config(tmp_path, kubeconfig, namespace, extra='isolation = "thread"\n')  # in [plugins.recorder_b]
    listen = f'shutdown_timeout = 3\nlisten = "127.0.0.1:{port}"'
    path.write_text(path.read_text().replace("shutdown_timeout = 3", listen))
    config = daemon_config.load(path)
    assert config.plugin("recorder_b").isolation == "thread"
    async with Running(Supervisor(config, env={}, entry_points=_eps("recorder_a", "recorder_b"))) as run:
        await eventually(lambda: run.supervisor.ready(), timeout=30)
        assert any(t.name == "opd-plugin-recorder_b" for t in threading.enumerate())
        await create_kex(api, namespace, "threaded")
        both = [("a", "threaded"), ("b", "threaded")]
        await eventually(lambda: sorted(daemon_plugins.CALLS) == both)
        connections = sorted(w["connection"] for w in run.supervisor.report()["watchers"])
        assert connections == ["recorder_b", "shared"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                body = await response.json()
            assert response.status == 200
            assert body["plugins"]["recorder_b"]["ready"] is True
            assert body["plugins"]["recorder_b"]["isolation"] == "thread"
            assert {w["connection"] for w in body["watchers"]} == {"shared", "recorder_b"}

            async def metrics() -> str | None:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                return text if 'plugin="recorder_b",resource=' in text and 'outcome="success"' in text else None

            text = await eventually(metrics)
            assert 'opd_plugin_ready{plugin="recorder_b"} 1.0' in text
            assert 'opd_handler_runs_total{handler="record",outcome="success",plugin="recorder_b"' in text
            assert 'connection="recorder_b"' in text  # its own watch stream
            assert 'opd_patch_requests_total{connection="recorder_b"}' in text
            assert "opd_watch_streams 1.0" in text  # the shared ones: recorder_b's is its own
    assert not any(t.name == "opd-plugin-recorder_b" for t in threading.enumerate())


# -- restarts: backoff, and crashes in any task a plugin's operator spawned ----------------------------------------


def test_restart_backoff_doubles_and_resets_after_a_good_run() -> None:
    backoff = RestartBackoff(initial=1, maximum=8, reset_after=60)
    assert [backoff.delay(ran_for=0.5) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.delay(ran_for=60) == 1  # it ran well for a minute: a new story
    assert backoff.delay(ran_for=59) == 2


def _plugin(name: str) -> Plugin:
    return Plugin(name=name, value=f"tests:{name}", distribution=None, version=None,
                  config=daemon_config.DaemonConfig().plugin(name), registry=OperatorRegistry(),
                  settings=OperatorSettings())


async def test_a_runner_restarts_with_backoff_reset_after_a_good_run() -> None:
    """Crashing at once doubles the delay; a run that lasted past reset_after starts it over."""
    runs = [0.0, 0.0, 0.0, 0.4, 0.0]  # seconds each run lasts before it crashes; then it runs for good
    delays: list[float] = []
    done = asyncio.Event()

    class Counted(RestartBackoff):
        def delay(self, ran_for: float) -> float:
            delays.append(super().delay(ran_for))
            return delays[-1]

    class Runner(PluginRunner):
        async def _run_once(self, cluster: object) -> None:
            if not runs:
                done.set()
                await asyncio.Event().wait()
            await asyncio.sleep(runs.pop(0))
            raise RuntimeError("crash")

    runner = Runner(_plugin("crashy"), login=Login(), shutdown_timeout=1,
                    backoff=Counted(initial=0.01, maximum=1, reset_after=0.3))
    runner.start(None)  # type: ignore[arg-type]  # this runner needs no cluster
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await runner.stop()
    assert delays == [0.01, 0.02, 0.04, 0.01, 0.02]
    assert runner.restarts == 5
    assert runner.last_error == "RuntimeError: crash"


BACKGROUND: list[str] = []


class SpawnsAtStartup:
    """Its startup handler starts a background task that fails, the first time only."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.startup(registry=registry)
        async def boot(**_: object) -> None:
            BACKGROUND.append("startup")
            if BACKGROUND.count("startup") == 1:
                asyncio.get_running_loop().create_task(_fail_soon("the startup's task failed"), name="refresher")

        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(**_: object) -> None:
            pass


class SpawnsInAHandler:
    """Its handler starts a background task that fails, for the first object only."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.create("kopfexamples", registry=registry)
        async def create_fn(name: str, **_: object) -> str:
            BACKGROUND.append(name)
            if BACKGROUND.count(name) == 1 and name == "first":
                asyncio.create_task(_fail_soon("the handler's task failed"), name="notifier")  # noqa: RUF006
            return name


async def _fail_soon(message: str) -> None:
    await asyncio.sleep(0.2)
    raise RuntimeError(message)


spawns_at_startup = SpawnsAtStartup()
spawns_in_a_handler = SpawnsInAHandler()


async def test_a_crash_in_a_task_a_plugin_spawned_restarts_that_plugin(
        tmp_path: Path, kubeconfig: Path, namespace: str, crd: str, api: client.ApiClient) -> None:
    BACKGROUND.clear()
    config = daemon_config.load(_config(tmp_path, kubeconfig, namespace))
    eps = [*_eps("recorder_a"), *(metadata.EntryPoint(name, f"{__name__}:{name}", "opd.plugins")
                                   for name in ("spawns_at_startup", "spawns_in_a_handler"))]
    async with Running(Supervisor(config, env={}, entry_points=eps)) as run:
        runners = run.supervisor.runners
        # The startup's task failed 0.2 s in: that plugin restarted (and its startup ran again).
        await eventually(lambda: runners["spawns_at_startup"].restarts == 1, timeout=30)
        assert "the startup's task failed" in (runners["spawns_at_startup"].last_error or "")
        assert run.supervisor.healthy()  # a plugin waiting to restart does not stop the watchdog
        await eventually(lambda: run.supervisor.ready(), timeout=30)
        assert BACKGROUND.count("startup") == 2

        await create_kex(api, namespace, "first")
        await eventually(lambda: runners["spawns_in_a_handler"].restarts == 1, timeout=30)
        assert "the handler's task failed" in (runners["spawns_in_a_handler"].last_error or "")
        await eventually(lambda: run.supervisor.ready(), timeout=30)
        # The others did not notice.
        assert runners["spawns_at_startup"].restarts == 1
        assert runners["recorder_a"].restarts == 0
        await create_kex(api, namespace, "second")
        await eventually(lambda: "second" in BACKGROUND)


async def test_a_dead_task_of_the_operation_stops_it_with_its_error(
        kubeconfig: Path, namespace: str, crd: str) -> None:
    """Operation.run() no longer waits forever when a task of its own (here: its readiness) dies."""
    from opd.engine.operation import Operation

    registry = OperatorRegistry()

    @opd.on.create("kopfexamples", registry=registry)
    def create_fn(**_: object) -> None:
        pass

    operation = Operation(registry=registry, settings=OperatorSettings(), memo={}, namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(kubeconfig)))

    async def broken() -> None:
        raise LookupError("a bug in a task of the operation")

    operation._announce_ready = broken  # type: ignore[method-assign]
    with pytest.raises(LookupError, match="a bug in a task"):
        await asyncio.wait_for(operation.run(), 30)


# -- what counts as failed, for READY=1 --------------------------------------------------------------------------


def test_a_watch_refused_for_good_counts_as_failed_a_passing_error_does_not() -> None:
    """What a stream's status says, read for a plugin that has not listed: its HTTP status decides, not its text."""
    from opd.engine.status import StreamStatus, WatchError

    def stream(error: WatchError, listed: bool = False) -> StreamStatus:
        return StreamStatus(resource="kopfexamples.v1.kopf.dev", namespace="ns", selector=None, listed=listed,
                            healthy=False, error=error)

    refused = "not allowed (403): kopfexamples is forbidden; check the credentials and RBAC"
    where = "kopfexamples.v1.kopf.dev in ns"
    assert stream(WatchError("APIError", 403, refused)).refusal == f"cannot watch {where}: {refused}"
    assert stream(WatchError("ClientOSError", None, "Connection reset by peer")).refusal is None
    assert stream(WatchError("APIError", 403, refused), listed=True).refusal is None  # listed since
    # A passing error whose text happens to say "(403)" is still a passing error; a 404 that says no number is not.
    assert stream(WatchError("APIError", 500, "etcd said (403) somewhere")).refusal is None
    assert stream(WatchError("APIError", 404, "not served: was the CRD deleted?")).refusal is not None


async def test_a_plugin_not_ready_within_the_bound_counts_as_failed() -> None:
    supervisor = Supervisor(daemon_config.DaemonConfig(), env={"OPD_READY_TIMEOUT": "0.2"})
    runner = PluginRunner(_plugin("slow"), login=Login(), shutdown_timeout=1)
    assert await supervisor._diagnose(runner) is None  # still within the bound
    await asyncio.sleep(0.3)
    assert await supervisor._diagnose(runner) == "not ready within 0.2s"
    runner.ready.set()
    assert await supervisor._diagnose(runner) is None
    runner.ready.clear()
    runner.crashed, runner.error_type, runner.state = True, "KeyError", "failed"
    assert await supervisor._diagnose(runner) == "crashed: KeyError; restarting"


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_ready_timeout_is_one_line(value: str) -> None:
    from opd.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"\$OPD_READY_TIMEOUT: expected a number of seconds above 0, got '{value}'"):
        Supervisor(daemon_config.DaemonConfig(), env={"OPD_READY_TIMEOUT": value})


async def test_task_tracking_restarts_on_an_unhandled_task_error_only() -> None:
    """A task's error that its creator awaits is handled; one nobody retrieves fails the attempt it belongs to."""
    from opd.service.runner import _Attempt, _current, track_tasks

    undo = track_tasks(asyncio.get_running_loop())
    try:
        async def fails() -> None:
            raise KeyError("lost")

        async def run(handled: bool) -> None:
            if handled:
                with pytest.raises(KeyError):
                    await asyncio.wait_for(asyncio.create_task(fails()), 5)  # the creator sees it: no crash
                await asyncio.gather(fails(), return_exceptions=True)
            else:
                asyncio.create_task(fails(), name="fire and forget")  # noqa: RUF006
            await asyncio.sleep(5)

        outcomes = []
        for handled in (True, False):
            attempt = _Attempt("p")
            context = contextvars.copy_context()
            context.run(_current.set, attempt)
            attempt.task = asyncio.get_running_loop().create_task(run(handled), context=context)
            await asyncio.wait({attempt.task}, timeout=1)
            outcomes.append((attempt.task.done(), repr(attempt.error)))
            attempt.task.cancel()
        assert outcomes == [(False, "None"), (True, "KeyError('lost')")]
    finally:
        undo()
