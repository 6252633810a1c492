"""Watch streams against the real apiserver: 410 relists, dropped and silent connections,
server-side label selectors. No event is lost."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.crds import CRD_GROUP
from helpers.operators import RunningOperator, create_kex, eventually
from kubernetes_asyncio import client
from loguru import logger as opd_logger

import opd
from opd.engine.watching import Watcher
from opd.kube.api import KubeClient
from opd.kube.credentials import Login, load_configuration
from opd.kube.discovery import Discovery
from opd.localcluster import LocalControlPlane
from opd.resources import ResourceRef
from opd.settings import WatchingSettings
from opd.testing.proxy import FaultProxy


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
    async with KubeClient(cfg, source=source) as kube_client:
        yield kube_client


@pytest.fixture
def proxy(control_plane: LocalControlPlane) -> AsyncIterator[FaultProxy]:
    with FaultProxy("127.0.0.1", control_plane.apiserver_port) as fault_proxy:
        yield fault_proxy


async def test_gone_relists_and_reports_what_changed_meanwhile(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    resource = await Discovery(kube).resolve(ResourceRef.parse(crd))
    assert resource is not None
    events: list[tuple[str, str]] = []
    watcher = Watcher(kube, resource, namespace, settings=WatchingSettings(),
                      deliver=lambda kind, body: events.append((kind, body["metadata"]["name"])))
    await create_kex(api, namespace, "kept")
    await create_kex(api, namespace, "deleted")
    first = asyncio.create_task(watcher.run())
    await eventually(lambda: watcher.listed.is_set())
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert sorted(events) == [("ADDED", "deleted"), ("ADDED", "kept")]
    events.clear()

    # While the watcher is away: a deletion, a change, a creation.
    objects = client.CustomObjectsApi(api)
    await objects.delete_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, "deleted")
    await objects.patch_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, "kept", {"spec": {"x": 1}},
                                                 _content_type="application/merge-patch+json")
    await create_kex(api, namespace, "new")
    watcher.resource_version = "1"  # far older than the apiserver's window: it answers 410 Gone

    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: len(events) >= 3)
        await asyncio.sleep(0.3)
        assert sorted(events) == [("ADDED", "new"), ("DELETED", "deleted"), ("MODIFIED", "kept")]
        assert watcher.stats["gone"] == 1
        await create_kex(api, namespace, "after")  # and the resumed stream goes on
        await eventually(lambda: ("ADDED", "after") in events)
    finally:
        task.cancel()


async def test_the_watch_runs_while_a_throttled_list_is_delivered(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    """A list held back by its consumers (backpressure) must not delay the watch; the list then
    skips the objects the watch has reported since the snapshot, deletions included."""
    resource = await Discovery(kube).resolve(ResourceRef.parse(crd))
    assert resource is not None
    names = [f"obj-{i}" for i in range(6)]
    for name in names:
        await create_kex(api, namespace, name)
    events: list[tuple[str, str, str]] = []  # (type, name, spec.x)
    room = asyncio.Event()

    async def backlog() -> None:
        await room.wait()

    watcher = Watcher(kube, resource, namespace, settings=WatchingSettings(list_page_size=2),
                      deliver=lambda kind, body: events.append(
                          (kind, body["metadata"]["name"], str((body.get("spec") or {}).get("x")))))
    watcher.backlog = backlog
    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: len(events) == 2)  # the first page, then held
        await eventually(lambda: watcher.stats["watches"] == 1)  # watching already
        objects = client.CustomObjectsApi(api)
        await objects.patch_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, "obj-5", {"spec": {"x": 1}},
                                                     _content_type="application/merge-patch+json")
        await objects.delete_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, "obj-3")
        await eventually(lambda: len(events) == 4)
        assert events[2:] == [("MODIFIED", "obj-5", "1"), ("DELETED", "obj-3", "None")]
        assert not watcher.listed.is_set()
        room.set()
        await eventually(lambda: watcher.listed.is_set())
        await asyncio.sleep(0.3)
        # The rest of the list, without the older copies of obj-3 and obj-5.
        assert events[4:] == [("ADDED", "obj-2", "None"), ("ADDED", "obj-4", "None")]
        assert watcher.stats["watches"] == 1
    finally:
        task.cancel()


async def test_label_selector_goes_to_the_server(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    registry = opd.OperatorRegistry()
    opd.on.create(crd, registry=registry, labels={"app": "mine", "tier": opd.PRESENT})(lambda **_: None)
    opd.on.update(crd, registry=registry, labels={"app": "mine", "tier": "web"})(lambda **_: None)
    ref = registry.resources()[0]
    selector = registry.label_selector(ref)
    assert selector == "app=mine,tier"
    resource = await Discovery(kube).resolve(ref)
    assert resource is not None
    names: list[str] = []
    watcher = Watcher(kube, resource, namespace, settings=WatchingSettings(), label_selector=selector,
                      deliver=lambda kind, body: names.append(body["metadata"]["name"]))
    await create_kex(api, namespace, "theirs", labels={"app": "other", "tier": "web"})
    await create_kex(api, namespace, "mine", labels={"app": "mine", "tier": "web"})
    task = asyncio.create_task(watcher.run())
    try:
        await watcher.listed.wait()
        await create_kex(api, namespace, "mine-later", labels={"app": "mine", "tier": "db"})
        await create_kex(api, namespace, "untiered", labels={"app": "mine"})
        await eventually(lambda: "mine-later" in names)
        await asyncio.sleep(0.3)
        assert names == ["mine", "mine-later"]  # the others never left the server
    finally:
        task.cancel()


def _counting_registry(crd: str) -> tuple[opd.OperatorRegistry, collections.Counter[str]]:
    registry = opd.OperatorRegistry()
    calls: collections.Counter[str] = collections.Counter()

    @opd.on.create(crd, registry=registry)
    def create_fn(name: str, **_: Any) -> dict[str, str]:
        calls[name] += 1
        return {"seen": name}

    return registry, calls


async def test_reset_connections_lose_no_event(
    control_plane: LocalControlPlane, proxy: FaultProxy, api: client.ApiClient, crd: str, namespace: str,
    tmp_path: Path,
) -> None:
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
    registry, calls = _counting_registry(crd)
    settings = opd.OperatorSettings()
    settings.watching.backoff_initial = 0.1
    names = [f"obj-{i}" for i in range(30)]
    async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace],
                               login=opd.Login(kubeconfig=str(kubeconfig))):
        for i, name in enumerate(names):
            await create_kex(api, namespace, name)
            if i % 5 == 4:
                proxy.reset_all()
        await eventually(lambda: set(calls) >= set(names), timeout=60)
        await asyncio.sleep(0.5)
    assert set(calls) == set(names)
    # A write cut by a reset runs its handler again (at least once); nothing else does.
    assert sum(calls.values()) - len(names) <= 6


async def test_silent_connection_is_detected_and_resumed(
    control_plane: LocalControlPlane, proxy: FaultProxy, api: client.ApiClient, crd: str, namespace: str,
    tmp_path: Path,
) -> None:
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
    registry, calls = _counting_registry(crd)
    # Default settings: no stream is torn down for silence; the cluster's liveness probe finds the hang.
    async with RunningOperator(registry=registry, namespaces=[namespace], login=opd.Login(kubeconfig=str(kubeconfig))):
        await create_kex(api, namespace, "before")
        await eventually(lambda: calls["before"] == 1)
        assert proxy.blackhole_all() >= 1  # the watch stream (and pooled connections) go silent
        cut = time.monotonic()
        for i in range(5):
            await create_kex(api, namespace, f"during-{i}")
        await eventually(lambda: all(calls[f"during-{i}"] for i in range(5)), timeout=30)
        assert time.monotonic() - cut < 15.0
    assert calls == {"before": 1, **{f"during-{i}": 1 for i in range(5)}}


async def test_quiet_streams_are_not_reconnected(
    control_plane: LocalControlPlane, proxy: FaultProxy, api: client.ApiClient, crd: str, namespace: str,
    tmp_path: Path,
) -> None:
    """A quiet stream is not a dead one: 3 idle streams for 14 s cost no new connection (they were
    torn down every 10 s of silence before), only the cluster's probe on its one kept connection."""
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
    registry = opd.OperatorRegistry()
    for plural in ("kopfexamples", "configmaps", "secrets"):
        opd.on.create(plural, registry=registry, id=f"on_{plural}")(lambda **_: None)
    async with RunningOperator(registry=registry, namespaces=[namespace], login=opd.Login(kubeconfig=str(kubeconfig))):
        await asyncio.sleep(2.0)  # listed and watching; the request pool settles
        before = proxy.accepted
        await asyncio.sleep(14.0)
        assert proxy.accepted - before <= 1  # at most the probe's own connection, made once


