"""A work queue of objects: latest state wins, one run at a time per object,
a bounded pool of workers, and delayed re-queueing for retries.

Like controller-runtime's workqueue: no task or thread per object; an object
that changes while it is processed is processed again afterwards, once, with
its newest state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from loguru import logger

from opd.engine import trimming

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WorkQueue(Generic[K, V]):
    def __init__(self, process: Callable[[K, V], Awaitable[None]], *, workers: int, name: str = "") -> None:
        self._process = process
        self._max_workers = max(1, workers)
        self._name = name
        self._latest: dict[K, V] = {}  # pending state: queued, or dirty while active
        self._ready: collections.deque[K] = collections.deque()
        self._active: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closed = False
        self._room = asyncio.Event()
        self._room_limit = 0
        self._drained = asyncio.Event()  # nothing pending, nothing in process
        self._drained.set()
        self._processed = 0  # items processed since the queue last drained
        # Workers start in the context of the queue's owner (its operator), not of whoever
        # happens to put (a shared watch stream): each gets a copy, so nothing leaks between them.
        self._context = contextvars.copy_context()

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def active(self) -> int:
        return len(self._active)

    async def drained(self) -> None:
        """Until nothing is pending or in process (delayed retries do not count)."""
        await self._drained.wait()

    def keys(self) -> list[K]:
        """Keys with a pending state, a delayed retry, or in process."""
        return list({*self._latest, *self._timers, *self._active})

    def is_active(self, key: K) -> bool:
        return key in self._active

    async def wait_for_room(self, limit: int) -> None:
        """Until fewer than ``limit`` objects wait: a producer that can pause (a LIST) keeps
        the number of bodies held in memory bounded."""
        while len(self._latest) >= limit and not self._closed:
            self._room_limit = limit
            self._room.clear()
            await self._room.wait()

    def put(self, key: K, value: V) -> None:
        """Queue ``value`` as the newest state of ``key``; a pending older state is dropped."""
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()  # the new state is processed now, which re-plans any retry
        pending = key in self._latest
        self._latest[key] = value
        self._drained.clear()
        if not pending and key not in self._active:
            self._ready.append(key)
            self._spawn()

    def put_after(self, delay: float, key: K, value: V) -> None:
        """Process ``key`` again after ``delay`` unless a newer state arrives first."""
        if self._closed:
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(0.0, delay), self._fire, key, value)

    def _fire(self, key: K, value: V) -> None:
        self._timers.pop(key, None)
        if key not in self._latest:  # a newer state already queued wins
            self.put(key, value)

    def forget(self, key: K) -> None:
        """Drop a key's delayed retry and pending state (one in process finishes)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if self._latest.pop(key, None) is not None and key not in self._active:
            with contextlib.suppress(ValueError):
                self._ready.remove(key)

    def _spawn(self) -> None:
        if len(self._workers) < self._max_workers and len(self._workers) < len(self._ready) + len(self._active):
            task = asyncio.get_running_loop().create_task(self._worker(), name=f"opd worker {self._name}",
                                                          context=self._context.copy())
            self._workers.add(task)

    async def _worker(self) -> None:
        try:
            await self._work()
        finally:
            # Leave the pool synchronously, so a put() right after sees the free slot.
            task = asyncio.current_task()
            if task is not None:
                self._workers.discard(task)

    async def _work(self) -> None:
        while self._ready and not self._closed:
            key = self._ready.popleft()
            value = self._latest.pop(key)
            if len(self._latest) < self._room_limit:
                self._room.set()
            self._active.add(key)
            try:
                await self._process(key, value)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.opt(exception=True).error(f"opd: unexpected error processing {key!r} ({self._name})")
            finally:
                self._active.discard(key)
                self._processed += 1
                if key in self._latest:  # changed while processed: once more, newest state
                    self._ready.append(key)
                elif not self._latest and not self._active:
                    self._drained.set()
                    trimming.drained(self._processed)
                    self._processed = 0

    async def close(self, timeout: float) -> None:
        """Stop taking work; let in-flight items finish within ``timeout``, then cancel them."""
        self._closed = True
        self._room.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._ready.clear()
        self._latest.clear()
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=timeout)
        for task in list(self._workers):
            task.cancel()
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=1.0)

    def stats(self) -> dict[str, Any]:
        return {"queued": len(self._ready), "active": len(self._active), "delayed": len(self._timers),
                "workers": len(self._workers)}
