"""A hand-over (opd.ha) waits only for objects whose handlers have started, on the local apiserver:
a sync handler still waiting for a thread of the executor is not "in process", and once its object
is handed over it does not start (issue #21 item 3: with slow sync handlers and few threads, a
hand-over waited for the whole backlog of the shard, up to its limit, and then the new owner ran
those objects again)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex, eventually, get_kex
from kubernetes_asyncio import client

import opd
from opd.engine.operation import Operation
from opd.ha import View
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry
from opd.settings import OperatorSettings

KEX = "kopfexamples.v1.kopf.dev"


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _Keys:
    """A replica that holds every key for long; which key an object is of is set by the test."""

    def __init__(self) -> None:
        self.of: dict[str, int] = {}

    def key_of(self, uid: str) -> int:
        return self.of.get(uid, 0)

    def holds(self, key: int) -> bool:
        return True

    def granted(self) -> frozenset[int]:
        return frozenset({0, 1})

    def left(self, key: int) -> float:
        return 3600.0


async def test_a_handler_waiting_for_a_thread_is_not_busy_and_does_not_start_once_handed_over(
        api: client.ApiClient, kubeconfig: Path, namespace: str, crd: str,
        running: list[asyncio.Task[None]]) -> None:
    registry = OperatorRegistry()
    ran: list[str] = []
    gate = threading.Event()

    @opd.on.create("kopfexamples", registry=registry)
    def create_fn(name: str, **_: Any) -> dict[str, Any]:
        ran.append(name)
        if name == "one":
            gate.wait(60)  # holds the only thread
        return {"by": "this replica"}

    settings = OperatorSettings()
    settings.execution.max_workers = 1
    keys = _Keys()
    view = View(keys)
    operation = Operation(registry=registry, settings=settings, memo={}, namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(kubeconfig)), ownership=view)
    view.attach(operation)
    running.append(asyncio.create_task(operation.run()))
    try:
        one = (await create_kex(api, namespace, "one"))["metadata"]["uid"]
        await eventually(lambda: ran == ["one"])
        keys.of[one] = 0
        two = (await create_kex(api, namespace, "two"))["metadata"]["uid"]
        keys.of[two] = 1

        def both_in_process() -> bool:
            processor = operation.snapshot().processors.get(KEX)
            return processor is not None and processor.active == 2

        await eventually(both_in_process)  # "two"'s step waits for the thread "one" holds
        every = lambda uid: True  # noqa: E731
        assert operation.busy(every) == {one}  # was {one, two}: waiting for a thread counted as in process

        await view.drain(frozenset({1}), "handed over")  # "two"'s key goes to another replica
        assert not await view.busy(frozenset({1}))  # nothing of it to wait for
        assert not view.owns(two) and view.owns(one)
    finally:
        gate.set()

    async def written() -> bool:
        status = (await get_kex(api, namespace, "one")).get("status") or {}
        return status.get("create_fn") == {"by": "this replica"}

    await eventually(written)

    def idle() -> bool:
        processor = operation.snapshot().processors[KEX]
        return processor.active == 0 and processor.queued == 0

    await eventually(idle)
    await asyncio.sleep(0.5)  # a handler that started after the thread came free would have by now
    assert ran == ["one"]  # "two"'s handler did not start here: its new owner runs it
    assert "create_fn" not in ((await get_kex(api, namespace, "two")).get("status") or {})
    assert operation.snapshot().processors[KEX].failed == 0
