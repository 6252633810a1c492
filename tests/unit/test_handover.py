"""The pieces of a hand-over that keep an object from running twice (issue #21 item 3), without a
cluster: a sync handler's start is asked in the thread that runs it, and a drained shard is no
longer owned by the time the view reads what is in process (so a handler that starts after that
read is always of an object the hand-over waits for)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import opd
from opd.engine.execution import execute
from opd.engine.invocation import NotStarted, invoke
from opd.ha.grants import View
from opd.registry import Handler, OperatorRegistry
from opd.settings import RetrySettings


def _sync_handler(ran: list[str]) -> Handler:
    registry = OperatorRegistry()

    @opd.on.create("kopfexamples", registry=registry)
    def create_fn(**_: Any) -> str:
        ran.append(threading.current_thread().name)
        return "done"

    return registry.handlers[0]


async def test_a_sync_handler_is_asked_to_start_in_the_thread_that_runs_it_and_does_not_run_when_refused() -> None:
    ran: list[str] = []
    asked: list[str] = []
    handler = _sync_handler(ran)

    def start(answer: bool) -> Callable[[], bool]:
        def ask() -> bool:
            asked.append(threading.current_thread().name)
            return answer
        return ask

    with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        assert await invoke(handler, {}, executor=pool, start=start(True)) == "done"
        with pytest.raises(NotStarted):
            await invoke(handler, {}, executor=pool, start=start(False))
        # execute() passes it through: a handler that did not start is no try of its (no retry recorded).
        with pytest.raises(NotStarted):
            await execute(handler, {"started": 0.0}, {}, executor=pool, retries=RetrySettings(), start=start(False))
    assert len(ran) == 1 and all(name.startswith("pool") for name in [*ran, *asked]) and len(asked) == 3


class _Keys:
    def key_of(self, uid: str) -> int:
        return 1

    def holds(self, key: int) -> bool:
        return True

    def granted(self) -> frozenset[int]:
        return frozenset({0, 1})

    def left(self, key: int) -> float:
        return 3600.0


class _Operation:
    """What a view asks of an operation; ``busy`` notes whether its objects were still owned then."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.owned_when_read: list[bool] = []

    def busy(self, uids: Callable[[str], bool]) -> frozenset[str]:
        self.owned_when_read.append(self.view.owns("waiting"))
        return frozenset()  # nothing has started

    def spawned(self, uids: Callable[[str], bool]) -> frozenset[str]:
        return frozenset()

    async def stop_spawned(self, uids: Callable[[str], bool], reason: str) -> None:
        pass

    async def disown(self, uids: Callable[[str], bool], reason: str) -> None:
        pass


async def test_a_drained_shard_is_no_longer_owned_when_the_view_reads_what_is_in_process() -> None:
    """An object not in process whose handler asks to start in between (another thread) must be
    refused: had it been asked before the shard was marked draining, it was marked started and is in
    what the view reads (handling.Handling._start marks before it asks)."""
    view = View(_Keys())
    operation = _Operation(view)
    view.operation, view.loop = operation, asyncio.get_running_loop()  # type: ignore[assignment]
    assert view.owns("waiting")
    await view.drain(frozenset({1}), "handed over")
    assert operation.owned_when_read == [False]  # was [True]: draining was marked after the read
    assert not view.owns("waiting")


async def test_a_view_polling_the_hand_over_reads_what_is_in_process_while_the_rest_is_not_owned() -> None:
    """The same for every poll of the hand-over: an object allowed (it was in process) whose next step
    waits for a thread is not owned when the view reads what is still in process (was: owned until
    after the read, so a handler starting in between ran unseen and the hand-over did not wait)."""
    view = View(_Keys())
    operation = _Operation(view)
    view.operation, view.loop = operation, asyncio.get_running_loop()  # type: ignore[assignment]
    view.draining, view.allowed = frozenset({1}), frozenset({"waiting"})
    assert view.owns("waiting")
    assert not await view.busy(frozenset({1}))
    assert operation.owned_when_read == [False]
    assert not view.owns("waiting")
