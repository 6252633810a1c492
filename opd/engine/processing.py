"""Processing one object's change: which cause, which handlers, run them, persist.

Per processed change: at most one PATCH to ``/status`` (handler results, and
the markers when they live in status) and then at most one PATCH to the body
(the handlers' own patches, markers in annotations, finalizers). Results are
always written before the markers that say their handlers ran.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from loguru import logger

from opd.engine import causes
from opd.engine.daemons import Spawner, Stopped
from opd.engine.diffs import Patch, diff
from opd.engine.execution import execute
from opd.engine.invocation import invoke
from opd.engine.posting import EventPoster
from opd.engine.queueing import WorkQueue
from opd.engine.state import State, Storage, Writes, compact, dump, essence, is_digest
from opd.errors import HandlerError
from opd.kube.api import REQUEST_ERRORS, APIError, ConflictError, KubeClient, NotFoundError
from opd.registry import Handler, OperatorRegistry, Reason, matches
from opd.resources import Resource, ResourceRef
from opd.settings import OperatorSettings

Item = tuple[str, dict[str, Any]]  # (event type, body)
# What _apply() needs to write one processed change: body, writes, diff-base, old state, progress.
_Outcome = tuple[dict[str, Any], Writes, "str | None", State, "dict[str, dict[str, Any] | None]"]


def _done(record: Mapping[str, Any] | None) -> bool:
    return bool(record and (record.get("success") or record.get("failure")))


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


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


def _version(body: Mapping[str, Any]) -> int:
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return -1


def where(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))


class ResourceProcessor:
    """Handles the objects of one resource for one operator (registry)."""

    def __init__(self, *, client: KubeClient, resource: Resource, ref: ResourceRef,
                 registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                 executor: Executor | None, poster: EventPoster | None = None) -> None:
        self.client = client
        self.resource = resource
        self.settings = settings
        self.memo = memo
        self.executor = executor
        self.poster = poster
        handlers = registry.for_resource(ref)
        self.by_reason: dict[Reason, list[Handler]] = {r: [h for h in handlers if h.reason == r] for r in Reason}
        self.stateful = any(self.by_reason[r] for r in Reason if r != Reason.EVENT)
        self.finalizer = settings.persistence.finalizer
        self.storage = Storage(settings.persistence, has_status_subresource="status" in resource.subresources,
                               handler_ids=[h.id for h in handlers])
        self.queue: WorkQueue[str, Item] = WorkQueue(self._process, workers=settings.processing.workers,
                                                     name=str(resource))
        self.spawner = Spawner(kwargs_for=self._spawned_kwargs, write_result=self._write_result,
                               executor=executor, where=where, stop_timeout=settings.shutdown.timeout)
        self._written: dict[str, int] = {}  # uid -> resourceVersion of our last write
        self._seen: set[str] = set()  # uids seen by this process (for resume handlers)
        self._unwritten: dict[str, _Outcome] = {}  # outcomes whose write failed, to retry as they are
        self._events: dict[str, list[Item]] = {}  # raw events not yet shown to event handlers
        # uids whose deletion opd released (its finalizer removed): their last events before
        # DELETED carry an old resourceVersion and must not run delete handlers again.
        self._released: set[str] = set()
        self.metrics = HandlerMetrics()

    def deliver(self, event_type: str, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        if self.by_reason[Reason.EVENT]:
            # Event handlers see every event, in order; the rest works on the newest state only.
            self._events.setdefault(uid, []).append((event_type, body))
        self.queue.put(uid, (event_type, body))

    async def close(self) -> None:
        # Together, so the shutdown bound holds for both at once.
        await asyncio.gather(self.queue.close(self.settings.shutdown.timeout),
                             self.spawner.stop_all("operator stopping"))

    # -- one object -----------------------------------------------------------
    async def _process(self, uid: str, item: Item) -> None:
        event_type, body = item
        for raw_type, raw_body in self._events.pop(uid, ()):
            await self._run_event_handlers(raw_type, raw_body)
        if event_type == "DELETED":
            self._released.discard(uid)
            self._written.pop(uid, None)
            self._unwritten.pop(uid, None)
            self._seen.discard(uid)
            self.queue.forget(uid)
            await self.spawner.stop(uid, "object deleted")
            return
        if not self.stateful:
            return
        try:
            unwritten = self._unwritten.pop(uid, None)
            if unwritten is not None:  # an outcome computed earlier: write it, do not run handlers again
                try:
                    await self._apply(uid, *unwritten)
                except (NotFoundError, ConflictError):
                    raise
                except REQUEST_ERRORS:
                    self._unwritten[uid] = unwritten
                    raise
                if _version(body) <= _version(unwritten[0]):
                    return  # this state is the one that outcome was computed from: done with it
            if uid in self._released or self._stale(uid, body):
                return  # opd let go of it (its deletion goes on), or our own write's echo is due
            await self._handle(uid, body)
        except (NotFoundError, ConflictError):
            pass  # gone, or changed under us: the watch brings the newer state
        except REQUEST_ERRORS as exc:
            if isinstance(exc, APIError) and _unwritable(exc):
                self._unwritten.pop(uid, None)
                logger.error(f"opd: {self.resource} {where(body)}: the outcome cannot be written, not retried: {exc}")
                if self.poster is not None:
                    self.poster.post(body, "Warning", "Unwritable", f"opd cannot write its outcome: {exc.message}",
                                     level="error")
                return
            delay = getattr(exc, "retry_after", None) or self.settings.watching.backoff_initial * 4
            logger.warning(f"opd: {self.resource} {where(body)}: writing the outcome failed ({exc}); "
                           f"retrying in {delay:.0f}s")
            self.queue.put_after(delay, uid, item)

    def _stale(self, uid: str, body: Mapping[str, Any]) -> bool:
        """An event older than our own last write of this object (its echo is still on the way)."""
        written = self._written.get(uid)
        if written is None or not self.settings.processing.skip_stale_events:
            return False
        try:
            rv = int(body["metadata"]["resourceVersion"])
        except (KeyError, ValueError):
            return False
        if rv < written:
            return True
        del self._written[uid]
        return False

    def _kwargs(self, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        return {
            "body": body, "spec": body.get("spec") or {}, "meta": meta, "status": body.get("status") or {},
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {},
            "logger": logger.bind(object=where(body), resource=str(self.resource)),
            "memo": self.memo, "resource": self.resource, "settings": self.settings,
            "api": self.client.handler_client(),
            **extra,
        }

    def _spawned_kwargs(self, handler: Handler, body: dict[str, Any], stopped: Stopped) -> dict[str, Any]:
        return self._kwargs(body, reason=str(handler.reason), patch=Patch(), stopped=stopped)

    async def _run_event_handlers(self, event_type: str, body: dict[str, Any]) -> None:
        kwargs = self._kwargs(body, event={"type": event_type, "object": body}, type=event_type,
                              patch=Patch(), reason="event")
        for handler in self.by_reason[Reason.EVENT]:
            if not matches(handler, body, kwargs):
                continue
            try:
                await invoke(handler, kwargs, executor=self.executor)
            except Exception as exc:
                logger.opt(exception=exc).error(f"opd: event handler {handler.id!r} failed for {where(body)}: {exc}")

    async def _handle(self, uid: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        new_essence = essence(body, self.settings.persistence.prefix)
        current = compact(dump(new_essence), self.settings.persistence.max_diff_base)
        state = self.storage.read(body)
        first_seen = uid not in self._seen
        if self.by_reason[Reason.RESUME]:
            self._seen.add(uid)
        reason = causes.detect(meta=meta, diff_base=state.diff_base, current=current, first_seen=first_seen,
                               has_progress=bool(state.progress), finalizer=self.finalizer, by_reason=self.by_reason)
        deleting = bool(meta.get("deletionTimestamp"))
        plain = self._kwargs(body)

        finalizers = list(meta.get("finalizers") or ())
        if not deleting:
            wanted = causes.needs_finalizer(self.by_reason, body, plain)
            if wanted != (self.finalizer in finalizers):
                # Before any handler runs: a deletion from now on waits for opd (or no longer does).
                changed = [*finalizers, self.finalizer] if wanted else [f for f in finalizers if f != self.finalizer]
                body = await self._write_body(uid, body, {"metadata": {
                    "finalizers": changed, "resourceVersion": meta["resourceVersion"]}})
                meta = body["metadata"]
                finalizers = changed
            await self.spawner.ensure(uid, body, causes.spawning(self.by_reason, body, plain))
        elif self.spawner.running(uid):
            await self.spawner.stop(uid, "object deleted")
        if reason is None:
            return

        # A digest (for a huge object) says that it changed, not how: old is None then.
        old_essence = json.loads(state.diff_base) if (
            reason == Reason.UPDATE and state.diff_base and not is_digest(state.diff_base)) else None
        patch = Patch()
        kwargs = self._kwargs(body, reason=str(reason), patch=patch, old=old_essence, new=new_essence,
                              diff=diff(old_essence, new_essence) if reason == Reason.UPDATE else ())
        selected = causes.select(reason, self.by_reason, body, kwargs, old_essence, new_essence)
        if not selected and not state.progress and reason != Reason.DELETE and not (
                self.by_reason[Reason.UPDATE] or self.by_reason[Reason.FIELD]):
            return  # nobody's business: no diff-base to keep when no update could ever need it

        now = time.time()
        progress: dict[str, dict[str, Any] | None] = {}
        results: dict[str, Any] = {}
        for handler, own in selected:
            record = state.progress.get(handler.id)
            if _done(record) or (record and float(record.get("delayed") or 0) > now):
                continue
            record = {**(record or {}), "started": (record or {}).get("started", now)}
            began = time.perf_counter()
            outcome = await execute(handler, record, own, executor=self.executor, retries=self.settings.retries)
            self.metrics.ran(handler.id, "success" if outcome.error is None else "error", time.perf_counter() - began)
            progress[handler.id] = outcome.record
            self._report(handler, body, outcome.record, outcome.error, outcome.delay)
            if outcome.success and outcome.error is None:
                results[handler.id] = outcome.result

        merged = {**state.progress, **progress}
        ids = {h.id for h, _ in selected}
        pending = [h for h, _ in selected if not _done(merged.get(h.id))]
        writes = Writes()
        for hid, result in results.items():
            if result is not None:
                writes.set_result(hid, result, self.settings.persistence.results_field)
        own_status = patch.pop("status", None)
        if own_status:
            _merge(writes.status.setdefault("status", {}), own_status)
        _merge(writes.body, patch)

        diff_base: str | None = None
        if pending:
            for hid in merged.keys() - ids:
                progress.setdefault(hid, merged[hid])
        else:
            progress = {hid: None for hid in state.progress}
            if reason in (Reason.CREATE, Reason.UPDATE) or state.diff_base is None:
                diff_base = current
            if reason == Reason.DELETE:
                kept = [f for f in finalizers if f != self.finalizer]
                _merge(writes.body, {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}})
        self.storage.write(writes, old=state, diff_base=diff_base, progress=progress)
        outcome_: _Outcome = (body, writes, diff_base, state, progress)
        try:
            await self._apply(uid, *outcome_)
        except (NotFoundError, ConflictError):
            raise
        except REQUEST_ERRORS:
            self._unwritten[uid] = outcome_
            raise

        if pending:
            delays = [float((merged.get(h.id) or {}).get("delayed") or now) for h in pending]
            self.queue.put_after(max(0.0, min(delays) - time.time()), uid, ("MODIFIED", body))

    def _report(self, handler: Handler, body: Mapping[str, Any], record: Mapping[str, Any],
                error: BaseException | None, delay: float | None) -> None:
        """One log line (with namespace/name) and one Kubernetes Event per outcome."""
        log = logger.bind(object=where(body), resource=str(self.resource))
        name = f"handler {handler.id!r} for {where(body)}"
        if error is None:
            log.debug(f"opd: {name} succeeded")
            if self.poster is not None:
                self.poster.post(body, "Normal", "Handled", f"Handler {handler.id!r} succeeded.", level="info")
            return
        trace = error if not isinstance(error, HandlerError | TimeoutError) else None
        if delay is not None:
            # An unexpected exception is an error even when retried; a TemporaryError is the plan.
            log.opt(exception=trace).log("ERROR" if trace else "WARNING",
                                         f"opd: {name} failed: {error!r}; retrying in {delay:g}s")
            kind, reason, level = "Warning", "Retrying", "warning"
        elif record.get("failure"):
            log.opt(exception=trace).error(f"opd: {name} failed permanently: {error!r}")
            kind, reason, level = "Warning", "Failed", "error"
        else:
            log.warning(f"opd: {name} failed (ignored): {error!r}")
            kind, reason, level = "Normal", "Ignored", "warning"
        if self.poster is not None:
            self.poster.post(body, kind, reason, f"Handler {handler.id!r}: {error}", level=level)

    async def _write_result(self, handler: Handler, body: Mapping[str, Any], result: Any) -> None:
        """A timer's or daemon's return value, stored like any handler's result."""
        meta = body["metadata"]
        writes = Writes()
        writes.set_result(handler.id, result, self.settings.persistence.results_field)
        patch = writes.status
        sub = "status" if "status" in self.resource.subresources else None
        try:
            await self.client.patch(self.resource.path(meta.get("namespace"), meta["name"], sub), patch)
        except REQUEST_ERRORS as exc:
            logger.warning(f"opd: storing the result of {handler.id!r} for {where(body)} failed: {exc}")

    async def _apply(self, uid: str, body: Mapping[str, Any], writes: Writes, diff_base: str | None,
                     old: State, progress: Mapping[str, dict[str, Any] | None]) -> None:
        meta = body["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        new_finalizers = writes.body.get("metadata", {}).get("finalizers")
        releasing = bool(meta.get("deletionTimestamp")) and new_finalizers is not None and (
            self.finalizer not in new_finalizers)
        if "status" not in self.resource.subresources:
            merged = _merge(writes.body, writes.status)
            if merged:
                await self._write_body(uid, body, merged)
            if releasing:
                self._released.add(uid)
            return
        if writes.status:
            path = self.resource.path(namespace, name, "status")
            response = await self.client.patch(path, writes.status)
            self._remember(uid, response)
            precondition = writes.body.get("metadata", {})
            if "resourceVersion" in precondition:  # the status write moved it on: follow, not conflict
                precondition["resourceVersion"] = response["metadata"]["resourceVersion"]
            if not self.storage.confirms(response, diff_base):
                logger.warning(f"opd: {self.resource} drops unknown status fields (structural schema): "
                               f"keeping opd's markers in annotations instead")
                self.storage.fall_back_to_annotations()
                self.storage.write(writes, old=State(None, {}), diff_base=diff_base,
                                   progress={k: v for k, v in progress.items() if v is not None})
        if writes.body:
            await self._write_body(uid, body, writes.body)
        if releasing:
            self._released.add(uid)

    async def _write_body(self, uid: str, body: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        response: dict[str, Any] = await self.client.patch(
            self.resource.path(meta.get("namespace"), meta["name"]), patch)
        self._remember(uid, response)
        return response

    def _remember(self, uid: str, response: Mapping[str, Any]) -> None:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            self._written[uid] = int(response["metadata"]["resourceVersion"])
