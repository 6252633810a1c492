"""Several operators on one cluster connection share one watch stream per resource and namespace."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from operators import create_kex, eventually, get_kex, handled

import opd
from opd.engine.cluster import Cluster
from opd.engine.operation import Operation


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
        await eventually(lambda: asyncio.sleep(0, calls[("late", "shared")] == 1))
        assert len(cluster.hub.watchers) == 1
        await create_kex(api, namespace, "after")
        await eventually(lambda: asyncio.sleep(0, all(calls[(x, "after")] for x in ("first", "second", "late"))))
        await asyncio.sleep(0.5)
        assert set(calls.values()) == {1}
        assert len(calls) == 6
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not cluster.hub.watchers  # the last one out closes the stream
        await cluster.close()
