"""Readiness means the caches are synced (issue #22 item 3), on the local apiserver: an operation is ready
once every stream's first LIST has been received, while its backlog is still being handled, and the
backlog figure (objects fed to the handlers of those listed) counts up to N; with indexes, ready once
they are complete, and handlers that use them still wait for them. A late subscriber of a shared
stream gets its own LIST received whole before its backlog makes room for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client

import opd
from opd.engine.cluster import Cluster
from opd.engine.operation import Operation
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry
from opd.resources import ResourceRef
from opd.settings import OperatorSettings

KEX = "kopfexamples.v1.kopf.dev"
N = 200


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _create(api: client.ApiClient, namespace: str, count: int) -> None:
    names = iter(range(count))

    async def worker() -> None:
        for i in names:
            await create_kex(api, namespace, f"kex-{i:04d}")

    await asyncio.gather(*(worker() for _ in range(8)))


async def test_ready_while_the_backlog_is_handled_and_the_figure_counts_up_to_n(
        api: client.ApiClient, kubeconfig: Path, namespace: str, crd: str,
        running: list[asyncio.Task[None]]) -> None:
    await _create(api, namespace, N)
    registry = OperatorRegistry()
    gate = asyncio.Event()
    handled: list[str] = []

    @opd.on.create("kopfexamples", registry=registry)
    async def slow(name: str, **_: Any) -> None:
        await gate.wait()  # no handler finishes until the test says so
        handled.append(name)

    settings = OperatorSettings()
    settings.watching.list_page_size = 10  # 20 pages; the queue's room is two of them
    at_ready: list[tuple[int, dict[str, tuple[int, int]]]] = []
    operation = Operation(registry=registry, settings=settings, memo={}, namespaces=[namespace], clusterwide=False,
                          login=Login(kubeconfig=str(kubeconfig)),
                          on_ready=lambda: at_ready.append((len(handled), operation.snapshot().backlog)))
    running.append(asyncio.create_task(operation.run()))

    # Ready with every handler still waiting: the LIST was received, not handled (nor even all queued).
    await eventually(lambda: at_ready, timeout=60)
    [(done, backlog)] = at_ready
    assert done == 0 and operation.ready
    fed, listed = backlog[KEX]
    assert listed == N and fed < N

    figures = [operation.snapshot().backlog[KEX]]
    gate.set()

    async def all_handled() -> bool:
        figures.append(operation.snapshot().backlog[KEX])
        return len(handled) == N

    await eventually(all_handled, timeout=120)
    assert sorted(handled) == [f"kex-{i:04d}" for i in range(N)]
    assert operation.snapshot().backlog == {KEX: (N, N)}
    fed_over_time = [fed for fed, _ in figures]
    assert fed_over_time == sorted(fed_over_time) and fed_over_time[-1] == N
    assert all(listed == N for _, listed in figures)


async def test_with_an_index_ready_once_it_is_complete_and_handlers_wait_for_it(
        api: client.ApiClient, kubeconfig: Path, namespace: str, crd: str,
        running: list[asyncio.Task[None]]) -> None:
    core = client.CoreV1Api(api)
    for i in range(30):
        await core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm-{i:02d}"}})  # type: ignore[arg-type]
    await create_kex(api, namespace, "counter")
    registry = OperatorRegistry()
    indexing = asyncio.Event()
    seen: list[int] = []

    @opd.index("configmaps", registry=registry)
    async def names(name: str, **_: Any) -> str:
        await indexing.wait()
        return name

    @opd.on.create("kopfexamples", registry=registry)
    def count(names: opd.Index, **_: Any) -> None:
        seen.append(len(names.get(None, [])))

    settings = OperatorSettings()
    settings.watching.list_page_size = 10
    operation = Operation(registry=registry, settings=settings, memo={}, namespaces=[namespace], clusterwide=False,
                          login=Login(kubeconfig=str(kubeconfig)))
    running.append(asyncio.create_task(operation.run()))

    def received() -> bool:  # every stream's LIST is in: configmaps and kopfexamples
        streams = operation.snapshot().streams
        return len(streams) == 2 and all(s.listed for s in streams)

    await eventually(received, timeout=60)
    await asyncio.sleep(0.5)  # the index is what it waits for now
    assert not operation.ready and not operation.snapshot().ready and seen == []
    indexing.set()
    await eventually(lambda: operation.snapshot().ready, timeout=60)
    await eventually(lambda: seen, timeout=60)
    assert seen == [30]  # the handler ran only once the index was complete


async def test_a_late_subscriber_receives_its_list_before_its_backlog_has_room(
        kubeconfig: Path, api: client.ApiClient, namespace: str, crd: str) -> None:
    await _create(api, namespace, 60)
    settings = OperatorSettings()
    settings.watching.list_page_size = 10
    cluster = await Cluster.connect(Login(kubeconfig=str(kubeconfig)), settings)
    try:
        resource = await cluster.discovery.resolve(ResourceRef.parse(crd))
        assert resource is not None
        first = cluster.hub.subscribe(resource, namespace, None, lambda kind, body: None)
        await eventually(lambda: first.listed.is_set(), timeout=60)
        got: list[str] = []
        room = asyncio.Event()
        late = cluster.hub.subscribe(resource, namespace, None, lambda kind, body: got.append(body["metadata"]["name"]),
                                     backlog=room.wait)
        await eventually(lambda: late.received.is_set(), timeout=60)
        assert late.progress.listed == 60
        await eventually(lambda: late.progress.fed == len(got) == 10)  # one page fed; the rest waits for room
        await asyncio.sleep(0.2)
        assert not late.listed.is_set() and late.progress.fed == len(got) == 10
        room.set()
        await eventually(lambda: late.listed.is_set(), timeout=60)
        assert sorted(got) == [f"kex-{i:04d}" for i in range(60)] and late.progress.fed == 60
    finally:
        await cluster.close()
