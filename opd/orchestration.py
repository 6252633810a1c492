"""Running an operator: ``operator()``, or ``spawn_tasks()`` + ``run_tasks()`` by hand.

opd cancels only the tasks it created: the host application's tasks in the
same loop are never touched. OS signal handlers are installed only in the
main thread; elsewhere a ``stop_flag`` or cancelling the operator stops it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from loguru import logger

from opd.engine.operation import Operation
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry, get_default_registry
from opd.settings import OperatorSettings
from opd.webhooks.serving import Webhooks

Flag = asyncio.Event | threading.Event | asyncio.Future[Any] | concurrent.futures.Future[Any]


class Memo(dict[str, Any]):
    """A per-operator scratchpad handed to every handler as ``memo``; keys read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


async def wait_flag(flag: Flag) -> None:
    """Wait until a flag of any supported kind is raised, from any thread."""
    if isinstance(flag, asyncio.Event):
        await flag.wait()
    elif isinstance(flag, asyncio.Future) and flag.get_loop() is asyncio.get_running_loop():
        await asyncio.shield(flag)  # our cancellation must not cancel the caller's future
    elif isinstance(flag, (asyncio.Future, concurrent.futures.Future)):
        loop = asyncio.get_running_loop()
        raised = asyncio.Event()
        flag.add_done_callback(lambda _: loop.call_soon_threadsafe(raised.set))
        await raised.wait()
    elif isinstance(flag, threading.Event):
        while not flag.is_set():  # noqa: ASYNC110 - a threading.Event offers no callback to await
            await asyncio.sleep(0.1)
    else:
        raise TypeError(f"unsupported flag type: {type(flag).__name__}")


def raise_flag(flag: Flag | None) -> None:
    if flag is None:
        return
    if isinstance(flag, (asyncio.Event, threading.Event)):
        flag.set()
    elif isinstance(flag, asyncio.Future):
        def resolve() -> None:
            if not flag.done():
                flag.set_result(None)

        try:
            same_loop = flag.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            same_loop = False
        if same_loop:
            resolve()
        else:
            flag.get_loop().call_soon_threadsafe(resolve)
    elif isinstance(flag, concurrent.futures.Future):
        # Raised concurrently by someone else: fine.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if not flag.done():
                flag.set_result(None)
    else:
        raise TypeError(f"unsupported flag type: {type(flag).__name__}")


async def _wait_stop_flag(flag: Flag) -> None:
    await wait_flag(flag)
    logger.info("opd: stop flag raised: stopping")


async def _wait_signals() -> None:
    loop = asyncio.get_running_loop()
    received = asyncio.Event()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, received.set)
    try:
        await received.wait()
        logger.info("opd: signal received: stopping")
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def _run_operation(operation: Operation) -> None:
    await operation.run()


async def spawn_tasks(
    *,
    registry: OperatorRegistry | None = None,
    settings: OperatorSettings | None = None,
    memo: Any = None,
    namespaces: Sequence[str] | None = None,
    clusterwide: bool = False,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    login: Login | None = None,
    install_signal_handlers: bool | None = None,
) -> list[asyncio.Task[Any]]:
    """Create the operator's root tasks in the running loop; run them with ``run_tasks()``."""
    operation = Operation(
        registry=registry if registry is not None else get_default_registry(),
        settings=settings if settings is not None else OperatorSettings(),
        memo=memo if memo is not None else Memo(),
        namespaces=namespaces,
        clusterwide=clusterwide,
        login=login,
        on_ready=lambda: raise_flag(ready_flag),
        services=[Webhooks()],  # its admission handlers and converters, if it has any
    )
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(_run_operation(operation), name="opd operator")]
    if stop_flag is not None:
        tasks.append(loop.create_task(_wait_stop_flag(stop_flag), name="opd stop flag"))
    if install_signal_handlers is None:
        install_signal_handlers = threading.current_thread() is threading.main_thread()
    if install_signal_handlers:
        tasks.append(loop.create_task(_wait_signals(), name="opd signals"))
    return tasks


async def _terminate(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> None:
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            logger.error(f"opd: task {task.get_name()!r} did not stop within {timeout:.0f}s")


async def run_tasks(
    root_tasks: Collection[asyncio.Task[Any]],
    *,
    ignored: Collection[asyncio.Task[Any]] = frozenset(),
    return_when: str = asyncio.FIRST_COMPLETED,
    stop_timeout: float = 30.0,
) -> None:
    """Wait for the root tasks (the first to finish, or all); then stop the rest,
    and re-raise what a root task failed with. Cancelling this cancels them."""
    tasks = list(root_tasks)
    try:
        await asyncio.wait(tasks, return_when=return_when)
    except asyncio.CancelledError:
        await _terminate(tasks, stop_timeout)
        raise
    await _terminate(tasks, stop_timeout)
    for task in tasks:
        if task in ignored or not task.done() or task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            raise exc


async def operator(
    *,
    registry: OperatorRegistry | None = None,
    settings: OperatorSettings | None = None,
    memo: Any = None,
    namespaces: Sequence[str] | None = None,
    clusterwide: bool = False,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    login: Login | None = None,
    install_signal_handlers: bool | None = None,
) -> None:
    """Run an operator until it is stopped (stop flag, signal, or cancellation)."""
    tasks = await spawn_tasks(
        registry=registry, settings=settings, memo=memo, namespaces=namespaces, clusterwide=clusterwide,
        stop_flag=stop_flag, ready_flag=ready_flag, login=login,
        install_signal_handlers=install_signal_handlers,
    )
    await run_tasks(tasks, return_when=asyncio.FIRST_COMPLETED)


def run(**kwargs: Any) -> None:
    """Run an operator in a new event loop of this thread until it is stopped."""
    asyncio.run(operator(**kwargs))
