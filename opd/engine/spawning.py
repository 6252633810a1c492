"""Per-object background work: timers and daemons.

These are the only per-object tasks opd runs, and only for objects that have
timer or daemon handlers. Each sees the newest body of its object; each is
stopped when the object is being deleted, is gone, or the operator stops.

Both run through the same execution as change handlers (``execution.execute``):
``errors=``, ``retries=``, ``backoff=`` and ``timeout=`` mean the same. A timer's
run is retried after an error as any handler is, and a final failure ends that
run only: the timer fires again at its next interval. A daemon is one long run:
retried (restarted) after an error, stopped for good by a final failure. After
each try the handler's result and its ``patch`` are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opd.engine.diffs import Patch
from opd.engine.execution import Outcome, execute
from opd.registry import Handler, Reason
from opd.settings import RetrySettings

# Builds a handler's kwargs from the newest body: (handler, body, stopped, patch) -> kwargs.
KwargsFactory = Callable[[Handler, dict[str, Any], "Stopped", Patch], dict[str, Any]]
# After each try: (handler, body, outcome, patch) -> awaitable; writes the result and patch, logs.
OutcomeWriter = Callable[[Handler, dict[str, Any], Outcome, Patch], Awaitable[None]]


class Stopped:
    """Truthy once the daemon is asked to stop. Async daemons ``await stopped.wait()``;
    sync ones (in a thread) call ``stopped.wait(timeout)``; both return whether it is set."""

    def __init__(self, *, for_async: bool) -> None:
        self._event = threading.Event()
        self._aevent = asyncio.Event()
        self._for_async = for_async
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()
        self._aevent.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        if self._for_async:
            return self._wait_async(timeout)
        return self._event.wait(timeout)

    async def _wait_async(self, timeout: float | None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._aevent.wait(), timeout)
        return self.is_set()

    def __await__(self) -> Any:
        return self._aevent.wait().__await__()


@dataclass
class _ObjectWork:
    body: dict[str, Any]
    changed: float = field(default_factory=time.monotonic)
    tasks: dict[str, tuple[asyncio.Task[None], Stopped, Handler]] = field(default_factory=dict)


class Spawner:
    def __init__(self, *, kwargs_for: KwargsFactory, write_outcome: OutcomeWriter,
                 executor: Any, retries: RetrySettings, stop_timeout: float) -> None:
        self._kwargs_for = kwargs_for
        self._write_outcome = write_outcome
        self._executor = executor
        self._retries = retries
        self._objects: dict[str, _ObjectWork] = {}
        self._stop_timeout = stop_timeout  # for daemons without a cancellation_timeout of their own

    def uids(self) -> list[str]:
        return list(self._objects)

    def running(self, uid: str) -> list[str]:
        work = self._objects.get(uid)
        return [hid for hid, (task, _, _) in work.tasks.items() if not task.done()] if work else []

    async def ensure(self, uid: str, body: dict[str, Any], handlers: list[Handler]) -> None:
        """Keep the object's matching timers and daemons running, with its newest body;
        stop those whose filters no longer match."""
        work = self._objects.get(uid)
        if work is None and not handlers:
            return  # nothing runs for it: keep no body in memory
        if work is None:
            work = self._objects[uid] = _ObjectWork(body)
        elif work.body.get("spec") != body.get("spec") or (
                work.body["metadata"].get("labels") != body["metadata"].get("labels")):
            work.changed = time.monotonic()
        work.body = body
        wanted = {h.id for h in handlers}
        for hid in [hid for hid in work.tasks if hid not in wanted]:
            task, stopped, handler = work.tasks.pop(hid)
            await self._stop_one(task, stopped, handler, "filters no longer match")
        for handler in handlers:
            if handler.id in work.tasks:
                continue
            stopped = Stopped(for_async=handler.is_async)
            run = self._timer if handler.reason == Reason.TIMER else self._daemon
            task = asyncio.get_running_loop().create_task(run(handler, work, stopped),
                                                          name=f"opd {handler.reason} {handler.id} {uid}")
            work.tasks[handler.id] = (task, stopped, handler)
        if not work.tasks:
            del self._objects[uid]

    async def stop(self, uid: str, reason: str) -> None:
        work = self._objects.pop(uid, None)
        if work is None:
            return
        await asyncio.gather(*(self._stop_one(t, s, h, reason) for t, s, h in work.tasks.values()))

    async def stop_all(self, reason: str) -> None:
        await asyncio.gather(*(self.stop(uid, reason) for uid in list(self._objects)))

    async def _stop_one(self, task: asyncio.Task[None], stopped: Stopped, handler: Handler, reason: str) -> None:
        """``stopped`` first; after a grace period, cancellation; then a bounded wait for the end.
        The grace is ``cancellation_backoff`` (Kopf's name; then ``cancellation_timeout`` bounds
        the wait after cancelling, as in Kopf), else ``cancellation_timeout``, else the shutdown bound."""
        stopped.set(reason)
        if handler.cancellation_backoff is not None:
            grace: float | None = handler.cancellation_backoff
            after = handler.cancellation_timeout if handler.cancellation_timeout is not None else 5.0
        else:
            grace = handler.cancellation_timeout if handler.cancellation_timeout is not None else self._stop_timeout
            after = 5.0
        if not task.done() and grace:
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=after)

    async def _sleep(self, seconds: float, stopped: Stopped) -> bool:
        """Sleep unless stopped; returns True when stopped."""
        if seconds > 0:
            await stopped._wait_async(seconds)
        return stopped.is_set()

    async def _run(self, handler: Handler, work: _ObjectWork, stopped: Stopped) -> Outcome | None:
        """One run: tries until success or a final failure; None when stopped meanwhile."""
        record: dict[str, Any] = {"started": time.time()}
        while True:
            patch = Patch()
            outcome = await execute(handler, record, self._kwargs_for(handler, work.body, stopped, patch),
                                    executor=self._executor, retries=self._retries)
            await self._write_outcome(handler, work.body, outcome, patch)
            if outcome.delay is None:
                return outcome
            if await self._sleep(outcome.delay, stopped):
                return None
            record = outcome.record

    async def _timer(self, handler: Handler, work: _ObjectWork, stopped: Stopped) -> None:
        if await self._sleep(handler.initial_delay, stopped):
            return
        while not stopped:
            if handler.idle is not None:
                quiet = time.monotonic() - work.changed
                if quiet < handler.idle:
                    if await self._sleep(handler.idle - quiet, stopped):
                        return
                    continue
            began = time.monotonic()
            if await self._run(handler, work, stopped) is None:
                return
            pause = handler.interval or 0.0
            if handler.sharp:  # a steady beat: the run's own time counts towards the interval
                pause = max(0.0, pause - (time.monotonic() - began))
            if await self._sleep(pause, stopped):
                return

    async def _daemon(self, handler: Handler, work: _ObjectWork, stopped: Stopped) -> None:
        if await self._sleep(handler.initial_delay, stopped):
            return
        await self._run(handler, work, stopped)  # returned, failed for good, or stopped: done for this object
