"""What comes in for one resource, before any handler: the events of its streams (queued per
object, newest state first; every one kept for event handlers), the index feed (every replica
keeps whole indexes), an object read afresh when its event is out of date, and the echoes of
opd's own writes, skipped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from loguru import logger

from opd.engine import arguments
from opd.engine.applying import Plan, Writer
from opd.engine.backoff import Backoff
from opd.engine.diffs import Patch
from opd.engine.execution import brief
from opd.engine.indexing import Indexes
from opd.engine.inventory import REFRESH, RETRY, Inventory, Item, Record
from opd.engine.ownership import Ownership
from opd.engine.queueing import WorkQueue
from opd.engine.reporting import where
from opd.engine.state import version
from opd.kube.api import REQUEST_ERRORS, KubeClient, NotFoundError
from opd.registry import Handler, matches
from opd.resources import Resource
from opd.settings import OperatorSettings


class Intake:
    """Takes one resource's events for one operator: into its queue, its indexes, or nowhere."""

    def __init__(self, *, client: KubeClient, resource: Resource, settings: OperatorSettings, ownership: Ownership,
                 inventory: Inventory, queue: WorkQueue[str, Item], indexes: Indexes, indexers: list[Handler],
                 keeps_events: bool, holding_selector: str | None, objects: arguments.Objects,
                 writer: Writer) -> None:
        self.client = client
        self.resource = resource
        self.settings = settings
        self.ownership = ownership
        self.finalizer = settings.persistence.finalizer
        self.inventory = inventory
        self.queue = queue
        self.indexes = indexes
        self.indexers = indexers
        self.keeps_events = keeps_events  # event handlers see every event, in order
        self.holding_selector = holding_selector
        self.objects = objects
        self.writer = writer
        # Indexes: this operator's, fed by a queue of their own, so that handlers waiting for them
        # to be complete never hold up the indexing itself.
        self.index_queue: WorkQueue[str, Item] | None = WorkQueue(
            self._index, workers=settings.processing.workers, name=f"{resource} index") if indexers else None

    # -- events in ------------------------------------------------------------------------------------------------
    def deliver(self, event_type: str, body: dict[str, Any]) -> None:
        """An event of the main stream."""
        meta = body["metadata"]
        uid = meta["uid"]
        if self.index_queue is not None:  # every replica keeps whole indexes, whoever owns the object
            self.index_queue.put(uid, (event_type, body))
        if not self.ownership.owns(uid):
            return  # another replica's (opd.ha): when it becomes ours, its state is listed again
        if event_type == "DELETED" and self.finalizer in (meta.get("finalizers") or ()):
            # Still held by opd, so it still exists: it left the label selector. The event carries
            # the object as it was before (the API server's watch does so): read it afresh.
            self.queue.put(uid, (REFRESH, body))
            return
        if self.holding_selector is not None and event_type != "DELETED":
            memory = self.inventory.peek(uid)
            held = self.holding_selector in (meta.get("labels") or {})
            if memory is not None and version(body) <= memory.delivered:
                return  # the narrow stream brought this state (or a newer one) already
            if held or memory is not None:
                memory = memory or self.inventory.recall(uid)
                memory.delivered, memory.held = version(body), held
        if self.keeps_events:
            # Event handlers see every event, in order; the rest works on the newest state only.
            self.inventory.recall(uid).events.append((event_type, body))
        self.queue.put(uid, (event_type, body))

    def deliver_held(self, event_type: str, body: dict[str, Any]) -> None:
        """An event of the narrow stream of objects opd holds a finalizer on (they carry its label).
        Its DELETED means the object left that stream: opd let go of it (nothing more to do), or
        somebody removed the label while opd's finalizer is still there (let go of it, or label it)."""
        meta = body["metadata"]
        uid = meta["uid"]
        if not self.ownership.owns(uid):
            return
        if event_type == "DELETED":
            if self.finalizer in (meta.get("finalizers") or ()):
                self.queue.put(uid, (REFRESH, body))  # its content is the state before: read it afresh
            return
        memory = self.inventory.recall(uid)
        if version(body) <= memory.delivered:
            return
        memory.delivered, memory.held = version(body), True
        self.queue.put(uid, ("MODIFIED", body))

    async def wait_for_room(self, limit: int) -> None:
        """Backpressure for a LIST: until the queues have room. Not while this operator's handlers wait
        for its indexes to be complete: a LIST held up then could be the one they wait for."""
        if self.index_queue is not None:
            await self.index_queue.wait_for_room(limit)
        if self.indexes.ready.is_set():
            await self.queue.wait_for_room(limit)

    # -- the index feed -------------------------------------------------------------------------------------------
    async def indexed(self) -> None:
        """Until every object delivered so far is in this resource's indexes."""
        if self.index_queue is not None:
            await self.index_queue.drained()

    async def _index(self, uid: str, item: Item) -> None:
        event_type, body = item
        if event_type in ("DELETED", REFRESH):  # gone, or left the label selector
            self.indexes.forget(self.indexers, uid)
            return
        for handler in self.indexers:
            patch = Patch()
            kwargs = self.objects.index(body, patch=patch)
            if matches(handler, body, kwargs):
                await self.indexes.feed(handler, uid, kwargs, where(body))
                if patch and event_type != "DELETED":
                    await self.writer.quietly(handler, body, Plan(patch=patch))  # checked when it leaves
            else:
                self.indexes.forget([handler], uid)

    async def close(self, timeout: float) -> None:
        if self.index_queue is not None:
            await self.index_queue.close(timeout)

    # -- what a queued item is ------------------------------------------------------------------------------------
    async def read(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The object as it is now; None when it is gone. Retried until the API server answers."""
        meta = body["metadata"]
        backoff = Backoff(self.settings.watching.backoff_initial, self.settings.watching.backoff_max)
        while True:
            try:
                found: dict[str, Any] = await self.client.get(self.resource.path(meta.get("namespace"), meta["name"]))
            except NotFoundError:
                return None
            except REQUEST_ERRORS as exc:
                logger.debug(f"opd: reading {self.resource} {where(body)} failed ({brief(exc)}); retrying")
                await asyncio.sleep(backoff.next())
                continue
            if found["metadata"].get("uid") != meta.get("uid"):
                return None  # gone, and another object took its name
            found.setdefault("apiVersion", self.resource.api_version)
            found.setdefault("kind", self.resource.kind)
            return found

    def skipped(self, uid: str, memory: Record, event_type: str, body: dict[str, Any]) -> bool:
        """Whether this state needs no handling: the echo of opd's own write (whose answer held
        nothing new), an event older than that write, or an object opd has let go of."""
        if memory.echo is not None and event_type != RETRY and version(body) >= memory.echo:
            echo, memory.echo = memory.echo, None
            if version(body) == echo:  # opd's own write, and its answer held nothing new
                memory.written = None
                if memory.due is not None:
                    # Its arrival replaced the planned retry: plan it again.
                    self.queue.put_after(max(0.0, memory.due - time.time()), uid, (RETRY, body))
                return True
        return memory.released or (event_type != RETRY and self._stale(memory, body))

    def _stale(self, memory: Record, body: Mapping[str, Any]) -> bool:
        """An event older than our own last write of this object (its echo is still on the way)."""
        written = memory.written
        if written is None or not self.settings.processing.skip_stale_events:
            return False
        if version(body) < written:
            return True
        memory.written = None
        return False
