"""Handling one object's state: its change (the cause, the handlers and sub-handlers it calls for,
their outcome as one plan), its deletion, and the event handlers that see every event.

The walk of one change: recall what this process remembers of the object (``inventory``),
compute the cause once (``causes``), keep timers and daemons in step (``spawning``), run
the handlers (``execution``), and write results, markers, the handlers' patch and the
finalizer as one plan (``applying``). Handlers' kwargs come from ``arguments``.

opd writes nothing to an object that no handler of this operator selects: no diff-base,
no marker, no finalizer — except to let go of its own finalizer.
"""

from __future__ import annotations

import collections
import datetime
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from loguru import logger

from opd import subhandlers
from opd.engine import arguments, causes
from opd.engine.applying import Plan, Writer, absorb, sendable
from opd.engine.diffs import Patch, diff, shown
from opd.engine.execution import Outcome, brief, execute
from opd.engine.inventory import RETRY, Inventory, Record
from opd.engine.invocation import NotStarted
from opd.engine.ownership import EVERYTHING, Ownership
from opd.engine.queueing import WorkQueue
from opd.engine.reporting import Reporter, where
from opd.engine.spawning import Spawner
from opd.engine.state import State, Storage, compact, dump, holding_label, version
from opd.engine.state import parse as parse_diff_base
from opd.registry import Handler, Reason, matches, result_key
from opd.settings import OperatorSettings
from opd.typedefs import Diff

Read = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any] | None]]  # the object as it is now; None: gone


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


