"""Processing one object's change: its cause, the handlers it calls for, their outcome written.

The walk of one change: recall what this process remembers of the object
(``inventory``), compute the cause once (``causes``), keep timers and daemons in
step (``daemons``), run the handlers (``execution``), and write results, markers,
the handlers' patch and the finalizer as one plan (``applying``).

opd writes nothing to an object that no handler of this operator selects: no
diff-base, no marker, no finalizer — except to let go of its own finalizer.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from loguru import logger

from opd import subhandlers
from opd.engine import causes
from opd.engine.applying import Applier, Plan, merge
from opd.engine.backoff import Backoff
from opd.engine.diffs import Patch, diff, shown
from opd.engine.events import EventPoster
from opd.engine.execution import Outcome, brief, execute
from opd.engine.indexing import Indexes
from opd.engine.inventory import Inventory, Item, Record
from opd.engine.ownership import EVERYTHING, Fenced, Ownership, say_dropped
from opd.engine.queueing import WorkQueue
from opd.engine.reporting import Reporter, where
from opd.engine.spawning import Spawner, Stopped
from opd.engine.state import State, Storage, compact, dump, holding_label, is_secret, version
from opd.engine.state import parse as parse_diff_base
from opd.errors import PermanentError
from opd.kube.api import REQUEST_ERRORS, APIError, ConflictError, KubeClient, NotFoundError
from opd.kube.batching import PatchNotJSON
from opd.registry import CHANGING, STATEFUL, Handler, OperatorRegistry, Reason, matches
from opd.resources import Resource, ResourceRef
from opd.settings import OperatorSettings
from opd.typedefs import Body, Diff, EventSink, body_kwargs, level_name, object_logger

REFRESH = "REFRESH"  # a queue item whose body is out of date: read the object afresh first
RETRY = "RETRY"  # a queue item of opd's own: handlers are due again (never taken for an echo)


def _done(record: Mapping[str, Any] | None) -> bool:
    return bool(record and (record.get("success") or record.get("failure")))


class HandlerMetrics:
    """Plain counters, read at scrape time: nothing on the hot path but additions."""

    def __init__(self) -> None:
        self.runs: collections.Counter[tuple[str, str]] = collections.Counter()  # (handler id, outcome)
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)  # id -> total seconds

    def ran(self, handler_id: str, outcome: str, seconds: float) -> None:
        self.runs[(handler_id, outcome)] += 1
        self.seconds[handler_id] += seconds


def _unwritable(exc: APIError) -> bool:
    """Writes the server will refuse every time: too large for etcd, or invalid."""
    return exc.status in (413, 422) or "too large" in exc.message.lower()


def _refused(exc: BaseException) -> bool:
    """Refused by the server for a reason that retrying alone does not fix (400, 403, ...)."""
    return isinstance(exc, APIError) and 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


WRITE_ERRORS: tuple[type[Exception], ...] = (*REQUEST_ERRORS, PatchNotJSON)


def _sendable(handler: Handler, outcome: Outcome, patch: Patch) -> Outcome:
    """A handler whose result or patch has no JSON form (a set, NaN) fails, for good and alone:
    nothing of it is written, and the other handlers' outputs go as usual."""
    for what, value in (("result", outcome.result), ("patch", patch)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            patch.clear()
            error = PermanentError(f"its {what} is not JSON: {brief(exc)}")
            record = {k: v for k, v in outcome.record.items() if k not in ("success", "delayed")}
            return Outcome({**record, "failure": True, "message": brief(error)}, error=error)
    return outcome


class ResourceProcessor:
    """Handles the objects of one resource for one operator (registry)."""

    def __init__(self, *, client: KubeClient, resource: Resource, ref: ResourceRef,
                 registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                 executor: Executor | None, poster: EventPoster | None = None,
                 ownership: Ownership = EVERYTHING, indexes: Indexes | None = None) -> None:
        self.client = client
        self.ownership = ownership
        self.resource = resource
        self.settings = settings
        self.memo = memo
        self.executor = executor
        self.poster = poster
        handlers = registry.for_resource(ref)
        self.by_reason: dict[Reason, list[Handler]] = {r: [h for h in handlers if h.reason == r] for r in Reason}
        self.stateful = any(self.by_reason[r] for r in STATEFUL)
        self.finalizer = settings.persistence.finalizer
        self.prefix = settings.persistence.prefix
        self.secret = is_secret(resource.api_version, resource.kind)
        # Server-side filtering: the label requirements all handlers share. When handlers may hold
        # a finalizer, a second, narrow stream follows the label opd sets while it holds one, so an
        # object that leaves the selector is still found and let go of (after a restart too).
        self.selector = registry.label_selector(ref)
        may_hold = bool(self.by_reason[Reason.TIMER] or self.by_reason[Reason.DAEMON] or any(
            not h.optional for h in self.by_reason[Reason.DELETE]))
        self.holding_selector = holding_label(self.prefix) if self.selector is not None and may_hold else None
        self.storage = Storage(settings.persistence, has_status_subresource="status" in resource.subresources,
                               handler_ids=[h.id for h in handlers], secret=self.secret,
                               fields=[h.field for h in handlers if h.field is not None and h.reason in CHANGING])
        self.applier = Applier(client, resource, settings.persistence, self.storage,
                               holding_label=self.holding_selector is not None, ownership=ownership)
        self.inventory = Inventory()
        self.queue: WorkQueue[str, Item] = WorkQueue(self._process, workers=settings.processing.workers,
                                                     name=str(resource))
        # Indexes: this operator's, fed by a queue of their own, so that handlers waiting for them
        # to be complete never hold up the indexing itself.
        self.indexes = indexes or Indexes([], executor=executor, retries=settings.retries)
        self.indexers = self.by_reason[Reason.INDEX]
        self.index_queue: WorkQueue[str, Item] | None = WorkQueue(
            self._index, workers=settings.processing.workers, name=f"{resource} index") if self.indexers else None
        self.spawner = Spawner(kwargs_for=self._spawned_kwargs, write_outcome=self._write_outcome,
                               executor=executor, retries=settings.retries, stop_timeout=settings.shutdown.timeout)
        self.metrics = HandlerMetrics()
        self._live: dict[str, Body] = {}  # uid -> the body view its running timers and daemons see
        self._memos: dict[str, Any] = {}  # uid -> the object's own memo (Kopf's), until it is gone
        self.reporter = Reporter(resource, poster)

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
        if self.by_reason[Reason.EVENT]:
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
            patch = Patch()  # Kopf's index handlers get one too: written as an event handler's is
            kwargs = self._kwargs(body, reason="index", posting=False, patch=patch)
            if matches(handler, body, kwargs):
                await self.indexes.feed(handler, uid, kwargs, where(body))
                if patch and event_type != "DELETED":
                    await self._write_quietly(handler, body, Plan(patch=dict(patch)))
            else:
                self.indexes.forget([handler], uid)

    async def close(self) -> None:
        # Together, so the shutdown bound holds for both at once.
        timeout = self.settings.shutdown.timeout
        await asyncio.gather(self.queue.close(timeout), self.spawner.stop_all("operator stopping"),
                             *([self.index_queue.close(timeout)] if self.index_queue is not None else []))

    # -- one object -----------------------------------------------------------------------------------------------
    async def _process(self, uid: str, item: Item) -> None:
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
                await self._run_event_handlers(raw_type, raw_body)
        if event_type == REFRESH:
            fresh = await self._read(body)
            if fresh is None:
                event_type = "DELETED"
            else:
                event_type, body = "MODIFIED", fresh
        if event_type == "DELETED":
            await self._deleted(uid, body)
            return
        if not self.stateful:
            self.inventory.tidy(uid)
            return
        memory = self.inventory.recall(uid)
        try:
            if memory.unwritten is not None:  # an outcome computed earlier: write it, do not run handlers again
                plan, memory.unwritten = memory.unwritten, None
                response = await self._apply(uid, memory, plan, body)
                if version(body) <= plan.version:
                    return  # this state is the one that outcome was computed from: done with it
                body = response or body
            if memory.echo is not None and event_type != RETRY and version(body) >= memory.echo:
                echo, memory.echo = memory.echo, None
                if version(body) == echo:  # opd's own write, and its answer held nothing new
                    memory.written = None
                    if memory.due is None:
                        return
                    # Its arrival replaced the planned retry: plan it again.
                    self.queue.put_after(max(0.0, memory.due - time.time()), uid, (RETRY, body))
                    return
            if memory.released or (event_type != RETRY and self._stale(memory, body)):
                return  # opd let go of it (its deletion goes on), or our own write's echo is due
            await self._handle(uid, memory, body)
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
            self._write_failed(uid, memory, item, exc)
        finally:
            self.inventory.tidy(uid)

    async def disown(self, uid: str, reason: str) -> None:
        """Stop everything of one object here (it is another replica's now): its queued state,
        retries, timers and daemons, and what this process remembered of it."""
        self.queue.forget(uid)
        self.inventory.forget(uid)
        await self.spawner.stop(uid, reason)
        self._live.pop(uid, None)
        self._memos.pop(uid, None)

    def known(self) -> list[str]:
        """The uids this processor keeps anything for: queued, remembered, or with timers/daemons."""
        return list({*self.queue.keys(), *self.inventory.uids(), *self.spawner.uids()})

    def busy(self, uid: str) -> bool:
        """Whether the object is being processed right now (a replica hands a shard over only after)."""
        return self.queue.is_active(uid)

    async def _read(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
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

    async def _deleted(self, uid: str, body: dict[str, Any]) -> None:
        """Gone from the cluster (or from the label selector, unheld). Optional delete handlers
        that did not see its deletion coming run now, best effort: there is nowhere to write."""
        memory = self.inventory.peek(uid)
        self.inventory.forget(uid)
        self.queue.forget(uid)
        await self.spawner.stop(uid, "object deleted")
        self._live.pop(uid, None)
        try:
            await self._optional_deleted(memory, body)
        finally:
            self._memos.pop(uid, None)  # after its last handlers: they see the object's memo

    async def _optional_deleted(self, memory: Record | None, body: dict[str, Any]) -> None:
        if memory is not None and memory.optional_deleted:
            return
        optional = [h for h in self.by_reason[Reason.DELETE] if h.optional]
        if not optional:
            return
        meta = body.get("metadata") or {}
        if self.selector is not None and not meta.get("deletionTimestamp") and await self._read(body) is not None:
            return  # it only left the label selector (the event carries its earlier content): not a deletion
        stamp = meta.get("deletionTimestamp") or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        gone = {**body, "metadata": {**meta, "deletionTimestamp": stamp}}
        kwargs = self._kwargs(gone, reason=str(Reason.DELETE), patch=Patch())
        for handler in optional:
            if matches(handler, gone, kwargs):
                outcome = await self._execute(handler, {"started": time.time()}, kwargs)
                self.reporter.outcome(handler, gone, outcome)

    def _stale(self, memory: Record, body: Mapping[str, Any]) -> bool:
        """An event older than our own last write of this object (its echo is still on the way)."""
        written = memory.written
        if written is None or not self.settings.processing.skip_stale_events:
            return False
        if version(body) < written:
            return True
        memory.written = None
        return False

    def _kwargs(self, body: dict[str, Any], *, posting: bool = True, **extra: Any) -> dict[str, Any]:
        """A handler's kwargs for one object: ``body`` and its parts as Kopf's read-only views of it
        (one shallow copy per level, made once per event), a stdlib logger naming the object (its
        records also posted as Events unless ``posting`` is False, as Kopf's event and index
        handlers' are not), and the operator's own."""
        return {
            **body_kwargs(body),
            "logger": object_logger(body, resource=self.resource, events=self._events(body) if posting else None),
            "memo": self._memo(body), "resource": self.resource, "settings": self.settings,
            "api": self.client.handler_client(),
            **extra,
            **self.indexes.kwargs(),  # an index wins over a framework kwarg of its name (as in Kopf)
        }

    def _memo(self, body: Mapping[str, Any]) -> Any:
        """Kopf's per-object memo: a shallow copy of the operator's, made when the object is first
        seen and kept until it is gone (what startup handlers put in it is shared; what a handler
        sets on it is this object's)."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return self.memo
        memo = self._memos.get(uid)
        if memo is None:
            memo = self._memos[uid] = copy.copy(self.memo)
        return memo

    def _events(self, body: Mapping[str, Any]) -> EventSink | None:
        """Where a handler's log records about ``body`` go as Events (reason ``Logging``, as Kopf's):
        ``settings.posting`` decides (``loggers``, off by default as in Kopf; ``enabled``, ``level``)."""
        poster, posting = self.poster, self.settings.posting
        if poster is None:
            return None

        def post(levelno: int, message: str) -> None:
            if posting.loggers:
                poster.post(body, "Normal" if levelno <= logging.INFO else "Warning", "Logging", message,
                            level=level_name(levelno))

        return post

    def _spawned_kwargs(self, handler: Handler, body: dict[str, Any], stopped: Stopped, patch: Patch
                        ) -> dict[str, Any]:
        # Kopf's daemons and timers see live views: the object's newest state while they run.
        uid = (body.get("metadata") or {}).get("uid")
        live = self._live.get(uid) if uid else None
        if live is None:
            live = Body(body)
            if uid:
                self._live[uid] = live
        return self._kwargs(live, reason=str(handler.reason), patch=patch, stopped=stopped)

    def _keep_live(self, uid: str, body: dict[str, Any]) -> None:
        """The views running timers and daemons of ``uid`` hold: the newest state, or let go."""
        if not self.spawner.running(uid):
            self._live.pop(uid, None)
        elif (live := self._live.get(uid)) is not None:
            live._replace_with(body)

    def _refresh(self, kwargs: dict[str, Any], body: dict[str, Any]) -> None:
        current = kwargs.get("body")
        if current is None or current.get("metadata") is not body.get("metadata"):  # a newer read of it
            kwargs.update(body_kwargs(body))

    async def _execute(self, handler: Handler, record: dict[str, Any], kwargs: dict[str, Any]) -> Outcome:
        began = time.perf_counter()
        outcome = await execute(handler, record, kwargs, executor=self.executor, retries=self.settings.retries)
        self.metrics.ran(handler.id, "success" if outcome.error is None else "error", time.perf_counter() - began)
        return outcome

    async def _run_event_handlers(self, event_type: str, body: dict[str, Any]) -> None:
        called = set()  # one function under two decorators of one id: called once per event, as Kopf's
        for handler in self.by_reason[Reason.EVENT]:
            if (handler.fn, handler.id) in called:
                continue
            patch = Patch()
            kwargs = self._kwargs(body, event={"type": event_type, "object": body}, type=event_type,
                                  patch=patch, reason="event", posting=False)
            if not matches(handler, body, kwargs):
                continue
            called.add((handler.fn, handler.id))
            outcome = _sendable(handler, await self._execute(handler, {"started": time.time()}, kwargs), patch)
            if outcome.error is not None:
                logger.opt(exception=outcome.error).error(
                    f"opd: event handler {handler.id!r} failed for {where(body)}: {brief(outcome.error)}")
            if patch and event_type != "DELETED":
                await self._write_quietly(handler, body, Plan(patch=dict(patch)))

    async def _write_outcome(self, handler: Handler, body: dict[str, Any], outcome: Outcome, patch: Patch) -> None:
        """A timer's or daemon's try: reported, its result and patch written."""
        outcome = _sendable(handler, outcome, patch)
        self.reporter.outcome(handler, body, outcome)
        plan = Plan(patch=dict(patch))
        if outcome.success and outcome.error is None and outcome.result is not None:
            plan.results[handler.id] = outcome.result
        if not plan.empty:
            await self._write_quietly(handler, body, plan)

    async def _write_quietly(self, handler: Handler, body: Mapping[str, Any], plan: Plan) -> None:
        """Outputs of handlers that keep no progress (timers, daemons, event handlers): a failed
        write is said, not retried — the handler runs again and writes again."""
        try:
            response = await self.applier.apply(plan, body)
        except Fenced as exc:
            say_dropped(f"opd: {exc}: the output of {handler.id!r} is dropped")
            return
        except WRITE_ERRORS as exc:
            logger.warning(f"opd: writing the output of {handler.id!r} for {where(body)} failed: {brief(exc)}")
            return
        if response is not None:
            self.inventory.recall(body["metadata"]["uid"]).written = version(response)

    async def _handle(self, uid: str, memory: Record, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        new_essence = self.storage.essence(body)
        current = compact(dump(new_essence), self.settings.persistence.max_diff_base)
        state = self.storage.read(body)
        first_seen = not memory.seen
        if self.by_reason[Reason.RESUME]:
            memory.seen = True
        # A digest (for a huge object) says that it changed, not how: old is None then. Unchanged (our
        # own write's echo, mostly), old is new: no need to parse it.
        updating = state.diff_base is not None and state.diff_base != current
        if not updating:
            old_essence = new_essence if state.diff_base is not None else None
        else:
            old_essence = parse_diff_base(state.diff_base)
        patch = Patch()
        # Kopf's: old is the essence last handled (None for a new object), the diff from it (for a
        # new object: everything added), also for resume and delete handlers. A Secret's changes are
        # measured on digests (all its diff-base keeps), and its handlers see the values in new and
        # on the diff's new side (old can only be digests).
        seen = self.storage.essence(body, shown=True) if self.secret else new_essence
        changes = diff(old_essence, new_essence) if updating or state.diff_base is None else ()
        kwargs = self._kwargs(body, patch=patch, old=old_essence, new=seen,
                              diff=Diff(shown(changes, seen) if self.secret else changes))
        change = causes.detect(body=body, by_reason=self.by_reason, kwargs=kwargs, old=old_essence,
                               new=new_essence, diff_base=state.diff_base, current=current, first_seen=first_seen,
                               has_progress=bool(state.progress), finalizer=self.finalizer, seen=seen)
        deleting = bool(meta.get("deletionTimestamp"))
        holding = self.finalizer in (meta.get("finalizers") or ())
        if not deleting:
            labelled = holding_label(self.prefix) in (meta.get("labels") or {})
            wanted = change.wants_finalizer
            if wanted != holding or (holding and self.applier.label and not labelled):
                # Before any handler runs: a deletion from now on waits for opd (or no longer does).
                body = await self._apply(uid, memory, Plan(finalizer=wanted), body) or body
            await self.spawner.ensure(uid, body, change.spawning)
            self._keep_live(uid, body)
        elif self.spawner.running(uid):
            await self.spawner.stop(uid, "object deleted")
            self._live.pop(uid, None)
        reason = change.reason
        if reason is None:
            return
        for values in (kwargs, *(own for _, own in change.handlers)):
            self._refresh(values, body)  # the finalizer's write moved the object on

        if not change.handlers and not state.progress and reason != Reason.DELETE and not (
                self.by_reason[Reason.UPDATE] or self.by_reason[Reason.FIELD]):
            return  # nobody's business: no diff-base to keep when no update could ever need it

        progress: dict[str, dict[str, Any] | None] = {}
        results: dict[str, Any] = {}
        dues = []
        for handler, own in change.handlers:
            due = await self._run_handler(handler, own, state, progress, results, body, patch)
            if due is not None:
                dues.append(due)
        pending = bool(dues)
        plan = Plan(results=results, patch=dict(patch), old=state, marks=True, version=version(body))
        if pending or (reason == Reason.DELETE and not holding):
            plan.progress = progress  # more to do; or optional delete handlers, whose marks say they ran
        elif reason == Reason.DELETE:
            # The marks stay until opd's finalizer is gone: a conflict on that write must not
            # make the delete handlers run again.
            plan.progress = progress
            plan.finalizer = False
        else:
            plan.progress = {hid: None for hid in state.progress}
            if reason in (Reason.CREATE, Reason.UPDATE) or state.diff_base is None:
                plan.diff_base = current
        if reason == Reason.DELETE and not holding:
            memory.optional_deleted = True
        response = await self._apply(uid, memory, plan, body)
        if response is not None and bool(response["metadata"].get("deletionTimestamp")) == deleting and compact(
                dump(self.storage.essence(response)), self.settings.persistence.max_diff_base
        ) == current:
            # Its answer holds nothing opd has not handled (a change by anybody else before opd's write
            # would be in it): the echo of this write can be skipped, which saves processing it again.
            memory.echo = version(response)
        if pending:
            memory.due = min(dues)
            self.queue.put_after(max(0.0, memory.due - time.time()), uid, (RETRY, response or body))
        else:
            memory.due = None

    async def _run_handler(self, handler: Handler, own: dict[str, Any], state: State,
                           progress: dict[str, dict[str, Any] | None], results: dict[str, Any],
                           body: dict[str, Any], patch: Patch) -> float | None:
        """Run one change handler and the sub-handlers it declares, unless done or not due yet;
        record their progress and results. None when done, else when it is due again (a time)."""
        now = time.time()
        record = progress.get(handler.id, state.progress.get(handler.id))
        if _done(record):
            return None
        if handler not in self.by_reason[handler.reason] and not matches(handler, body, own):
            return None  # a sub-handler whose filters do not select the object: skipped, as Kopf's
        if record and float(record.get("delayed") or 0) > now:
            return float(record["delayed"])
        record = {**(record or {}), "started": (record or {}).get("started", now)}
        mine = Patch()  # each handler its own: a bad one is dropped alone
        kwargs = {**own, "patch": mine}
        children = subhandlers.Children(handler)
        ran_now: set[str] = set()

        async def run_now(batch: list[Handler]) -> float | None:  # opd.execute() inside the handler
            ran_now.update(h.id for h in batch)
            later = [d for h in batch if (d := await self._run_handler(h, own, state, progress, results, body,
                                                                        patch)) is not None]
            return max(0.0, min(later) - time.time()) if later else None

        children.run_now = run_now
        token = subhandlers.current.set(children)
        try:
            outcome = _sendable(handler, await self._execute(handler, record, kwargs), mine)
        finally:
            subhandlers.current.reset(token)
        merge(patch, mine)
        if outcome.success and outcome.error is None:
            later = [d for h in children.declared if h.id not in ran_now
                     and (d := await self._run_handler(h, own, state, progress, results, body, patch)) is not None]
            if later:
                # Not done until its sub-handlers are: it runs again when the first of them is due
                # (to declare them again), which is not a retry of its own.
                progress[handler.id] = {**{k: v for k, v in record.items() if k != "success"},
                                        "delayed": min(later)}
                return min(later)
        progress[handler.id] = outcome.record
        self.reporter.outcome(handler, body, outcome)
        if outcome.success and outcome.error is None and outcome.result is not None:
            results[handler.id] = outcome.result
        return None if _done(outcome.record) else float(outcome.record.get("delayed") or now)

    async def _apply(self, uid: str, memory: Record, plan: Plan, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Write a plan; until it is written, the inventory keeps it (never recomputed: its handlers ran)."""
        if plan.empty:
            return None
        if plan.marks or plan.results:
            memory.unwritten = plan
        response = await self.applier.apply(plan, body)
        memory.unwritten = None
        if response is not None:
            memory.written = version(response)
        if plan.finalizer is False and body["metadata"].get("deletionTimestamp"):
            memory.released = True  # its last events before DELETED must not run delete handlers again
        return response

    def _write_failed(self, uid: str, memory: Record, item: Item, exc: Exception) -> None:
        """A write failed: retried with backoff, said once per object and kind of failure."""
        body = item[1]
        if isinstance(exc, APIError) and _unwritable(exc):
            memory.unwritten = None
            self.reporter.unwritable(body, exc)
            return
        refused = _refused(exc)
        kind = f"{type(exc).__name__}:{getattr(exc, 'status', '')}"
        if memory.retry is None:
            # Refusals (403: missing RBAC; 400) wait long; a connection that failed comes back soon.
            memory.retry = Backoff(initial=2.0, maximum=300.0, jitter=0.1) if refused else Backoff(
                initial=self.settings.watching.backoff_initial * 2, maximum=8.0, jitter=0.1)
        delay = getattr(exc, "retry_after", None) or memory.retry.next()
        first, memory.failing = memory.failing != kind, kind
        self.reporter.write_failed(body, exc, refused=refused, delay=delay, first=first,
                                   maximum=memory.retry.maximum)
        self.queue.put_after(delay, uid, item)
