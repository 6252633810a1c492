"""Calling handlers: only the keyword arguments they name; sync ones in a thread
with the caller's context copied (so contextvars reach them). Timeouts are the
caller's (``execution.execute``): one place that knows what a timeout means."""

from __future__ import annotations

import asyncio
import contextvars
import functools
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
    return await loop.run_in_executor(executor, functools.partial(ctx.run, fn, **chosen))
