"""The engine's status surface, on the local apiserver: a watch refused with 403 is in
``Operation.snapshot()`` as its HTTP status (not as text to search), it is why the operation
cannot be served, and the daemon's health says so; ``Operation.busy``/``spawned``/``disown``
act on exactly the objects a predicate picks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client

import opd
from opd.engine.operation import Operation
from opd.kube.credentials import Login
from opd.localcluster import LocalControlPlane
from opd.registry import OperatorRegistry
from opd.service import config as daemon_config
from opd.service.supervisor import Supervisor
from opd.settings import OperatorSettings

KEX = "kopfexamples.v1.kopf.dev"


async def _limited(api: client.ApiClient, control_plane: LocalControlPlane, namespace: str, path: Path) -> Path:
    """A kubeconfig of a ServiceAccount whose Role grants nothing on kopfexamples (yet: see ``_grant``)."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "limited"}})
    await rbac.create_namespaced_role(namespace, {"metadata": {"name": "limited"}, "rules": [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]})
    await rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "limited"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited"},
        "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}]})
    answer = await core.create_namespaced_service_account_token(
        "limited", namespace, {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}})
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "limited",
        "clusters": [{"name": "local", "cluster": {"server": control_plane.server,
                                                   "certificate-authority": str(control_plane.ca_file)}}],
        "users": [{"name": "limited", "user": {"token": answer.status.token}}],
        "contexts": [{"name": "limited", "context": {"cluster": "local", "user": "limited"}}]}))
    return path


async def _grant(api: client.ApiClient, namespace: str) -> None:
    await client.RbacAuthorizationV1Api(api).patch_namespaced_role("limited", namespace, {"rules": [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["kopf.dev"], "resources": ["kopfexamples", "kopfexamples/status"],
         "verbs": ["get", "list", "watch", "patch"]}]})


def _settings() -> OperatorSettings:
    settings = OperatorSettings()
    settings.watching.backoff_max = 1.0  # the grant is seen within a second or so
    return settings


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_watch_refused_with_403_is_in_the_snapshot_by_its_status(
        api: client.ApiClient, control_plane: LocalControlPlane, namespace: str, crd: str, tmp_path: Path,
        running: list[asyncio.Task[None]]) -> None:
    limited = await _limited(api, control_plane, namespace, tmp_path / "limited.kubeconfig")
    registry = OperatorRegistry()

    @opd.on.create("kopfexamples", registry=registry)
    def create_fn(**_: Any) -> None:
        pass

    operation = Operation(registry=registry, settings=_settings(), memo={}, namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(limited)))
    running.append(asyncio.create_task(operation.run()))

    async def unservable() -> tuple[str, ...]:
        return operation.snapshot().unservable

    reasons = await eventually(unservable)
    snap = operation.snapshot()
    [stream] = snap.streams
    assert stream.error is not None
    assert (stream.error.kind, stream.error.status, stream.error.refused) == ("APIError", 403, True)
    assert (stream.resource, stream.namespace, stream.listed, stream.healthy) == (KEX, namespace, False, False)
    assert "\n" not in stream.error.text and "(403)" in stream.error.text
    assert reasons == (f"cannot watch {KEX} in {namespace}: {stream.error.text}",)
    assert not snap.ready

    # Allowed now: the stream lists, and the reason and the error are gone; an object created since comes as an event.
    await _grant(api, namespace)

    async def ready() -> bool:
        return operation.snapshot().ready

    await eventually(ready)
    await create_kex(api, namespace, "seen")

    async def handled() -> bool:
        counters = operation.snapshot().processors.get(KEX)
        return counters is not None and counters.handled >= 1

    await eventually(handled)
    snap = operation.snapshot()
    [stream] = snap.streams
    assert (snap.ready, snap.unservable, stream.error, stream.listed) == (True, (), None, True)
    assert stream.received >= 1 and stream.malformed == 0
    assert snap.processors[KEX].failed == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_daemons_health_says_a_plugin_is_refused_with_403(
        api: client.ApiClient, control_plane: LocalControlPlane, namespace: str, crd: str, tmp_path: Path) -> None:
    limited = await _limited(api, control_plane, namespace, tmp_path / "limited.kubeconfig")
    port = _free_port()
    path = tmp_path / "opd.toml"
    path.write_text(f'[opd]\nnamespaces = ["{namespace}"]\nshutdown_timeout = 3\nlisten = "127.0.0.1:{port}"\n'
                    f'[kubernetes]\nkubeconfig = "{limited}"\n[plugins.recorder_a]\nlabel = "a"\n')
    entry = metadata.EntryPoint("recorder_a", "helpers.daemon_plugins:recorder_a", "opd.plugins")
    supervisor = Supervisor(daemon_config.load(path), env={}, entry_points=[entry])
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        async def failed() -> str | None:
            plugin = supervisor.snapshot().plugins.get("recorder_a")
            return plugin.failure if plugin is not None else None

        failure = await eventually(failed)
        assert failure.startswith(f"cannot watch {KEX} in {namespace}: not allowed (403)")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200  # one plugin's trouble is detail, not the daemon's death
                assert (await response.json())["plugins"]["recorder_a"]["failed"] == failure
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                body = await response.json()
        assert response.status == 200 and body["ready"]  # counted as failed: it does not hold readiness
        [watch] = [w for w in body["watchers"] if w["resource"] == KEX]
        assert (watch["status"], watch["listed"], watch["namespace"]) == (403, False, namespace)
        assert "(403)" in watch["error"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_disown_busy_and_spawned_act_on_the_objects_picked(
        api: client.ApiClient, kubeconfig: Path, namespace: str, crd: str,
        running: list[asyncio.Task[None]]) -> None:
    registry = OperatorRegistry()
    stops: list[str] = []  # names whose daemon was stopped
    release = asyncio.Event()

    @opd.daemon("kopfexamples", registry=registry)
    async def keep(name: str, stopped: Any, **_: Any) -> None:
        await stopped.wait()
        stops.append(name)

    @opd.on.update("kopfexamples", registry=registry)
    async def slow(**_: Any) -> None:
        await release.wait()

    operation = Operation(registry=registry, settings=OperatorSettings(), memo={}, namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(kubeconfig)))
    running.append(asyncio.create_task(operation.run()))
    # Created once it watches: listed instead, they could still be in process when both are spawned.
    await eventually(lambda: operation.snapshot().ready)
    uids = {name: (await create_kex(api, namespace, name))["metadata"]["uid"] for name in ("one", "two")}
    every = lambda uid: True  # noqa: E731

    async def both_spawned() -> bool:
        return operation.spawned(every) == frozenset(uids.values())

    await eventually(both_spawned)
    assert operation.busy(every) == frozenset()

    # An update whose handler waits: "two" is in process, "one" is not.
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfexamples", "two", {"spec": {"field": "changed"}},
        _content_type="application/merge-patch+json")

    async def two_busy() -> bool:
        return operation.busy(every) == {uids["two"]}

    await eventually(two_busy)
    assert operation.busy(lambda uid: uid == uids["one"]) == frozenset()

    # Disowning "one" stops its daemon (and only its); "two" keeps its daemon and its step in process.
    await operation.disown(lambda uid: uid == uids["one"], "another replica's now")
    assert stops == ["one"]
    assert operation.spawned(every) == {uids["two"]}
    assert operation.busy(every) == {uids["two"]}

    # stop_spawned stops the timers and daemons only: the step in process goes on, and ends.
    await operation.stop_spawned(lambda uid: uid == uids["two"], "draining")
    assert stops == ["one", "two"] and operation.spawned(lambda uid: uid == uids["two"]) == frozenset()
    assert operation.busy(every) == {uids["two"]}
    release.set()

    async def idle() -> bool:
        return operation.busy(every) == frozenset()

    await eventually(idle)
    assert operation.snapshot().processors[KEX].failed == 0


