"""Several operators on one cluster connection share one watch stream per resource and namespace; one
that joins late gets every object, as throttled as the stream's own list."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers.crds import CRD_GROUP
from helpers.operators import create_kex, eventually, get_kex, handled
from kubernetes_asyncio import client

import opd
from opd.engine.cluster import Cluster
from opd.engine.hub import WatchHub
from opd.engine.operation import Operation
from opd.kube.api import KubeClient
from opd.kube.credentials import Login, load_configuration
from opd.kube.discovery import Discovery
from opd.resources import Resource, ResourceRef
from opd.settings import WatchingSettings
from opd.testing.proxy import FaultProxy

if TYPE_CHECKING:  # its home is moving (opd.testing -> opd.localcluster); only the annotation needs it
    from opd.localcluster import LocalControlPlane


def _operator(cluster: Cluster, label: str, namespace: str,
              calls: collections.Counter[tuple[str, str]]) -> tuple[Operation, asyncio.Event]:
    registry = opd.OperatorRegistry()

    @opd.on.create("kopfexamples", registry=registry, id=f"create_{label}")
    def create_fn(name: str, **_: Any) -> str:
        calls[(label, name)] += 1
        return label

    settings = opd.OperatorSettings()
    settings.persistence.prefix = f"{label}.opd.dev"
    settings.persistence.status_field = label
    ready = asyncio.Event()
    operation = Operation(registry=registry, settings=settings, memo=opd.Memo(), namespaces=[namespace],
                          clusterwide=False, cluster=cluster, on_ready=ready.set, name=label)
    return operation, ready


async def test_one_stream_fans_out_and_late_joiners_see_existing_objects(
    kubeconfig: Path, api: client.ApiClient, crd: str, namespace: str
) -> None:
    cluster = await Cluster.connect(opd.Login(kubeconfig=str(kubeconfig)), opd.OperatorSettings())
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    tasks: list[asyncio.Task[None]] = []
    try:
        first, first_ready = _operator(cluster, "first", namespace, calls)
        second, second_ready = _operator(cluster, "second", namespace, calls)
        tasks += [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        await asyncio.wait_for(asyncio.gather(first_ready.wait(), second_ready.wait()), 30)
        assert len(cluster.hub.watchers) == 1  # one LIST+WATCH for both
        await create_kex(api, namespace, "shared")

        async def both() -> bool:
            obj = await get_kex(api, namespace, "shared")
            return handled(obj, "first") and handled(obj, "second")

        await eventually(both)

        # A third operator joins the running stream: it still sees the object that exists.
        late, late_ready = _operator(cluster, "late", namespace, calls)
        tasks.append(asyncio.create_task(late.run()))
        await asyncio.wait_for(late_ready.wait(), 30)
        await eventually(lambda: calls[("late", "shared")] == 1)
        assert len(cluster.hub.watchers) == 1
        await create_kex(api, namespace, "after")
        await eventually(lambda: all(calls[(x, "after")] for x in ("first", "second", "late")))
        await asyncio.sleep(0.5)
        assert set(calls.values()) == {1}
        assert len(calls) == 6
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not cluster.hub.watchers  # the last one out closes the stream
        await cluster.close()


# -- a late subscriber: its own LIST, throttled, reconciled with the stream --------------------------------


class Consumer:
    """A subscriber that records what it is given; its backlog blocks until ``room`` is set."""

    def __init__(self, *, held: bool = False) -> None:
        self.events: list[tuple[str, str, str, int | None]] = []  # (type, uid, name, resourceVersion)
        self.room = asyncio.Event()
        if not held:
            self.room.set()

    def deliver(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        version = meta.get("resourceVersion")
        self.events.append((kind, meta["uid"], meta["name"], int(version) if version else None))

    async def backlog(self) -> None:
        await self.room.wait()

    def view(self) -> dict[str, int | None]:
        """name -> the version of the newest state given, for the objects not given as deleted."""
        latest: dict[str, tuple[str, str, int | None]] = {}
        for kind, uid, name, version in self.events:
            latest[uid] = (kind, name, version)
        return {name: version for kind, name, version in latest.values() if kind != "DELETED"}

    def assert_in_order(self) -> None:
        """No object given twice in one state, none given an older state after a newer one."""
        versions: dict[str, list[int]] = collections.defaultdict(list)
        for _, uid, _, version in self.events:
            if version is not None:
                versions[uid].append(version)
        for uid, seq in versions.items():
            assert seq == sorted(set(seq)), f"{uid}: {seq}"


async def _objects(kube: KubeClient, resource: Resource, namespace: str) -> dict[str, int]:
    """The truth: name -> resourceVersion of every object on the server."""
    items = (await kube.get(resource.path(namespace)))["items"]
    return {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in items}


async def _create_many(api: client.ApiClient, namespace: str, names: list[str]) -> None:
    gate = asyncio.Semaphore(16)

    async def one(name: str) -> None:
        async with gate:
            await create_kex(api, namespace, name)

    await asyncio.gather(*(one(name) for name in names))


async def _kex(kube: KubeClient, crd: str) -> Resource:
    resource = await Discovery(kube).resolve(ResourceRef.parse(crd))
    assert resource is not None
    return resource


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
    async with KubeClient(cfg, source=source) as kube_client:
        yield kube_client


NAMES = [f"obj-{i:03d}" for i in range(60)]
PAGE = 10
SETTINGS = WatchingSettings(list_page_size=PAGE, backoff_initial=0.1, backoff_max=0.5)


async def _patch(api: client.ApiClient, crd: str, namespace: str, name: str, spec: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        CRD_GROUP, "v1", namespace, crd, name, {"spec": spec}, _content_type="application/merge-patch+json")


async def _delete(api: client.ApiClient, crd: str, namespace: str, name: str) -> None:
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, name)


async def test_a_subscriber_joining_during_the_streams_list_gets_every_object(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    await _create_many(api, namespace, NAMES)
    resource = await _kex(kube, crd)
    hub = WatchHub(kube, SETTINGS)
    first, second = Consumer(held=True), Consumer()
    try:
        sub1 = hub.subscribe(resource, namespace, None, first.deliver, first.backlog)
        await eventually(lambda: len(first.events) == PAGE)  # a page, then held by its backlog
        sub2 = hub.subscribe(resource, namespace, None, second.deliver, second.backlog)
        assert len(hub.watchers) == 1
        await eventually(lambda: sub2.listed.is_set())  # its own LIST: not held by the other
        assert not sub1.listed.is_set()
        assert sorted(second.view()) == NAMES
        # Changes while the stream's list is still held: of objects both have, and that only the second has.
        await _patch(api, crd, namespace, "obj-005", {"x": 1})
        await _patch(api, crd, namespace, "obj-055", {"x": 1})
        await _delete(api, crd, namespace, "obj-030")
        await create_kex(api, namespace, "obj-new")
        first.room.set()
        truth = await _objects(kube, resource, namespace)
        assert len(truth) == len(NAMES)
        await eventually(lambda: first.view() == truth and second.view() == truth)
        await asyncio.sleep(0.3)
        assert first.view() == second.view() == truth
        assert sub1.listed.is_set()
        first.assert_in_order()
        second.assert_in_order()
    finally:
        await hub.close()


async def test_a_late_subscriber_lists_page_by_page_as_its_queue_makes_room(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    await _create_many(api, namespace, NAMES)
    resource = await _kex(kube, crd)
    hub = WatchHub(kube, SETTINGS)
    first, second = Consumer(), Consumer(held=True)
    try:
        sub1 = hub.subscribe(resource, namespace, None, first.deliver, first.backlog)
        await eventually(lambda: sub1.listed.is_set())
        sub2 = hub.subscribe(resource, namespace, None, second.deliver, second.backlog)
        await eventually(lambda: len(second.events) >= PAGE)
        await asyncio.sleep(1.0)
        assert len(second.events) <= 2 * PAGE  # held: never the whole backlog at once
        assert not sub2.listed.is_set()
        await create_kex(api, namespace, "obj-new")  # the stream's events still come meanwhile
        await eventually(lambda: "obj-new" in second.view())
        second.room.set()
        await eventually(lambda: sub2.listed.is_set())
        truth = await _objects(kube, resource, namespace)
        assert second.view() == first.view() == truth
        assert len(second.events) == len(truth)  # each once
        assert len(hub.watchers) == 1
    finally:
        await hub.close()


async def test_unsubscribing_during_the_catch_up_stops_it(
    kube: KubeClient, api: client.ApiClient, crd: str, namespace: str
) -> None:
    await _create_many(api, namespace, NAMES[:30])
    resource = await _kex(kube, crd)
    hub = WatchHub(kube, SETTINGS)
    first, second = Consumer(), Consumer(held=True)
    try:
        sub1 = hub.subscribe(resource, namespace, None, first.deliver, first.backlog)
        await eventually(lambda: sub1.listed.is_set())
        sub2 = hub.subscribe(resource, namespace, None, second.deliver, second.backlog)
        await eventually(lambda: len(second.events) == PAGE)
        task = sub2.task
        assert task is not None
        hub.unsubscribe(sub2)
        second.room.set()
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled()
        await create_kex(api, namespace, "obj-new")
        await eventually(lambda: "obj-new" in first.view())
        await asyncio.sleep(0.3)
        assert len(second.events) == PAGE  # nothing after it left
        assert not sub2.listed.is_set()
        assert len(hub.watchers) == 1  # the stream stays for the other
    finally:
        await hub.close()


async def test_the_stream_relisting_during_a_catch_up(
    control_plane: LocalControlPlane, api: client.ApiClient, crd: str, namespace: str, tmp_path: Path
) -> None:
    """The stream loses its watch and meets 410 while a late subscriber's LIST is held: the changes it
    learns by relisting (deletions without a version among them) reach both subscribers, in order."""
    await _create_many(api, namespace, NAMES)
    with FaultProxy("127.0.0.1", control_plane.apiserver_port) as proxy:
        kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
        cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
        async with KubeClient(cfg, source=source) as kube:
            resource = await _kex(kube, crd)
            hub = WatchHub(kube, SETTINGS)
            first, second = Consumer(), Consumer(held=True)
            try:
                sub1 = hub.subscribe(resource, namespace, None, first.deliver, first.backlog)
                await eventually(lambda: sub1.listed.is_set())
                sub2 = hub.subscribe(resource, namespace, None, second.deliver, second.backlog)
                await eventually(lambda: len(second.events) == PAGE)
                watcher = hub.watchers[0]
                proxy.refuse_new(True)
                proxy.reset_all()
                await eventually(lambda: not watcher.healthy)
                # While the stream is away: changes it learns only by relisting.
                await _patch(api, crd, namespace, "obj-002", {"x": 1})  # given to both already
                await _patch(api, crd, namespace, "obj-045", {"x": 1})  # not given to the second yet
                await _delete(api, crd, namespace, "obj-003")
                await _delete(api, crd, namespace, "obj-033")
                await create_kex(api, namespace, "obj-new")
                watcher.resource_version = "1"  # its resume meets 410 Gone: a relist
                proxy.refuse_new(False)
                await eventually(lambda: watcher.stats["gone"] >= 1, timeout=30)
                second.room.set()
                truth = await _objects(kube, resource, namespace)
                await eventually(lambda: sub2.listed.is_set() and second.view() == truth
                                                       and first.view() == truth, timeout=30)
                await asyncio.sleep(0.3)
                assert first.view() == second.view() == truth
                first.assert_in_order()
                second.assert_in_order()
            finally:
                await hub.close()
