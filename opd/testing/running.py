"""Running an operator inside a test's own event loop, until the test is done with it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from opd.orchestration import operator
from opd.plugin.manager import prepare


async def eventually(check: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns a truthy value (and return it); fail with the last value after ``timeout``.
    ``check`` is a plain predicate or returns an awaitable (an ``async def``, a coroutine from a lambda)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not reached within {timeout}s; last value: {last!r}")


class RunningOperator:
    """``async with RunningOperator(registry=r, namespaces=[ns]) as op:`` starts ``opd.operator``
    with these arguments, waits until its watches have listed (or re-raises why it could not
    start), and stops it on exit; ``await op.stop()`` stops it earlier and says how long it took."""

    def __init__(self, *, ready_timeout: float = 30.0, **kwargs: Any) -> None:
        self.stop_flag = asyncio.Event()
        self.ready_flag = asyncio.Event()
        self.ready_timeout = ready_timeout
        self.kwargs = {"install_signal_handlers": False, **kwargs}
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningOperator:
        self.task = asyncio.create_task(operator(stop_flag=self.stop_flag, ready_flag=self.ready_flag, **self.kwargs))
        ready = asyncio.create_task(self.ready_flag.wait())
        await asyncio.wait({ready, self.task}, timeout=self.ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            ready.cancel()
            self.task.result()  # raises what the operator failed with
        if not self.ready_flag.is_set():
            ready.cancel()
            await self.stop()
            raise TimeoutError(f"the operator was not ready within {self.ready_timeout:g}s")
        return self

    async def stop(self) -> float:
        assert self.task is not None
        started = time.monotonic()
        self.stop_flag.set()
        await asyncio.wait_for(self.task, 30)
        return time.monotonic() - started

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.stop()


class RunningPlugin(RunningOperator):
    """``async with RunningPlugin(my_plugin_module, "name", config={...}, namespaces=[ns]):`` runs a
    plugin as ``opd start`` would: its table checked against its options (defaults filled in),
    its hooks called through pluggy into its own registry and settings (``<name>.opd.dev``
    markers, results under ``.status.<name>``)."""

    def __init__(self, plugin: object, name: str, *, config: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        prepared = prepare(plugin, name, config)  # a config that misses the plugin's options raises here
        super().__init__(registry=prepared.registry, settings=prepared.settings, **kwargs)
