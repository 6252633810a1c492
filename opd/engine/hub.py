"""One watch stream per (resource, namespace, label selector), shared by every
operator in the process that wants it: the daemon runs many plugins on one
set of streams, each plugin with its own processing.

A subscriber that joins a stream which has already listed gets its own
one-off LIST, so it sees the objects that exist; an object the stream
reports meanwhile is not replayed from that (possibly older) LIST.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from opd.engine.watching import Deliver, Watcher
from opd.kube.api import REQUEST_ERRORS, KubeClient
from opd.resources import Resource
from opd.settings import WatchingSettings

StreamKey = tuple[Resource, str | None, str | None]  # resource, namespace, label selector


@dataclass(eq=False)
class Subscription:
    key: StreamKey
    deliver: Deliver
    backlog: Callable[[], Awaitable[None]] | None = None  # awaited between LIST pages
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    # uids the stream reported while this subscriber's own LIST was running
    touched: set[str] | None = None


@dataclass(eq=False)
class _Stream:
    watcher: Watcher
    task: asyncio.Task[None]
    subscribers: list[Subscription] = field(default_factory=list)


class WatchHub:
    def __init__(self, client: KubeClient, settings: WatchingSettings) -> None:
        self.client = client
        self.settings = settings
        self._streams: dict[StreamKey, _Stream] = {}
        self._replays: set[asyncio.Task[None]] = set()

    @property
    def watchers(self) -> list[Watcher]:
        return [s.watcher for s in self._streams.values()]

    def subscribe(self, resource: Resource, namespace: str | None, selector: str | None,
                  deliver: Deliver, backlog: Callable[[], Awaitable[None]] | None = None) -> Subscription:
        key = (resource, namespace, selector)
        sub = Subscription(key, deliver, backlog)
        stream = self._streams.get(key)
        if stream is None:
            watcher = Watcher(self.client, resource, namespace, settings=self.settings,
                              deliver=self._fan_out(key), label_selector=selector)
            watcher.backlog = self._backlog(key)
            task = asyncio.get_running_loop().create_task(watcher.run(), name=f"opd watch {watcher}")
            stream = self._streams[key] = _Stream(watcher, task)
            watcher.listed_callbacks.append(lambda: sub.listed.set())
        elif stream.watcher.listed.is_set():
            sub.touched = set()
            replay = asyncio.get_running_loop().create_task(self._replay(stream.watcher, sub),
                                                            name=f"opd replay {stream.watcher}")
            self._replays.add(replay)
            replay.add_done_callback(self._replays.discard)
        else:
            stream.watcher.listed_callbacks.append(lambda: sub.listed.set())
        stream.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        stream = self._streams.get(sub.key)
        if stream is None or sub not in stream.subscribers:
            return
        stream.subscribers.remove(sub)
        if not stream.subscribers:
            stream.task.cancel()
            del self._streams[sub.key]

    def _fan_out(self, key: StreamKey) -> Deliver:
        def deliver(kind: str, body: dict[str, Any]) -> None:
            stream = self._streams.get(key)
            for sub in stream.subscribers if stream is not None else ():
                if sub.touched is not None:
                    sub.touched.add(body["metadata"]["uid"])
                try:
                    sub.deliver(kind, body)
                except Exception:  # one subscriber's fault must not starve the others
                    logger.opt(exception=True).error(f"opd: a subscriber of {stream.watcher if stream else key} failed")
        return deliver

    def _backlog(self, key: StreamKey) -> Callable[[], Awaitable[None]]:
        async def wait() -> None:
            stream = self._streams.get(key)
            for sub in list(stream.subscribers) if stream is not None else ():
                if sub.backlog is not None:
                    await sub.backlog()
        return wait

    async def _replay(self, watcher: Watcher, sub: Subscription) -> None:
        backoff = self.settings.backoff_initial
        while True:
            try:
                items = await watcher.list_all()
                break
            except REQUEST_ERRORS as exc:
                logger.warning(f"opd: listing {watcher} for a new subscriber: {exc}; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max)
        touched = sub.touched or set()
        sub.touched = None
        for item in items:
            if item["metadata"]["uid"] not in touched:
                sub.deliver("ADDED", item)
        sub.listed.set()

    async def close(self) -> None:
        tasks = [s.task for s in self._streams.values()] + list(self._replays)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._streams.clear()