class Handling:
    """Runs one resource's handlers for one operator, an object at a time (the queue's workers)."""

    def __init__(self, *, by_reason: Mapping[Reason, list[Handler]], settings: OperatorSettings, storage: Storage,
                 secret: bool, filtered: bool, label: bool, objects: arguments.Objects, inventory: Inventory,
                 queue: WorkQueue[str, Any], spawner: Spawner, writer: Writer, reporter: Reporter,
                 executor: Executor | None, read: Read, ownership: Ownership = EVERYTHING) -> None:
        self.by_reason = by_reason
        self.settings = settings
        self.finalizer = settings.persistence.finalizer
        self.prefix = settings.persistence.prefix
        self.storage = storage
        self.secret = secret
        self.filtered = filtered  # a label selector filters the stream: leaving it is no deletion
        self.label = label  # opd labels the objects it holds a finalizer on
        self.objects = objects
        self.inventory = inventory
        self.queue = queue
        self.spawner = spawner
        self.writer = writer
        self.reporter = reporter
        self.executor = executor
        self.read = read
        self.metrics = HandlerMetrics()
        self.ownership = ownership
        # Objects whose step has started a handler: what a hand-over waits for (opd.ha). One whose
        # sync handler still waits for a thread of the executor is not in it: with slow handlers and
        # few threads that wait is long, and counting it made hand-overs wait for the whole backlog.
        self.started: set[str] = set()

    def _start(self, uid: str) -> bool:
        """Asked when a handler of the object really starts (for a sync one: in the executor's thread).
        The step's first handler starts only if the object is still this replica's, else none of the
        step's run (its work is dropped, as a queued object's is); once one has, the others of the step
        follow, and a hand-over waits for the step. Marked before asked: a hand-over marks its shard
        draining before it reads what has started (``opd.ha.grants.View.drain``), so a handler that
        starts is always one the hand-over waits for."""
        if uid in self.started:
            return True
        self.started.add(uid)
        if self.ownership.owns(uid):
            return True
        self.started.discard(uid)
        return False

    async def execute(self, uid: str, handler: Handler, record: dict[str, Any], kwargs: dict[str, Any]) -> Outcome:
        began = time.perf_counter()
        outcome = await execute(handler, record, kwargs, executor=self.executor, retries=self.settings.retries,
                                start=functools.partial(self._start, uid))
        self.metrics.ran(handler.id, "success" if outcome.error is None else "error", time.perf_counter() - began)
        return outcome

    # -- events ---------------------------------------------------------------------------------------------------
    async def events(self, event_type: str, body: dict[str, Any]) -> None:
        """Event handlers: each event as it came, in order."""
        called = set()  # one function under two decorators of one id: called once per event, as Kopf's
        for handler in self.by_reason[Reason.EVENT]:
            if (handler.fn, handler.id) in called:
                continue
            patch = Patch()
            kwargs = self.objects.event(body, event_type=event_type, patch=patch)
            if not matches(handler, body, kwargs):
                continue
            called.add((handler.fn, handler.id))
            outcome = sendable(handler, await self.execute(body["metadata"]["uid"], handler, {"started": time.time()},
                                                           kwargs), patch)
            if outcome.error is not None:
                logger.opt(exception=outcome.error).error(
                    f"opd: event handler {handler.id!r} failed for {where(body)}: {brief(outcome.error)}")
            if patch and event_type != "DELETED":
                await self.writer.quietly(handler, body, Plan(patch=patch, checked=True))

    # -- a change -------------------------------------------------------------------------------------------------
    async def change(self, uid: str, memory: Record, body: dict[str, Any]) -> None:
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
        kwargs = self.objects.change(body, patch=patch, old=old_essence, new=seen,
                                     diff=Diff(shown(changes, seen) if self.secret else changes))
        change = causes.detect(body=body, by_reason=self.by_reason, kwargs=kwargs, old=old_essence,
                               new=new_essence, diff_base=state.diff_base, current=current, first_seen=first_seen,
                               has_progress=bool(state.progress), finalizer=self.finalizer, seen=seen)
        deleting = bool(meta.get("deletionTimestamp"))
        holding = self.finalizer in (meta.get("finalizers") or ())
        if not deleting:
            labelled = holding_label(self.prefix) in (meta.get("labels") or {})
            wanted = change.wants_finalizer
            if wanted != holding or (holding and self.label and not labelled):
                # Before any handler runs: a deletion from now on waits for opd (or no longer does).
                body = await self.writer.plan(memory, Plan(finalizer=wanted), body) or body
            if change.spawning and not self.ownership.owns(uid):
                # Handed over while this step waited (to write the finalizer): no timer or daemon starts.
                raise NotStarted("no longer this replica's")
            await self.spawner.ensure(uid, body, change.spawning)
            self.objects.keep_live(uid, body, running=bool(self.spawner.running(uid)))
        elif self.spawner.running(uid):
            await self.spawner.stop(uid, "object deleted")
            self.objects.stopped(uid)
        reason = change.reason
        if reason is None:
            return
        for values in (kwargs, *(own for _, own in change.handlers)):
            arguments.refreshed(values, body)  # the finalizer's write moved the object on

        if not change.handlers and not state.progress and reason != Reason.DELETE and not (
                self.by_reason[Reason.UPDATE] or self.by_reason[Reason.FIELD]):
            return  # nobody's business: no diff-base to keep when no update could ever need it

        progress: dict[str, dict[str, Any] | None] = {}
        results: dict[str, Any] = {}
        dues = []
        for handler, own in change.handlers:
            due = await self._run(handler, own, state, progress, results, body, patch)
            if due is not None:
                dues.append(due)
        pending = bool(dues)
        plan = Plan(results=results, patch=patch, old=state, marks=True, version=version(body), checked=True)
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
        response = await self.writer.plan(memory, plan, body)
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

    async def _run(self, handler: Handler, own: dict[str, Any], state: State,
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
        kwargs = arguments.own_patch(own, mine)
        children = subhandlers.Children(handler)
        ran_now: set[str] = set()

        async def run_now(batch: list[Handler]) -> float | None:  # opd.execute() inside the handler
            ran_now.update(h.id for h in batch)
            later = [d for h in batch if (d := await self._run(h, own, state, progress, results, body,
                                                               patch)) is not None]
            return max(0.0, min(later) - time.time()) if later else None

        children.run_now = run_now
        token = subhandlers.current.set(children)
        try:
            outcome = sendable(handler, await self.execute(body["metadata"]["uid"], handler, record, kwargs), mine)
        finally:
            subhandlers.current.reset(token)
        absorb(patch, mine)
        if outcome.success and outcome.error is None:
            later = [d for h in children.declared if h.id not in ran_now
                     and (d := await self._run(h, own, state, progress, results, body, patch)) is not None]
            if later:
                # Not done until its sub-handlers are: it runs again when the first of them is due
                # (to declare them again), which is not a retry of its own.
                progress[handler.id] = {**{k: v for k, v in record.items() if k != "success"},
                                        "delayed": min(later)}
                return min(later)
        progress[handler.id] = outcome.record
        self.reporter.outcome(handler, body, outcome)
        if outcome.success and outcome.error is None and outcome.result is not None:
            results[result_key(handler)] = outcome.result
        return None if _done(outcome.record) else float(outcome.record.get("delayed") or now)

    # -- a deletion -----------------------------------------------------------------------------------------------
    async def deleted(self, uid: str, body: dict[str, Any]) -> None:
        """Gone from the cluster (or from the label selector, unheld). Optional delete handlers
        that did not see its deletion coming run now, best effort: there is nowhere to write."""
        memory = self.inventory.peek(uid)
        self.inventory.forget(uid)
        self.queue.forget(uid)
        await self.spawner.stop(uid, "object deleted")
        self.objects.stopped(uid)
        try:
            await self._optional_deleted(memory, body)
        finally:
            self.objects.forget(uid)  # after its last handlers: they see the object's memo

    async def _optional_deleted(self, memory: Record | None, body: dict[str, Any]) -> None:
        if memory is not None and memory.optional_deleted:
            return
        optional = [h for h in self.by_reason[Reason.DELETE] if h.optional]
        if not optional:
            return
        meta = body.get("metadata") or {}
        if self.filtered and not meta.get("deletionTimestamp") and await self.read(body) is not None:
            return  # it only left the label selector (the event carries its earlier content): not a deletion
        stamp = meta.get("deletionTimestamp") or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        gone = {**body, "metadata": {**meta, "deletionTimestamp": stamp}}
        kwargs = self.objects.deleted(gone, patch=Patch(), reason=str(Reason.DELETE))
        for handler in optional:
            if matches(handler, gone, kwargs):
                outcome = await self.execute(gone["metadata"]["uid"], handler, {"started": time.time()}, kwargs)
                self.reporter.outcome(handler, gone, outcome)
