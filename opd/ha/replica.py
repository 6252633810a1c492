"""This process as one of several replicas: its own connection, a watch on each Lease of its group,
the coordinator's steps, and the views it gives its operations.

The Leases go over a connection of their own (not the operations'): a renewal never waits
behind a burst of the handlers' writes for a pooled connection. The watches only wake the
coordinator early (a lease released, a replica joining) and fence a holder as soon as another
record shows; its steps also come on time without them.

Each Lease is watched by its name (``fieldSelector=metadata.name=<name>``), which the API server's
authorizer holds to ``resourceNames``: leader mode one watch, shards mode S + 1 (the S shard Leases
and the members Lease), on the replica's one client. A label-selector watch would see the group in
one stream, but RBAC cannot name what it reads: it would need list/watch on every Lease of the
namespace (the scheduler's and controller-manager's, in kube-system). What the names cost instead:
one stream (an HTTP/1.1 connection) per Lease, each re-opened at the end of its ``server_timeout``
(spread over its last fifth, so that they do not all come at once): about (S + 1) / 4.5 watch
requests a minute at the default 300 s, idle. Every renewal is one event either way.

    replica = Replica(HaSettings(mode="leader", lease="my-operator"), login=login)
    await replica.start()
    view = replica.view()                       # an opd.engine Ownership
    operation = opd.orchestration.build_operation(..., ownership=view)  # attaches it: in the operation's loop
    ...                                         # run it (spawn_operation, run_tasks); stop it
    view.detach()
    await replica.stop()                        # after the operations stopped: releases the Leases

as ``opd run --ha`` does (``opd.devrun.replicated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import replace
from typing import Any

from loguru import logger

from opd.engine.watching import Watcher, echoed_shards
from opd.ha.coordination import Coordinator, State
from opd.ha.election import CLOCK
from opd.ha.grants import View
from opd.ha.leases import LEASES, KubeLeases
from opd.ha.observing import Observations
from opd.ha.settings import HaSettings
from opd.ha.shards import lease_names, selector, shard_name
from opd.kube import credentials
from opd.kube.api import REQUEST_ERRORS, KubeClient
from opd.kube.credentials import Login
from opd.settings import NetworkingSettings, WatchingSettings


class LeaseWatcher(Watcher):
    """One Lease of the group, by its name (``fieldSelector=metadata.name``): RBAC holds its list and
    watch to ``resourceNames``, and it sees the Lease whatever labels an edit left it."""

    def __init__(self, *args: Any, name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = name

    def __str__(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _query(self) -> dict[str, Any]:
        return {**super()._query(), "fieldSelector": f"metadata.name={self.name}"}


def spread(settings: WatchingSettings, index: int, count: int) -> WatchingSettings:
    """The ``index``-th of ``count`` watches' settings: its server timeout taken from the last fifth
    below the configured one, evenly, so that the watches of a group are not re-opened all at once."""
    base = settings.server_timeout
    return replace(settings, server_timeout=max(1, base - (base // 5) * index // max(count, 1)))


def honours_shards(answer: object, asked: str) -> bool:
    """Whether a LIST's answer says the server applied the shardSelector asked: KEP-5866 echoes it in
    ``metadata.shardInfo.selector`` (read bounded in shape); an older server ignores the parameter
    and sends no such field."""
    return echoed_shards(answer) == asked


async def server_shards(client: KubeClient, namespace: str, name: str, shard_selector: str) -> bool:
    """Ask the server once, on a Lease this replica may list by name: does it filter by shardSelector?"""
    try:
        answer = await client.get(LEASES.path(namespace), fieldSelector=f"metadata.name={name}",
                                  shardSelector=shard_selector, limit=1)
    except REQUEST_ERRORS as exc:  # refused or unreachable: the label path needs no server support
        logger.debug(f"opd: ha: asking for shardSelector support failed: {exc}")
        return False
    return honours_shards(answer, shard_selector)


BUSY_POLL = 0.05  # seconds between looks at the work in process of a shard being handed over
MIN_PAUSE = 0.05  # seconds at least between two steps (a burst of lease changes is one look)


class Replica:
    def __init__(self, settings: HaSettings, *, login: Login | None = None,
                 networking: NetworkingSettings | None = None, watching: WatchingSettings | None = None) -> None:
        self.settings = settings.check()
        self.login = login
        self.networking = networking or NetworkingSettings()
        self.watching = watching or WatchingSettings()
        self.client: KubeClient | None = None
        self.coordinator: Coordinator | None = None
        self._views: list[View] = []
        self._views_lock = threading.Lock()  # views come and go in the operations' threads
        self._tasks: list[asyncio.Task[Any]] = []
        self.watchers: list[LeaseWatcher] = []  # one per Lease of the group

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and begin: watch the group's Leases, and take steps (acquire, renew, hand over)."""
        s = self.settings
        names = lease_names(s.mode, s.lease, s.shards)
        # Each watch holds a connection of the client's stream pool for as long as it runs: room for
        # all of them (the client is this replica's own), none waits for another to end.
        networking = replace(self.networking, connection_limit=max(self.networking.connection_limit, len(names)))
        self.client = await credentials.connect(self.login, networking)
        seen = Observations(CLOCK)
        store = KubeLeases(self.client, self.settings.namespace)
        self.coordinator = Coordinator(self.settings, store, seen, self,
                                       request_timeout=self.networking.request_timeout)
        self.watchers = [LeaseWatcher(self.client, LEASES, self.settings.namespace, deliver=seen.deliver, name=name,
                                      settings=spread(self.watching, i, len(names)))
                         for i, name in enumerate(names)]
        loop = asyncio.get_running_loop()
        self._tasks = [*(loop.create_task(w.run(), name=f"opd ha watch {w.name}") for w in self.watchers),
                       loop.create_task(self._run(), name="opd ha steps")]
        what = f"Lease {s.namespace}/{s.lease}" if s.mode == "leader" else (
            f"{s.shards} shard Leases {s.namespace}/{s.lease}-0..{s.shards - 1}")
        logger.info(f"opd: ha: {s.mode} mode as {s.identity!r}: {what}, {len(names)} watched by name (lease "
                    f"{s.lease_duration:g}s, renew deadline {s.renew_deadline:g}s, retry every {s.retry_period:g}s)")
        if s.mode == "shards":
            self.coordinator.filtering = await self._filtering()

    async def _filtering(self) -> str:
        """How this replica's operations get only their shards' events (said once): by the server where
        it honours KEP-5866's shardSelector (asked with a LIST of one Lease by name, honoured when the
        answer echoes it), else by the shard label (``auto``) or by the client (``server``: no label is
        ever written), unless configured to labels or client."""
        s = self.settings
        assert self.client is not None
        client = ("client-side filtering: this replica receives every event of its resources and drops those of "
                  "shards it does not hold")
        labels = ("label filtering: each object gets a shard label from the replica holding the labeller role, and "
                  "each replica watches only the labels of the shards it holds")
        if s.filtering in ("client", "labels"):
            logger.info(f"opd: ha: shards: {client if s.filtering == 'client' else labels} (as configured)")
            return s.filtering
        if await server_shards(self.client, s.namespace, shard_name(s.lease, 0), selector(0, s.shards)):
            logger.info("opd: ha: shards: the API server honours shardSelector (KEP-5866): server filtering: each "
                        "replica lists and watches only the hash ranges of the shards it holds; no label is written")
            return "server"
        said = "the API server does not honour shardSelector (KEP-5866, Kubernetes 1.36 with ShardedListAndWatch)"
        if s.filtering == "server":
            logger.warning(f"opd: ha: shards: {said}; configured not to write labels: {client}")
            return "client"
        logger.info(f"opd: ha: shards: {said}: {labels}")
        return "labels"

    async def _run(self) -> None:
        coordinator = self.coordinator
        assert coordinator is not None
        clock = coordinator.clock
        while True:
            coordinator.seen.changed.clear()
            began = clock()
            try:
                await coordinator.step()
            except Exception:  # a bug: said loudly; the fence still holds by time, the next step comes
                logger.opt(exception=True).error("opd: ha: a coordination step failed")
            pause = max(MIN_PAUSE, coordinator.next_step() - clock(), began + MIN_PAUSE - clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(coordinator.seen.changed.wait(), pause)

    async def stop(self) -> None:
        """Release what this replica holds; call it after its operations have stopped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            if self.coordinator is not None:
                await self.coordinator.stop()
        finally:
            if self.client is not None:
                await self.client.close()
                self.client = None

    def state(self) -> State | None:
        return self.coordinator.state() if self.coordinator is not None else None

    # -- the operations ----------------------------------------------------------------------------------------
    def view(self) -> View:
        """A new operation's Ownership; ``attach`` it to the operation in the operation's loop."""
        if self.coordinator is None:
            raise RuntimeError("Replica.view() before start()")
        with self._views_lock:
            view = View(self.coordinator, on_detach=self._forget)
            self._views.append(view)
        return view

    def _forget(self, view: View) -> None:
        with self._views_lock:
            if view in self._views:
                self._views.remove(view)

    def _each(self) -> list[View]:
        with self._views_lock:
            return list(self._views)

    async def gain(self, keys: frozenset[int], reason: str) -> None:
        await asyncio.gather(*(v.gain(keys) for v in self._each()))

    async def drain(self, keys: frozenset[int], reason: str) -> None:
        await asyncio.gather(*(v.drain(keys, reason) for v in self._each()))

    async def lose(self, keys: frozenset[int], reason: str) -> None:
        await asyncio.gather(*(v.lose(keys, reason) for v in self._each()))

    async def labelling(self, keys: frozenset[int], reason: str) -> None:
        await asyncio.gather(*(v.labelling(bool(keys)) for v in self._each()))

    async def drained(self, keys: frozenset[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(await asyncio.gather(*(v.busy(keys) for v in self._each()))):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(BUSY_POLL)
        return True
