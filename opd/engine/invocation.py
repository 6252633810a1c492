"""Calling handlers: only the keyword arguments they name; sync ones in a thread
with the caller's context copied (so contextvars reach them). Timeouts are the
caller's (``execution.execute``): one place that knows what a timeout means."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import Executor
from typing import Any

from opd.registry import Handler


async def invoke(handler: Handler, kwargs: dict[str, Any], *, executor: Executor | None) -> Any:
    chosen = handler.select_kwargs(kwargs)
    if handler.is_async:
        call = handler.fn(**chosen)
    else:
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(executor, functools.partial(ctx.run, handler.fn, **chosen))
    return await call
