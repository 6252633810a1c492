"""Calling handlers: only the keyword arguments they name; sync ones in a thread
with the caller's context copied (so contextvars reach them). Timeouts are the
caller's (``execution.execute``): one place that knows what a timeout means.

A sync handler goes to a thread through a ``_Relay`` rather than ``loop.run_in_executor``:
the executor's threads take the calls from one queue, and the results come back to the loop
in batches, so a backlog of sync handlers costs one submission and one wake-up of the loop
per batch, not per call. Each call still runs in a thread of the executor, and a call waits for
no other while the executor has a thread free: a handler that blocks blocks neither the loop
nor the other handlers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from opd.engine import arguments
from opd.registry import Handler

# The object the running handler was called for (None for startup, cleanup, probe, login
# handlers): what ``opd.adopt(child)`` and friends take as the owner when none is given.
current_body: contextvars.ContextVar[Any] = contextvars.ContextVar("opd_current_body", default=None)

# Asked at the moment a handler really starts (for a sync one: when a thread of the executor picks it
# up, which may be long after it was submitted); False: it does not start (``NotStarted``).
Start = Callable[[], bool]


class NotStarted(Exception):
    """A handler that did not start: its object was no longer this replica's when its turn came."""


def _started(start: Start, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    if not start():
        raise NotStarted("no longer this replica's")
    return fn(**kwargs)


_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Relay:
    """The sync calls of one event loop to one executor (see the module's docstring). It holds
    neither: a relay lives as long as both do (``_relays``)."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit  # the executor's threads, when it says: more drainers would only wait
        self._lock = threading.Lock()
        self._calls: deque[tuple[asyncio.Future[Any], Callable[[], Any]]] = deque()
        self._drainers = 0  # submitted to the executor and not finished
        self._running = 0  # drainers in a call (the others take the next call at once)
        self._done: deque[_Done] = deque()
        self._delivering = False  # a delivery of ``_done`` is scheduled on the loop
        self._flushing = False  # a flush of ``_calls`` is scheduled on the loop

    def call(self, loop: asyncio.AbstractEventLoop, executor: Executor,
             fn: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._calls.append((future, fn))
            flush = not self._flushing
            self._flushing = True
        if flush:  # once per turn of the loop: the calls of one turn go to the threads together
            loop.call_soon(self._flush, loop, executor)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        with self._lock:
            self._flushing = False
        self._spawn(loop, executor)

    def _spawn(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        """One more drainer if calls wait and no drainer is free to take them."""
        with self._lock:
            more = bool(self._calls) and self._drainers == self._running and (
                self._limit is None or self._drainers < self._limit)
            if more:
                self._drainers += 1
        if more:
            try:
                executor.submit(self._drain, loop, executor)
            except BaseException as exc:  # shut down: the waiting calls fail, as run_in_executor's would
                with self._lock:
                    self._drainers -= 1
                    failed = list(self._calls) if self._drainers == 0 else []
                    if failed:
                        self._calls.clear()
                for future, _ in failed:
                    loop.call_soon_threadsafe(_fail, future, exc)

    def _drain(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        """In a thread of the executor: the queued calls, one after the other, until none is left."""
        while True:
            with self._lock:
                if not self._calls:
                    self._drainers -= 1
                    return
                future, fn = self._calls.popleft()
                self._running += 1
            self._spawn(loop, executor)  # the calls behind this one wait for no call that may block
            done: _Done
            try:
                done = (future, None, None) if future.cancelled() else (future, fn(), None)
            except BaseException as exc:  # the handler's, delivered to its caller
                done = (future, None, exc)
            with self._lock:
                self._running -= 1
                self._done.append(done)
                wake = not self._delivering
                self._delivering = True
            if wake:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the result
                    loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._delivering = False
        for future, result, error in done:
            if future.cancelled():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[Executor, _Relay]] = \
    weakref.WeakKeyDictionary()


def _relay(loop: asyncio.AbstractEventLoop, executor: Executor) -> _Relay:
    per_loop = _relays.get(loop)
    if per_loop is None:
        per_loop = _relays[loop] = weakref.WeakKeyDictionary()
    relay = per_loop.get(executor)
    if relay is None:
        limit = getattr(executor, "_max_workers", None)
        relay = per_loop[executor] = _Relay(limit if isinstance(limit, int) and limit > 0 else None)
    return relay


async def invoke(handler: Handler, kwargs: dict[str, Any], *, executor: Executor | None,
                 start: Start | None = None) -> Any:
    chosen = handler.select_kwargs(arguments.with_param(kwargs, handler.param))
    body = kwargs.get("body")
    if handler.is_async:
        if start is not None and not start():
            raise NotStarted("no longer this replica's")
        token = current_body.set(body)
        try:
            return await handler.fn(**chosen)
        finally:
            current_body.reset(token)
    ctx = contextvars.copy_context()
    ctx.run(current_body.set, body)
    loop = asyncio.get_running_loop()
    fn = handler.fn if start is None else functools.partial(_started, start, handler.fn)
    call = functools.partial(ctx.run, fn, **chosen)
    if executor is None:  # the loop's default executor
        return await loop.run_in_executor(None, call)
    return await _relay(loop, executor).call(loop, executor, call)