async def test_a_watch_on_a_crd_that_appears_later(
    kubeconfig: Path, api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown resource is an error in the log and not ready; once its CRD exists, it is served."""
    from helpers.crds import ensure_crd

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    plural = f"late{namespace.replace('-', '')[-20:]}s"
    registry = opd.OperatorRegistry()
    seen: list[str] = []
    opd.on.create(plural, registry=registry)(lambda name, **_: seen.append(name))
    ready = asyncio.Event()
    logs: list[str] = []
    from loguru import logger

    sink = logger.add(lambda m: logs.append(str(m)), level="INFO")
    task = asyncio.create_task(opd.operator(registry=registry, namespaces=[namespace], ready_flag=ready,
                                            install_signal_handlers=False))
    try:
        await eventually(lambda: any(f"unknown resource {plural}" in m for m in logs))
        assert not ready.is_set()
        await ensure_crd(api, {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.late.opd.dev"},
            "spec": {"group": "late.opd.dev", "scope": "Namespaced",
                     "names": {"plural": plural, "singular": plural[:-1], "kind": "Late"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]},
        })
        await asyncio.wait_for(ready.wait(), 30)
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            "late.opd.dev", "v1", namespace, plural,
            {"apiVersion": "late.opd.dev/v1", "kind": "Late", "metadata": {"name": "first"}})
        await eventually(lambda: seen == ["first"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.remove(sink)
    assert sum(f"unknown resource {plural}" in m for m in logs) == 1  # said once, not every retry


@pytest.mark.parametrize("spelling", [
    ("kopfexamples",), ("kopfexample",), ("KopfExample",), ("kex",), ("kopfexamples.kopf.dev",),
    ("kopf.dev", "kopfexamples"), ("kopf.dev/v1", "kopfexamples"), ("kopf.dev", "v1", "kopfexamples"),
    ("kopf.dev/v1/kopfexamples",),
])
async def test_resource_spellings_resolve(kube: KubeClient, crd: str, spelling: tuple[str, ...]) -> None:
    resource = await Discovery(kube).resolve(ResourceRef.parse(*spelling))
    assert resource is not None
    assert (resource.group, resource.version, resource.plural) == ("kopf.dev", "v1", "kopfexamples")
    assert "status" in resource.subresources


@pytest.mark.parametrize("spelling", [("configmaps",), ("ConfigMap",), ("cm",), ("v1", "configmaps")])
async def test_builtin_spellings_resolve(kube: KubeClient, spelling: tuple[str, ...]) -> None:
    resource = await Discovery(kube).resolve(ResourceRef.parse(*spelling))
    assert resource is not None
    assert resource.path("ns", "x") == "/api/v1/namespaces/ns/configmaps/x"


async def test_namespace_globs_follow_namespaces_as_they_come(
    kubeconfig: Path, api: client.ApiClient, crd: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    core = client.CoreV1Api(api)
    stem = namespace[-6:]
    names = {"early": f"glob-{stem}-a", "late": f"glob-{stem}-b", "excluded": f"glob-{stem}-skip"}
    await core.create_namespace({"metadata": {"name": names["early"]}})
    await core.create_namespace({"metadata": {"name": names["excluded"]}})
    registry, calls = _counting_registry(crd)
    try:
        async with RunningOperator(registry=registry, namespaces=[f"glob-{stem}-*", "!*-skip"]):
            await core.create_namespace({"metadata": {"name": names["late"]}})
            for ns in names.values():
                await eventually(lambda ns=ns: _exists(core, ns))
                await create_kex(api, ns, f"in-{ns}")
            await eventually(lambda: {f"in-{names['early']}", f"in-{names['late']}"} <= set(calls))
            await asyncio.sleep(0.5)
        assert set(calls) == {f"in-{names['early']}", f"in-{names['late']}"}
    finally:
        for ns in names.values():
            await core.delete_namespace(ns)


async def _exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        await core.read_namespace(name)
    except client.ApiException:
        return False
    return True


async def test_a_crashed_watcher_restarts(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    from loguru import logger

    resource = await Discovery(kube).resolve(ResourceRef.parse(crd))
    assert resource is not None
    names: list[str] = []
    failures = [RuntimeError("a bug in a consumer")]

    def deliver(kind: str, body: dict[str, Any]) -> None:
        if failures:
            raise failures.pop()
        names.append(body["metadata"]["name"])

    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="ERROR")
    settings = WatchingSettings(backoff_initial=0.1)
    watcher = Watcher(kube, resource, namespace, settings=settings, deliver=deliver)
    await create_kex(api, namespace, "first")
    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: names == ["first"])
        await create_kex(api, namespace, "second")
        await eventually(lambda: names == ["first", "second"])
    finally:
        task.cancel()
        logger.remove(sink)
    assert any("crashed; restarting" in m for m in logs)


async def test_a_write_cut_by_a_silent_partition_is_retried_without_rerunning_the_handler(
    control_plane: LocalControlPlane, proxy: FaultProxy, api: client.ApiClient, crd: str, namespace: str,
    tmp_path: Path,
) -> None:
    import threading

    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
    registry = opd.OperatorRegistry()
    calls: collections.Counter[str] = collections.Counter()
    partitioned = threading.Event()

    @opd.on.create(crd, registry=registry)
    def create_fn(name: str, **_: Any) -> dict[str, str]:
        calls[name] += 1
        partitioned.wait(10)  # the outcome's PATCH goes out after the network went silent
        return {"seen": name}

    settings = opd.OperatorSettings()
    settings.watching.inactivity_timeout = 2.0
    settings.networking.read_timeout = 2.0
    async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace],
                               login=opd.Login(kubeconfig=str(kubeconfig))):
        await create_kex(api, namespace, "cut")
        await eventually(lambda: calls["cut"] == 1)
        proxy.blackhole_all()
        partitioned.set()

        async def stored() -> bool:
            obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(
                CRD_GROUP, "v1", namespace, crd, "cut")
            return (obj.get("status") or {}).get("create_fn") == {"seen": "cut"}

        await eventually(stored, timeout=30)
        await asyncio.sleep(0.5)
    assert calls == {"cut": 1}


async def test_odd_content_the_server_keeps_costs_no_crash_and_the_next_object_is_handled(
    kubeconfig: Path, api: client.ApiClient, crd: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom resource with x-kubernetes-preserve-unknown-fields keeps any JSON in spec and status,
    opd's own status field included: each such object is handled (its handler runs, opd's state is
    written afresh) with no ERROR and no traceback, and a good object after them is handled too."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    objects = client.CustomObjectsApi(api)
    odd_status: dict[str, Any] = {
        "status-string": "x", "status-list": [1, "two"], "opd-string": {"opd": "garbage"},
        "opd-odd-record": {"opd": {"lastHandled": 5, "progress": {"fn": {"delayed": "soon", "retries": "many",
                                                                          "started": [1]}}}},
        "opd-odd-progress": {"opd": {"lastHandled": "{not json", "progress": ["fn"]}},
    }
    for name in ("spec-list", "spec-string", *odd_status):
        spec: Any = [1, 2] if name == "spec-list" else "x" if name == "spec-string" else {}
        body = {"apiVersion": f"{CRD_GROUP}/v1", "kind": "KopfExample", "metadata": {"name": name}, "spec": spec}
        await objects.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, body)
        if name in odd_status:  # what somebody allowed to write the status subresource can leave there
            await objects.patch_namespaced_custom_object_status(
                CRD_GROUP, "v1", namespace, crd, name, {"status": odd_status[name]},
                _content_type="application/merge-patch+json")
    stored = {o["metadata"]["name"]: o.get("status")
              for o in (await objects.list_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd))["items"]}
    assert stored["status-list"] == [1, "two"] and stored["opd-odd-record"] == odd_status["opd-odd-record"]

    registry = opd.OperatorRegistry()
    ran: collections.Counter[str] = collections.Counter()

    @opd.on.create(crd, registry=registry)
    @opd.on.update(crd, registry=registry)
    def fn(name: str, **_: Any) -> None:
        ran[name] += 1

    said: list[str] = []
    sink = opd_logger.add(lambda m: said.append(str(m)), level="WARNING")
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await eventually(lambda: len(ran) == 7)
            await create_kex(api, namespace, "good")
            await eventually(lambda: ran["good"] == 1)

            async def state_written() -> bool:
                items = (await objects.list_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd))["items"]
                return all(isinstance(((o.get("status") or {}).get("opd") or {}).get("lastHandled"), str)
                           for o in items)
            await eventually(state_written)
    finally:
        opd_logger.remove(sink)
    assert not [m for m in said if "| ERROR" in m or "Traceback" in m], said
    assert all(count >= 1 for count in ran.values()) and len(ran) == 8


async def test_a_watch_line_past_the_bound_is_dropped_and_the_stream_goes_on(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    """The bound on a watch line, read from the real server with a small bound (the server keeps no
    object near 16 MiB): the line is not buffered past it, the stream resumes (and, the same line
    coming again, relists past it), and the objects after it are delivered."""
    resource = await Discovery(kube).resolve(ResourceRef.parse(crd))
    assert resource is not None
    events: list[tuple[str, str]] = []
    watcher = Watcher(kube, resource, namespace, settings=WatchingSettings(backoff_initial=0.1, backoff_max=0.5),
                      deliver=lambda kind, body: events.append((kind, body["metadata"]["name"])))
    watcher.max_line = 4096
    said: list[str] = []
    sink = opd_logger.add(lambda m: said.append(str(m)), level="WARNING")
    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: watcher.listed.is_set())
        await create_kex(api, namespace, "huge", {"blob": "x" * 20000})
        await create_kex(api, namespace, "after")
        await eventually(lambda: ("ADDED", "after") in events)
        # The huge one's event was dropped from the stream; the relist past it delivered it.
        await eventually(lambda: ("ADDED", "huge") in events)
        assert watcher.stats["malformed"] >= 1
        await create_kex(api, namespace, "later")
        await eventually(lambda: ("ADDED", "later") in events)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        opd_logger.remove(sink)
    assert sum("(over 4096)" in m for m in said) == 1, said  # said once, not at every retry
    assert not [m for m in said if "| ERROR" in m or "Traceback" in m], said
