"""Shard filtering (``opd.ha``): an operation's streams narrowed to the shards its replica holds, by
the server (KEP-5866: a ``shardSelector`` of their hash ranges, ANDed by the server with the label
selector; no label, no labeller) or by a label (``<prefix>/shard in (...)``, and, on the replica that
holds the labeller role, one more stream per handlers' stream, of the objects still to label: see
``opd.engine.labelling``). The watch events they received are counted here: what each replica reads
is the point of filtering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from opd.engine.hub import Subscription, WatchHub
from opd.engine.labelling import Labeller
from opd.engine.ownership import Narrowing, Ownership, count_label, shard_label
from opd.kube.api import KubeClient
from opd.resources import Resource, ResourceRef

Key = tuple[ResourceRef, str | None, str | None]  # a handlers' stream: resource, namespace, label selector
Stream = tuple[Resource, str | None, str | None, str | None]  # a watch stream's key in the hub
Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class LabelFilter:
    """One operation's label filtering; a no-op unless its ownership narrows (``Narrowing``)."""

    def __init__(self, ownership: Ownership, prefix: str, spawn: Spawn) -> None:
        self.narrowing = ownership if isinstance(ownership, Narrowing) else None
        self.prefix = prefix
        self._spawn = spawn
        self.wanted = False  # told to label, maybe before the operation connected
        self.labeller: Labeller | None = None
        self._task: asyncio.Task[Any] | None = None
        self.streams: dict[Key, Subscription] = {}  # the labeller's, per handlers' stream
        self.received_before = 0  # watch events of handlers' streams replaced by relists
        self.final: tuple[int, int] | None = None  # as its streams ended (shutdown)
        self._written_before = 0  # shard labels written by its labellers before the current one

    def narrowed(self, selector: str | None) -> str | None:
        """A stream's label selector with the ownership's shard clause added."""
        if self.narrowing is None:
            return selector
        clause = self.narrowing.clause(shard_label(self.prefix))
        if clause is None:
            return selector
        clause += f",{count_label(self.prefix)}={self.narrowing.shard_count()}"  # labelled for this count only
        return f"{selector},{clause}" if selector else clause

    def shards(self) -> str | None:
        """The shardSelector every handlers' stream asks (filtering by the server); None: not asked."""
        return self.narrowing.shard_selector() if self.narrowing is not None else None

    def subscribe(self, hub: WatchHub, key: Key, resource: Resource) -> None:
        """While labelling: the stream of the objects of a handlers' stream that still need the label."""
        if self.labeller is None or key in self.streams:
            return
        # Objects without the label, or labelled for another shard count (notin: both).
        label = f"{self.labeller.count_label} notin ({self.labeller.count})"
        selector = key[2]
        self.streams[key] = hub.subscribe(resource, key[1], f"{selector},{label}" if selector else label,
                                          self.labeller.deliver(resource), backlog=self.labeller.room)

    def start(self, client: KubeClient) -> bool:
        """Become the labeller; True if it just did (the handlers' streams then need their labelling streams)."""
        if self.labeller is not None or self.narrowing is None:
            return False
        self.labeller = Labeller(client, shard_label(self.prefix), self.narrowing.label_value,
                                 count_label(self.prefix), self.narrowing.shard_count())
        self._task = self._spawn(self.labeller.run(), "opd labeller")
        return True

    def stop(self, hub: WatchHub | None) -> None:
        """No longer the labeller: its streams and task end, what it wrote stays counted."""
        if self.labeller is None:
            return
        self.close(hub)
        if self._task is not None:
            self._task.cancel()
        self._written_before += self.labeller.written
        self.labeller = self._task = None

    def close(self, hub: WatchHub | None) -> None:
        for sub in self.streams.values():
            if hub is not None:
                hub.unsubscribe(sub)
        self.streams.clear()

    def drop_namespace(self, hub: WatchHub, name: str) -> None:
        for key in [k for k in self.streams if k[1] == name]:
            hub.unsubscribe(self.streams.pop(key))

    def written(self) -> int:
        """Shard labels written (as the labeller): the extra writes, one per object."""
        return self._written_before + (self.labeller.written if self.labeller is not None else 0)

    def received(self, hub: WatchHub | None, own: Iterable[Subscription]) -> tuple[int, int]:
        """Watch events received so far, (of the handlers' streams ``own``, of the labeller's)."""
        if self.final is not None or hub is None:
            return self.final or (self.received_before, 0)
        streams = watchers(hub)
        mine = sum(streams[s.key].stats["events"] for s in own if s.key in streams)
        labels = sum(streams[s.key].stats["events"] for s in self.streams.values() if s.key in streams)
        return self.received_before + mine, labels

    def moving(self, old: Subscription, key: Key, ending: Mapping[Any, Any]) -> tuple[str | None, str | None]:
        """A handlers' stream made afresh (a relist): its label and shard selectors now; the old stream's
        events stay counted when that stream ends because the shards held changed (``ending``:
        ``watchers(hub)``)."""
        selector, shards = self.narrowed(key[2]), self.shards()
        if old.key != (old.key[0], old.key[1], selector, shards) and old.key in ending:
            self.received_before += ending[old.key].stats["events"]
        return selector, shards


def watchers(hub: WatchHub) -> Mapping[Stream, Any]:
    return {(w.resource, w.namespace, w.label_selector, w.shard_selector): w for w in hub.watchers}