class _Keys:
    """A replica that holds every key for long; which key an object is of is set by the test."""

    def __init__(self) -> None:
        self.of: dict[str, int] = {}

    def key_of(self, uid: str) -> int:
        return self.of.get(uid, 2)

    def holds(self, key: int) -> bool:
        return True

    def granted(self) -> frozenset[int]:
        return frozenset({0, 1, 2})

    def left(self, key: int) -> float:
        return 3600.0


async def test_a_replicas_view_drains_and_loses_keys_through_the_operation(
        api: client.ApiClient, kubeconfig: Path, namespace: str, crd: str,
        running: list[asyncio.Task[None]]) -> None:
    """opd.ha's view hands objects over with the operation's surface alone: the key drained stops its
    objects' daemons and is no longer owned; the other key's objects go on."""
    from opd.ha import View

    registry = OperatorRegistry()
    stops: list[str] = []

    @opd.daemon("kopfexamples", registry=registry)
    async def keep(name: str, stopped: Any, **_: Any) -> None:
        await stopped.wait()
        stops.append(name)

    keys = _Keys()
    view = View(keys)
    operation = Operation(registry=registry, settings=OperatorSettings(), memo={}, namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(kubeconfig)), ownership=view)
    view.attach(operation)
    running.append(asyncio.create_task(operation.run()))
    uids = {name: (await create_kex(api, namespace, name))["metadata"]["uid"] for name in ("one", "two")}
    keys.of = {uids["one"]: 0, uids["two"]: 1}

    async def both_spawned() -> bool:
        return operation.spawned(lambda uid: True) == frozenset(uids.values())

    await eventually(both_spawned)
    await view.drain(frozenset({0}), "handed over")
    assert stops == ["one"]
    assert (view.owns(uids["one"]), view.owns(uids["two"])) == (False, True)
    assert operation.spawned(lambda uid: True) == {uids["two"]}
    assert not await view.busy(frozenset({0}))
    await view.lose(frozenset({0}), "lost")
    assert view.granted == {1, 2} and view.owns(uids["two"])
    assert stops == ["one"]  # the other key's daemon runs on
