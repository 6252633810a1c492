"""Sync handlers through the relay (``invocation._Relay``): each in a thread of the executor, with the
caller's contextvars, their results and errors delivered to their own callers; a handler that
blocks holds up neither the loop nor the other handlers while the executor has a thread free; a
call cancelled before its turn does not run; a shut-down executor fails the call."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import opd
from opd.engine.invocation import current_body, invoke
from opd.registry import Handler, OperatorRegistry


def _handler(fn: Any) -> Handler:
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(fn)
    return registry.handlers[0]


async def test_many_sync_handlers_each_get_their_own_result_in_a_thread_with_the_callers_body() -> None:
    def create_fn(body: Any, **_: Any) -> tuple[str, str, Any]:
        return body["n"], threading.current_thread().name, current_body.get()["n"]

    handler = _handler(create_fn)
    with ThreadPoolExecutor(4, thread_name_prefix="pool") as pool:
        results = await asyncio.gather(*(invoke(handler, {"body": {"n": i}}, executor=pool) for i in range(200)))
    assert [n for n, _, _ in results] == list(range(200))
    assert all(thread.startswith("pool") and seen == n for n, thread, seen in results)


async def test_an_error_reaches_its_own_caller_only() -> None:
    def create_fn(body: Any, **_: Any) -> int:
        if body["n"] == 3:
            raise ValueError("three")
        return int(body["n"])

    handler = _handler(create_fn)
    with ThreadPoolExecutor(2) as pool:
        results = await asyncio.gather(*(invoke(handler, {"body": {"n": i}}, executor=pool) for i in range(6)),
                                       return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"


async def test_a_blocking_handler_holds_up_neither_the_loop_nor_the_others_while_a_thread_is_free() -> None:
    release = threading.Event()

    def create_fn(body: Any, **_: Any) -> str:
        if body["n"] == 0:
            assert release.wait(30), "never released"
        return f"done {body['n']}"

    handler = _handler(create_fn)
    with ThreadPoolExecutor(2) as pool:
        blocked = asyncio.ensure_future(invoke(handler, {"body": {"n": 0}}, executor=pool))
        others = [await asyncio.wait_for(invoke(handler, {"body": {"n": i}}, executor=pool), 30) for i in (1, 2, 3)]
        assert others == ["done 1", "done 2", "done 3"] and not blocked.done()
        release.set()
        assert await asyncio.wait_for(blocked, 30) == "done 0"


async def test_a_call_cancelled_before_a_thread_takes_it_does_not_run() -> None:
    release = threading.Event()
    ran: list[int] = []

    def create_fn(body: Any, **_: Any) -> None:
        ran.append(body["n"])
        if body["n"] == 0:
            assert release.wait(30), "never released"

    handler = _handler(create_fn)
    with ThreadPoolExecutor(1) as pool:
        first = asyncio.ensure_future(invoke(handler, {"body": {"n": 0}}, executor=pool))
        second = asyncio.ensure_future(invoke(handler, {"body": {"n": 1}}, executor=pool))
        await asyncio.sleep(0.05)  # both submitted; the only thread is held by the first
        second.cancel()
        release.set()
        await asyncio.wait_for(first, 30)
        with pytest.raises(asyncio.CancelledError):
            await second
        third = await asyncio.wait_for(invoke(handler, {"body": {"n": 2}}, executor=pool), 30)
    assert third is None and ran == [0, 2]


async def test_a_shut_down_executor_fails_the_call() -> None:
    handler = _handler(lambda **_: "never")
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        await asyncio.wait_for(invoke(handler, {}, executor=pool), 30)
