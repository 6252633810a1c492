"""One resource's processing for one operator: its parts put together, and the step that takes
one queued object through them.

- ``intake``: events in (the queue, the index feed), objects read afresh, echoes skipped;
- ``handling``: changes, deletions, sub-handlers and event handlers, with their kwargs from
  ``arguments``, the one builder of handler kwargs;
- ``applying``: every write (a handled change's plan, handlers' outputs, retries of failed writes);
- ``spawning``: timers and daemons; ``inventory``: what this process remembers of each object.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from loguru import logger

from opd.engine import arguments
from opd.engine.applying import Applier, Writer
from opd.engine.events import EventPoster
from opd.engine.execution import brief
from opd.engine.handling import Handling
from opd.engine.indexing import Indexes
from opd.engine.intake import Intake
from opd.engine.inventory import REFRESH, Inventory, Item
from opd.engine.invocation import NotStarted
from opd.engine.ownership import EVERYTHING, Fenced, Ownership, say_dropped
from opd.engine.queueing import WorkQueue
from opd.engine.reporting import Reporter, where
from opd.engine.spawning import Spawner
from opd.engine.state import Storage, holding_label, is_secret, version
from opd.kube.api import REQUEST_ERRORS, ConflictError, KubeClient, NotFoundError
from opd.kube.batching import PatchNotJSON
from opd.registry import CHANGING, STATEFUL, Handler, OperatorRegistry, Reason
from opd.resources import Resource, ResourceRef
from opd.settings import OperatorSettings


class ResourceProcessor:
    """Handles the objects of one resource for one operator (registry)."""

    def __init__(self, *, client: KubeClient, resource: Resource, ref: ResourceRef,
                 registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                 executor: Executor | None, poster: EventPoster | None = None,
                 ownership: Ownership = EVERYTHING, indexes: Indexes | None = None) -> None:
        self.ownership = ownership
        self.resource = resource
        self.settings = settings
        handlers = registry.for_resource(ref)
        by_reason: dict[Reason, list[Handler]] = {r: [h for h in handlers if h.reason == r] for r in Reason}
        self.stateful = any(by_reason[r] for r in STATEFUL)
        secret = is_secret(resource.api_version, resource.kind)
        # Server-side filtering: the label requirements all handlers share. When handlers may hold
        # a finalizer, a second, narrow stream follows the label opd sets while it holds one, so an
        # object that leaves the selector is still found and let go of (after a restart too).
        self.selector = registry.label_selector(ref)
        may_hold = bool(by_reason[Reason.TIMER] or by_reason[Reason.DAEMON] or any(
            not h.optional for h in by_reason[Reason.DELETE]))
        prefix = settings.persistence.prefix
        self.holding_selector = holding_label(prefix) if self.selector is not None and may_hold else None
        storage = Storage(settings.persistence, has_status_subresource="status" in resource.subresources,
                          handler_ids=[h.id for h in handlers], secret=secret,
                          fields=[h.field for h in handlers if h.field is not None and h.reason in CHANGING])
        applier = Applier(client, resource, settings.persistence, storage,
                          holding_label=self.holding_selector is not None, ownership=ownership)
        self.inventory = Inventory()
        self.queue: WorkQueue[str, Item] = WorkQueue(self._process, workers=settings.processing.workers,
                                                     name=str(resource))
        self.indexes = indexes or Indexes([], executor=executor, retries=settings.retries)
        operator = arguments.Operator(settings=settings, memo=memo, api=client.handler_client,
                                      indexes=self.indexes.kwargs)
        objects = arguments.Objects(operator, resource=resource, poster=poster)
        self.objects = objects
        reporter = Reporter(resource, poster)
        writer = Writer(applier, reporter, self.queue, recall=self.inventory.recall,
                        backoff_initial=settings.watching.backoff_initial)
        self.spawner = Spawner(
            kwargs_for=lambda handler, body, stopped, patch: objects.spawned(
                body, reason=str(handler.reason), stopped=stopped, patch=patch),
            write_outcome=writer.outcome, executor=executor, retries=settings.retries,
            stop_timeout=settings.shutdown.timeout)
        self.intake = Intake(client=client, resource=resource, settings=settings, ownership=ownership,
                             inventory=self.inventory, queue=self.queue, indexes=self.indexes,
                             indexers=by_reason[Reason.INDEX], keeps_events=bool(by_reason[Reason.EVENT]),
                             holding_selector=self.holding_selector, objects=objects, writer=writer)
        self.handling = Handling(by_reason=by_reason, settings=settings, storage=storage, secret=secret,
                                 filtered=self.selector is not None, label=applier.label, objects=objects,
                                 inventory=self.inventory, queue=self.queue, spawner=self.spawner, writer=writer,
                                 reporter=reporter, executor=executor, read=self.intake.read, ownership=ownership)
        self.writer = writer
        self.metrics = self.handling.metrics
        self.indexers = self.intake.indexers
        self.deliver = self.intake.deliver
        self.deliver_held = self.intake.deliver_held
        self.wait_for_room = self.intake.wait_for_room
        self.indexed = self.intake.indexed

    async def close(self) -> None:
        # Together, so the shutdown bound holds for all at once.
        timeout = self.settings.shutdown.timeout
        await asyncio.gather(self.queue.close(timeout), self.spawner.stop_all("operator stopping"),
                             self.intake.close(timeout))

    # -- one object -----------------------------------------------------------------------------------------------
    async def _process(self, uid: str, item: Item) -> None:
        try:
            await self._step(uid, item)
        except NotStarted:  # handed over while it waited (for a thread, mostly): the owner now handles it
            logger.debug(f"opd: {self.resource} {uid}: no longer this replica's: its handlers did not start")
            await self.disown(uid, "no longer this replica's")
        finally:
            self.handling.started.discard(uid)

    async def _step(self, uid: str, item: Item) -> None:
        event_type, body = item
        if not self.ownership.owns(uid):
            await self.disown(uid, "no longer this replica's")
            return
        if not self.indexes.ready.is_set():
            await self.indexes.ready.wait()  # every index has seen its objects listed once
        memory = self.inventory.peek(uid)
        if memory is not None and memory.events:
            events, memory.events = memory.events, []
            for raw_type, raw_body in events:
                await self.handling.events(raw_type, raw_body)
        if event_type == REFRESH:
            fresh = await self.intake.read(body)
            if fresh is None:
                event_type = "DELETED"
            else:
                event_type, body = "MODIFIED", fresh
        if event_type == "DELETED":
            await self.handling.deleted(uid, body)
            return
        if not self.stateful:
            self.inventory.tidy(uid)
            return
        memory = self.inventory.recall(uid)
        try:
            if memory.unwritten is not None:  # an outcome computed earlier: write it, do not run handlers again
                plan, memory.unwritten = memory.unwritten, None
                response = await self.writer.plan(memory, plan, body)
                if version(body) <= plan.version:
                    return  # this state is the one that outcome was computed from: done with it
                body = response or body
            if self.intake.skipped(uid, memory, event_type, body):
                return
            await self.handling.change(uid, memory, body)
            if memory.failing is not None:
                logger.info(f"opd: {self.resource} {where(body)}: written again after failures")
                memory.failing, memory.retry = None, None
        except Fenced as exc:
            say_dropped(f"opd: {exc}: its outcome is dropped (the replica that owns it now handles it)")
            await self.disown(uid, "no longer this replica's")
        except PatchNotJSON as exc:  # checked per handler before; this is the batcher's own backstop
            memory.unwritten = None
            logger.error(f"opd: {self.resource} {where(body)}: the outcome cannot be written: {brief(exc)}")
        except RecursionError:  # nested past what diffs and JSON encoding can walk (~950 levels; parsed: 1024)
            memory.unwritten = None
            logger.warning(f"opd: {self.resource} {where(body)}: nested too deeply to process; skipped until it "
                           "changes")
        except NotFoundError:
            memory.unwritten = None  # gone: the watch brings its deletion
        except ConflictError:
            pass  # changed under us: the watch brings the newer state, the unwritten plan goes with it
        except REQUEST_ERRORS as exc:
            self.writer.failed(uid, memory, item, exc)
        finally:
            self.inventory.tidy(uid)

    async def disown(self, uid: str, reason: str) -> None:
        """Stop everything of one object here (it is another replica's now): its queued state,
        retries, timers and daemons, and what this process remembered of it."""
        self.queue.forget(uid)
        self.inventory.forget(uid)
        await self.spawner.stop(uid, reason)
        self.objects.forget(uid)

    def known(self) -> list[str]:
        """The uids this processor keeps anything for: queued, remembered, or with timers/daemons."""
        return list({*self.queue.keys(), *self.inventory.uids(), *self.spawner.uids()})

    def busy(self, uid: str) -> bool:
        """Whether a handler of the object has started in the step in process (a replica hands a shard
        over only after it); one still waiting for a thread is not: it starts only if still owned."""
        return uid in self.handling.started
