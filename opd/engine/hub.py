"""One watch stream per (resource, namespace, label selector, shard selector), shared by every
operator in the process that wants it: the daemon runs many plugins on one
set of streams, each plugin with its own processing.

A subscriber that joins before the stream has delivered anything simply takes
the stream's own LIST. One that joins later (a plugin starting a little after
the others, or restarted) has missed what was delivered so far, and catches up
with a LIST of its own, received and fed as the stream's own is (see
``opd.engine.listing``): its pages as fast as the API server answers, kept as
bytes up to a bound, and given to it one by one as its ``backlog`` makes room,
never the whole backlog parsed in memory. (Replaying the stream's known set instead would mean a GET per object:
the stream keeps versions, not bodies.) Meanwhile the stream goes on delivering
to it, and the two sources are reconciled by resourceVersion, compared as
numbers (etcd revisions; the processor relies on that too) by a
:class:`CatchUp`, so that the subscriber gets every object once per state, and
never an older state of an object after a newer one:

- an object that the subscriber has been given at version ``v`` is given
  again, by either source, only in a state newer than ``v``;
- a stream event for an object it has not been given yet is held back when it
  is no newer than the catch-up LIST's snapshot (the horizon), which holds
  that state or a newer one; a newer event goes through at once;
- a deletion goes through when the object was given; one that was not given
  is only noted, so that the LIST's older copy is not given either.

That takes a version per object while the catch-up runs, dropped when it ends.
The watch may lag behind the catch-up's snapshot, so the horizon stays: an
event no newer than it is a state the LIST covered (deletions still go
through). When the catch-up LIST's snapshot expires (410 on a continue token)
it starts over; what was given is not given again. A stream that relists
meanwhile needs nothing special: its reports, deletions without a version
among them, are events like any other. Unsubscribing cancels the catch-up.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from opd.engine.backoff import Backoff
from opd.engine.listing import ListProgress, PageBuffer
from opd.engine.shapes import BadShape
from opd.engine.watching import Deliver, Watcher
from opd.kube.api import REQUEST_ERRORS, TRANSIENT_ERRORS, APIError, GoneError, KubeClient
from opd.resources import Resource
from opd.settings import WatchingSettings

# What a catch-up LIST retries on: the requests' errors, and an answer that is no list.
_PAGE_ERRORS: tuple[type[Exception], ...] = (*REQUEST_ERRORS, BadShape)

StreamKey = tuple[Resource, str | None, str | None, str | None]  # resource, namespace, label and shard selectors


def _version(body: dict[str, Any]) -> int | None:
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


class CatchUp:
    """What a late subscriber has been given, while its own LIST and the stream both deliver to it."""

    def __init__(self) -> None:
        # uid -> the version of the newest state given (inf once deleted); dropped when caught up.
        self.seen: dict[str, float] | None = {}
        self.horizon: int | None = None  # the snapshot version of the current catch-up LIST

    def snapshot(self, version: str) -> None:
        """A catch-up LIST (or its restart) has this snapshot version."""
        try:
            self.horizon = int(version)
        except ValueError:
            self.horizon = None  # not comparable: let every stream event through

    def admit(self, kind: str, body: dict[str, Any]) -> bool:
        """Whether a stream event goes to the subscriber."""
        version = _version(body)
        if self.seen is None:  # caught up: the list covered every state up to the horizon
            return kind == "DELETED" or version is None or self.horizon is None or version > self.horizon
        uid = body["metadata"]["uid"]
        given = self.seen.get(uid)
        if kind == "DELETED":
            self.seen[uid] = math.inf  # whatever the catch-up LIST still holds of it is older
            return given is not None and given != math.inf  # never given: nothing to take back
        floor = given if given is not None else -1 if self.horizon is None else self.horizon
        if version is not None and version <= floor:
            return False
        self.seen[uid] = math.inf if version is None else version
        return True

    def take(self, item: dict[str, Any]) -> str | None:
        """The event type to give an item of the catch-up LIST as, or None when it is not newer."""
        assert self.seen is not None
        uid = item["metadata"]["uid"]
        version = _version(item)
        given = self.seen.get(uid)
        if given is not None and (version is None or version <= given):
            return None
        self.seen[uid] = math.inf if version is None else version
        return "ADDED" if given is None else "MODIFIED"

    def finish(self) -> None:
        self.seen = None


@dataclass(eq=False)
class Subscription:
    key: StreamKey
    deliver: Deliver
    backlog: Callable[[], Awaitable[None]] | None = None  # awaited between LIST pages
    # Its first LIST: received whole (what readiness waits for), then fed to it whole (``listed``).
    received: asyncio.Event = field(default_factory=asyncio.Event)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    progress: ListProgress = field(default_factory=ListProgress)
    catch_up: CatchUp | None = None  # a late subscriber's reconciliation (see the module's docstring)
    task: asyncio.Task[None] | None = None  # its catch-up LIST, while it runs


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
        self._ending: set[asyncio.Task[Any]] = set()  # cancelled (unsubscribed), not yet ended
        self._liveness: asyncio.Task[None] | None = None
        self.hung = 0  # times the path to the API server was found hung

    @property
    def watchers(self) -> list[Watcher]:
        return [s.watcher for s in self._streams.values()]

    def subscribe(self, resource: Resource, namespace: str | None, selector: str | None,
                  deliver: Deliver, backlog: Callable[[], Awaitable[None]] | None = None, *,
                  shards: str | None = None) -> Subscription:
        """``shards``: KEP-5866's shardSelector (opd.ha), asked of the server beside the label selector."""
        key = (resource, namespace, selector, shards)
        sub = Subscription(key, deliver, backlog)
        stream = self._streams.get(key)
        if self._liveness is None:
            self._liveness = asyncio.get_running_loop().create_task(self._keep_alive(), name="opd liveness")
        if stream is None:
            watcher = Watcher(self.client, resource, namespace, settings=self.settings,
                              deliver=self._fan_out(key), label_selector=selector, shard_selector=shards)
            watcher.backlog = self._backlog(key)
            task = asyncio.get_running_loop().create_task(watcher.run(), name=f"opd watch {watcher}")
            stream = self._streams[key] = _Stream(watcher, task)
        if stream.watcher.started:
            sub.catch_up = CatchUp()
            sub.task = asyncio.get_running_loop().create_task(self._catch_up(stream.watcher, sub),
                                                              name=f"opd catch-up {stream.watcher}")
        else:  # nothing delivered yet: the stream's own list is all this subscriber needs
            sub.progress = stream.watcher.progress
            stream.watcher.listed_callbacks.append(sub.listed.set)
            if stream.watcher.received.is_set():  # received, not delivered yet
                sub.received.set()
            else:
                stream.watcher.received_callbacks.append(sub.received.set)
        stream.subscribers.append(sub)
        return sub

    def _cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel a task of the hub's; ``close()`` still waits for it to end."""
        task.cancel()
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.task is not None:
            self._cancel(sub.task)
        stream = self._streams.get(sub.key)
        if stream is None or sub not in stream.subscribers:
            return
        stream.subscribers.remove(sub)
        if sub.listed.set in stream.watcher.listed_callbacks:
            stream.watcher.listed_callbacks.remove(sub.listed.set)
        if sub.received.set in stream.watcher.received_callbacks:
            stream.watcher.received_callbacks.remove(sub.received.set)
        if not stream.subscribers:
            self._cancel(stream.task)
            del self._streams[sub.key]

    def _fan_out(self, key: StreamKey) -> Deliver:
        def deliver(kind: str, body: dict[str, Any]) -> None:
            stream = self._streams.get(key)
            for sub in stream.subscribers if stream is not None else ():
                if sub.catch_up is not None and not sub.catch_up.admit(kind, body):
                    continue
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

    async def _catch_up(self, watcher: Watcher, sub: Subscription) -> None:
        """A late subscriber's own LIST: received as fast as the API server answers, fed page by page
        as its backlog makes room."""
        catch_up = sub.catch_up
        assert catch_up is not None
        pages = PageBuffer(lambda raw: watcher.parse(raw)[0], watcher.list_buffer)
        receiving = asyncio.get_running_loop().create_task(self._receive(watcher, sub, pages),
                                                           name=f"opd catch-up LIST {watcher}")
        try:
            await pages.received()  # as the stream's own LIST: fed once received (see opd.engine.listing)
            while (listed := await pages.get()) is not None:
                for item in watcher.checked(listed):
                    kind = catch_up.take(item)
                    if kind is None:
                        continue
                    try:
                        sub.deliver(kind, item)
                    except Exception:  # as for the stream's events: the subscriber's fault, logged, not fatal
                        logger.opt(exception=True).error(f"opd: a subscriber of {watcher} failed")
                sub.progress.fed += len(listed)
                del listed
                if pages.exhausted:
                    break
                if sub.backlog is not None:
                    await sub.backlog()
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
        catch_up.finish()
        sub.task = None
        sub.listed.set()

    async def _receive(self, watcher: Watcher, sub: Subscription, pages: PageBuffer) -> None:
        """The pages of a late subscriber's LIST, retried page by page; started over from a new
        snapshot when the old one expired."""
        catch_up, progress = sub.catch_up, sub.progress
        assert catch_up is not None
        try:
            await self._pages(watcher, catch_up, progress, pages)
        except Exception as exc:  # a bug: the feed must not wait for pages that will never come
            pages.fail(exc)
            raise
        sub.received.set()

    async def _pages(self, watcher: Watcher, catch_up: CatchUp, progress: ListProgress, pages: PageBuffer) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        reported: str | None = None  # each kind of trouble once, not at every retry
        token: str | None = None
        first = True  # the next page starts a LIST (a new snapshot)
        while True:
            try:
                raw, listed, version, token, remaining = await watcher.fetch(token)
            except _PAGE_ERRORS as exc:
                if isinstance(exc, GoneError) and token is not None:
                    # The continue token outlived its snapshot: list again, from a new one.
                    logger.info(f"opd: listing {watcher} for a new subscriber: the snapshot expired; relisting")
                    token, first = None, True
                    continue
                trouble = f"{type(exc).__name__}:{getattr(exc, 'status', '')}"
                if trouble != reported:
                    logger.warning(f"opd: listing {watcher} for a new subscriber: {exc}; retrying")
                    reported = trouble
                await asyncio.sleep(backoff.next())  # then the same page again: its token stays valid
                continue
            backoff.reset()
            reported = None
            if first:
                # Stream events no newer than this snapshot wait for the LIST, which holds them. Set
                # as the page is received, before the pages ahead of it are fed: what they give is
                # older, and the CatchUp gives each object only newer states.
                catch_up.snapshot(version)
                if progress.received:
                    progress.restart()
                first = False
            progress.page(len(listed), remaining, last=token is None)
            await pages.put(listed, raw)
            del raw, listed
            if token is None:
                break
        pages.finish()

    async def _keep_alive(self) -> None:
        """One probe per cluster, not per stream: quiet streams cost nothing, and a path that hangs
        silently (every open connection blackholed, no RST) is found within interval + timeout. The
        probe's connection is made with the first stream and kept busy, so it is as old as they are."""
        hung = False
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            try:
                if self._streams:
                    await self.client.probe(self.settings.probe_timeout)
            except TRANSIENT_ERRORS as exc:
                # Streams that brought data meanwhile prove the path: the probe's answer was slowed by a
                # busy loop (a backlog), and tearing every stream down would only add to the load.
                if self.client.last_stream_data <= asked:
                    streams = self.client.interrupt_streams()
                    self.client.recycle(hung=True)
                    self.hung += 1
                    if not hung:
                        logger.warning(f"opd: the API server did not answer within {self.settings.probe_timeout:g}s "
                                       f"({type(exc).__name__}): reconnecting {streams} watch stream(s) and the "
                                       "request connections")
                    hung = True
            except APIError:
                hung = False  # it answered: the path works (whatever it thinks of the request)
            else:
                if hung:
                    logger.info("opd: the API server answers again")
                hung = False
            await asyncio.sleep(self.settings.probe_interval)

    async def close(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
            self._ending.add(self._liveness)
            self._liveness = None
        tasks = [s.task for s in self._streams.values()]
        tasks += [sub.task for s in self._streams.values() for sub in s.subscribers if sub.task is not None]
        for task in tasks:
            task.cancel()
        tasks += list(self._ending)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._streams.clear()
