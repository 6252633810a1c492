"""A simulated Lease API and clock for opd.ha's unit tests (and their fuzzing): Leases in memory, time
moved by hand, replicas stepped in rounds."""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

from opd.ha.coordination import Coordinator
from opd.ha.election import Timings
from opd.ha.leases import Lease
from opd.ha.observing import Observations
from opd.ha.settings import HaSettings
from opd.kube.api import ConflictError, NotFoundError

TIMINGS = Timings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=self.now)


class Store:
    """Leases in a dict, with the API server's resourceVersion preconditions; every write is shown
    at once to the observers (a watch without delay) unless ``blind``."""

    namespace = "test"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.leases: dict[str, Lease] = {}
        self.version = 0
        self.observers: list[Observations] = []
        self.requests: collections.Counter[str] = collections.Counter()
        self.fail: Callable[[str], Exception | None] = lambda verb: None
        self.takes = 0.0  # clock seconds each request takes (its effect lands at its end)

    async def _request(self, verb: str) -> None:
        self.requests[verb] += 1
        self.clock.now += self.takes
        error = self.fail(verb)
        if error is not None:
            raise error

    def _store(self, lease: Lease) -> Lease:
        self.version += 1
        stored = dataclasses.replace(lease, version=str(self.version))
        self.leases[lease.name] = stored
        for seen in self.observers:
            seen.saw(stored)
        return stored

    async def get(self, name: str, *, timeout: float) -> Lease | None:
        await self._request("get")
        return self.leases.get(name)

    async def create(self, lease: Lease, *, timeout: float) -> Lease:
        await self._request("create")
        if lease.name in self.leases:
            raise ConflictError(409, "AlreadyExists", lease.name)
        return self._store(lease)

    async def update(self, lease: Lease, *, timeout: float) -> Lease:
        await self._request("update")
        current = self.leases.get(lease.name)
        if current is None:
            raise NotFoundError(404, "NotFound", lease.name)
        if current.version != lease.version:
            raise ConflictError(409, "Conflict", lease.name)
        return self._store(lease)

    async def delete(self, lease: Lease, *, timeout: float) -> None:
        await self._request("delete")
        current = self.leases.get(lease.name)
        if current is not None and current.version == lease.version:
            del self.leases[lease.name]
            for seen in self.observers:
                seen.forget(lease.name, deleted=True)

    async def patch(self, name: str, patch: Mapping[str, Any], *, timeout: float) -> Lease:
        """A merge-patch of metadata.annotations (None removes one), with the precondition if given."""
        await self._request("patch")
        current = self.leases.get(name)
        if current is None:
            raise NotFoundError(404, "NotFound", name)
        meta = patch.get("metadata") or {}
        if "resourceVersion" in meta and meta["resourceVersion"] != current.version:
            raise ConflictError(409, "Conflict", name)
        annotations = dict(current.annotations)
        for key, value in (meta.get("annotations") or {}).items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return self._store(dataclasses.replace(current, annotations=annotations))




class Operations:
    """The listener: what a replica's operations were told, in order."""

    def __init__(self) -> None:
        self.told: list[tuple[str, frozenset[int]]] = []
        self.keys: set[int] = set()

    async def gain(self, keys: frozenset[int], reason: str) -> None:
        self.told.append(("gain", keys))
        self.keys |= keys

    async def drain(self, keys: frozenset[int], reason: str) -> None:
        self.told.append(("drain", keys))

    async def lose(self, keys: frozenset[int], reason: str) -> None:
        self.told.append(("lose", keys))
        self.keys -= keys

    async def drained(self, keys: frozenset[int], timeout: float) -> bool:
        return True


class Cut:
    """One replica's way to the store, which can be cut (every request fails, as in a blackhole)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.namespace = store.namespace
        self.cut = False
        self.attempts = 0

    def _check(self) -> None:
        self.attempts += 1
        if self.cut:
            raise TimeoutError("blackholed")

    async def get(self, name: str, *, timeout: float) -> Lease | None:
        self._check()
        return await self.store.get(name, timeout=timeout)

    async def create(self, lease: Lease, *, timeout: float) -> Lease:
        self._check()
        return await self.store.create(lease, timeout=timeout)

    async def update(self, lease: Lease, *, timeout: float) -> Lease:
        self._check()
        return await self.store.update(lease, timeout=timeout)

    async def delete(self, lease: Lease, *, timeout: float) -> None:
        self._check()
        await self.store.delete(lease, timeout=timeout)

    async def patch(self, name: str, patch: Mapping[str, Any], *, timeout: float) -> Lease:
        self._check()
        return await self.store.patch(name, patch, timeout=timeout)


class Replicas:
    def __init__(self, store: Store, clock: Clock, shards: int) -> None:
        self.store, self.clock, self.shards = store, clock, shards
        self.running: dict[str, tuple[Coordinator, Operations]] = {}
        self.gone: list[Coordinator] = []

    def add(self, identity: str, mode: str = "shards", store: Store | Cut | None = None) -> Coordinator:
        seen = Observations(self.clock)
        self.store.observers.append(seen)
        for lease in self.store.leases.values():
            seen.saw(lease)  # what a new watch lists
        ops = Operations()
        settings = HaSettings(mode=mode, lease="opd", namespace="test", identity=identity, shards=self.shards)
        coordinator = Coordinator(settings, store or self.store, seen, ops, clock=self.clock, wall=self.clock.wall)
        self.running[identity] = (coordinator, ops)
        return coordinator

    def crash(self, identity: str) -> None:
        coordinator, _ = self.running.pop(identity)
        self.store.observers.remove(coordinator.seen)
        self.gone.append(coordinator)

    async def stop(self) -> None:
        """The test is over: the ones running stop (releasing), the crashed ones' tasks end."""
        for coordinator in [*(c for c, _ in self.running.values()), *self.gone]:
            await coordinator.stop()

    def check(self) -> None:
        """At this moment no key is held by two replicas (by time: what a view's owns() asks)."""
        holders = collections.defaultdict(list)
        for identity, (coordinator, _) in self.running.items():
            for key in range(len(coordinator.claims)):
                if coordinator.holds(key):
                    holders[key].append(identity)
        doubled = {k: v for k, v in holders.items() if len(v) > 1}
        assert not doubled, doubled

    async def rounds(self, n: int, step: float = 0.5) -> None:
        for _ in range(n):
            for coordinator, _ in list(self.running.values()):
                await coordinator.step()
                await coordinator.settled()
                self.check()
            self.clock.now += step
            self.check()

    def held(self) -> dict[str, int]:
        return {i: len(ops.keys) for i, (_, ops) in self.running.items()}


