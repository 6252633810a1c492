"""Processing one object's change: which cause, which handlers, run them, persist.

Per processed change: at most one PATCH to ``/status`` (handler results, and
the markers when they live in status) and then at most one PATCH to the body
(the handlers' own patches, markers in annotations, finalizers). Results are
always written before the markers that say their handlers ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from loguru import logger

from opd.engine.diffs import Patch, diff
from opd.engine.invocation import invoke
from opd.engine.queueing import WorkQueue
from opd.engine.state import State, Storage, Writes, dump, essence
from opd.errors import PermanentError, TemporaryError
from opd.kube.api import REQUEST_ERRORS, ConflictError, KubeClient, NotFoundError
from opd.registry import ErrorsMode, Handler, OperatorRegistry, Reason, matches
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


class ResourceProcessor:
    """Handles the objects of one resource for one operator (registry)."""

    def __init__(self, *, client: KubeClient, resource: Resource, ref: ResourceRef,
                 registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                 executor: Executor | None) -> None:
        self.client = client
        self.resource = resource
        self.settings = settings
        self.memo = memo
        self.executor = executor
        handlers = registry.for_resource(ref)
        self.by_reason: dict[Reason, list[Handler]] = {r: [h for h in handlers if h.reason == r] for r in Reason}
        self.changing = any(self.by_reason[r] for r in (Reason.CREATE, Reason.UPDATE, Reason.DELETE, Reason.RESUME))
        self.finalizer = settings.persistence.finalizer
        self.needs_finalizer = any(not h.optional for h in self.by_reason[Reason.DELETE])
        self.storage = Storage(settings.persistence, has_status_subresource="status" in resource.subresources,
                               handler_ids=[h.id for h in handlers])
        self.queue: WorkQueue[str, Item] = WorkQueue(self._process, workers=settings.processing.workers,
                                                     name=str(resource))
        self._written: dict[str, int] = {}  # uid -> resourceVersion of our last write
        self._seen: set[str] = set()  # uids seen by this process (for resume handlers)
        self._unwritten: dict[str, _Outcome] = {}  # outcomes whose write failed, to retry as they are

    def deliver(self, event_type: str, body: dict[str, Any]) -> None:
        self.queue.put(body["metadata"]["uid"], (event_type, body))

    async def close(self) -> None:
        await self.queue.close(self.settings.shutdown.timeout)

    # -- one object -----------------------------------------------------------
    async def _process(self, uid: str, item: Item) -> None:
        event_type, body = item
        if self.by_reason[Reason.EVENT]:
            await self._run_event_handlers(event_type, body)
        if event_type == "DELETED":
            self._written.pop(uid, None)
            self._unwritten.pop(uid, None)
            self._seen.discard(uid)
            self.queue.forget(uid)
            return
        if not self.changing:
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
            if self._stale(uid, body):
                return
            await self._handle_change(uid, body)
        except (NotFoundError, ConflictError):
            pass  # gone, or changed under us: the watch brings the newer state
        except REQUEST_ERRORS as exc:
            meta = body["metadata"]
            delay = getattr(exc, "retry_after", None) or self.settings.watching.backoff_initial * 4
            logger.warning(f"opd: {self.resource} {meta.get('namespace')}/{meta.get('name')}: "
                           f"writing the outcome failed ({exc}); retrying in {delay:.0f}s")
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

    def _object_logger(self, body: Mapping[str, Any]) -> Any:
        meta = body.get("metadata") or {}
        where = f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
        return logger.bind(object=where, resource=str(self.resource)), where

    def _kwargs(self, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        log, _ = self._object_logger(body)
        return {
            "body": body, "spec": body.get("spec") or {}, "meta": meta, "status": body.get("status") or {},
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {},
            "logger": log, "memo": self.memo, "resource": self.resource, "settings": self.settings,
            **extra,
        }

    async def _run_event_handlers(self, event_type: str, body: dict[str, Any]) -> None:
        kwargs = self._kwargs(body, event={"type": event_type, "object": body}, type=event_type,
                              patch=Patch(), reason="event")
        for handler in self.by_reason[Reason.EVENT]:
            if not matches(handler, body, kwargs):
                continue
            try:
                await invoke(handler, kwargs, executor=self.executor)
            except Exception as exc:
                _, where = self._object_logger(body)
                logger.opt(exception=exc).error(f"opd: event handler {handler.id!r} failed for {where}: {exc}")

    def _cause(self, uid: str, body: Mapping[str, Any], state: State, current: str) -> Reason | None:
        meta = body["metadata"]
        first_seen = uid not in self._seen
        if self.by_reason[Reason.RESUME]:
            self._seen.add(uid)
        if meta.get("deletionTimestamp"):
            return Reason.DELETE if self.finalizer in (meta.get("finalizers") or ()) else None
        if state.diff_base is None:
            return Reason.CREATE
        if state.diff_base != current:
            return Reason.UPDATE
        if first_seen and self.by_reason[Reason.RESUME]:
            return Reason.RESUME
        if state.progress:
            return Reason.RESUME if any(h.id in state.progress for h in self.by_reason[Reason.RESUME]) else None
        return None

    async def _handle_change(self, uid: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        prefix = self.settings.persistence.prefix
        new_essence = essence(body, prefix)
        current = dump(new_essence)
        state = self.storage.read(body)
        reason = self._cause(uid, body, state, current)

        finalizers = list(meta.get("finalizers") or ())
        if self.needs_finalizer and not meta.get("deletionTimestamp") and self.finalizer not in finalizers:
            # Before any handler runs: a deletion from now on waits for the delete handlers.
            body = await self._write_body(uid, body, {"metadata": {
                "finalizers": [*finalizers, self.finalizer], "resourceVersion": meta["resourceVersion"]}})
            meta = body["metadata"]
        if reason is None:
            return

        old_essence = None
        if reason == Reason.UPDATE and state.diff_base is not None:
            old_essence = json.loads(state.diff_base)
        changes = diff(old_essence, new_essence) if reason == Reason.UPDATE else ()
        patch = Patch()
        kwargs = self._kwargs(body, reason=str(reason), patch=patch, old=old_essence, new=new_essence,
                              diff=changes)
        handlers = [h for h in self.by_reason[reason] if matches(h, body, kwargs)]

        now = time.time()
        progress: dict[str, dict[str, Any] | None] = {}
        results: dict[str, Any] = {}
        for handler in handlers:
            record = state.progress.get(handler.id)
            if _done(record) or (record and float(record.get("delayed") or 0) > now):
                continue
            record = dict(record or {})
            record.setdefault("started", now)
            progress[handler.id] = await self._run_one(handler, record, kwargs, results)

        merged = {**state.progress, **progress}
        pending = [h for h in handlers if not _done(merged.get(h.id))]
        writes = Writes()
        for hid, result in results.items():
            if result is not None:
                writes.set_status(hid, result)
        own_status = patch.pop("status", None)
        if own_status:
            _merge(writes.status.setdefault("status", {}), own_status)
        _merge(writes.body, patch)

        diff_base: str | None = None
        if pending:
            for hid in merged.keys() - {h.id for h in handlers}:
                progress.setdefault(hid, merged[hid])
        else:
            progress = {hid: None for hid in state.progress}
            if reason in (Reason.CREATE, Reason.UPDATE) or state.diff_base is None:
                diff_base = current
            if reason == Reason.DELETE:
                kept = [f for f in finalizers if f != self.finalizer]
                _merge(writes.body, {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}})
        self.storage.write(writes, old=state, diff_base=diff_base, progress=progress)
        outcome: _Outcome = (body, writes, diff_base, state, progress)
        try:
            await self._apply(uid, *outcome)
        except (NotFoundError, ConflictError):
            raise
        except REQUEST_ERRORS:
            self._unwritten[uid] = outcome
            raise

        if pending:
            delays = [float((merged.get(h.id) or {}).get("delayed") or now) for h in pending]
            self.queue.put_after(max(0.0, min(delays) - time.time()), uid, ("MODIFIED", body))

    async def _run_one(self, handler: Handler, record: dict[str, Any], kwargs: dict[str, Any],
                       results: dict[str, Any]) -> dict[str, Any]:
        log, where = self._object_logger(kwargs["body"])
        retry = int(record.get("retries") or 0)
        started = float(record["started"])
        runtime = time.time() - started
        call_kwargs = {**kwargs, "retry": retry, "started": started, "runtime": runtime}
        try:
            if handler.timeout is not None and runtime >= handler.timeout:
                raise PermanentError(f"timed out after {handler.timeout}s")
            remaining = None if handler.timeout is None else handler.timeout - runtime
            result = await asyncio.wait_for(invoke(handler, call_kwargs, executor=self.executor), remaining)
        except asyncio.CancelledError:
            raise
        except PermanentError as exc:
            log.error(f"opd: handler {handler.id!r} failed permanently for {where}: {exc}")
            return {**record, "failure": True, "message": str(exc)}
        except TimeoutError:
            log.error(f"opd: handler {handler.id!r} timed out for {where} after {handler.timeout}s")
            return {**record, "failure": True, "message": "timeout"}
        except Exception as exc:
            if handler.errors == ErrorsMode.IGNORED and not isinstance(exc, TemporaryError):
                log.warning(f"opd: handler {handler.id!r} failed for {where} (ignored): {exc}")
                return {**record, "success": True, "message": str(exc)}
            if handler.errors == ErrorsMode.PERMANENT and not isinstance(exc, TemporaryError):
                log.opt(exception=exc).error(f"opd: handler {handler.id!r} failed for {where}: {exc}")
                return {**record, "failure": True, "message": str(exc)}
            if handler.retries is not None and retry + 1 >= handler.retries:
                log.error(f"opd: handler {handler.id!r} failed for {where}, {retry + 1} tries: {exc}")
                return {**record, "failure": True, "retries": retry + 1, "message": str(exc)}
            if isinstance(exc, TemporaryError) and exc.delay is not None:
                delay = exc.delay
                log.warning(f"opd: handler {handler.id!r} for {where}: {exc}; retrying in {delay:g}s")
            else:
                cfg = self.settings.retries
                delay = handler.backoff if handler.backoff is not None else min(
                    cfg.backoff_max, cfg.backoff_initial * 2 ** retry)
                log.opt(exception=exc).error(
                    f"opd: handler {handler.id!r} failed for {where}: {exc!r}; retrying in {delay:g}s")
            return {**record, "retries": retry + 1, "delayed": time.time() + delay, "message": str(exc)}
        results[handler.id] = result
        log.debug(f"opd: handler {handler.id!r} succeeded for {where}")
        return {**record, "success": True}

    async def _apply(self, uid: str, body: Mapping[str, Any], writes: Writes, diff_base: str | None,
                     old: State, progress: Mapping[str, dict[str, Any] | None]) -> None:
        meta = body["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        if "status" not in self.resource.subresources:
            merged = _merge(writes.body, writes.status)
            if merged:
                await self._write_body(uid, body, merged)
            return
        if writes.status:
            path = self.resource.path(namespace, name, "status")
            response = await self.client.patch(path, writes.status)
            self._remember(uid, response)
            if not self.storage.confirms(response, diff_base):
                logger.warning(f"opd: {self.resource} drops unknown status fields (structural schema): "
                               f"keeping opd's markers in annotations instead")
                self.storage.fall_back_to_annotations()
                self.storage.write(writes, old=State(None, {}), diff_base=diff_base,
                                   progress={k: v for k, v in progress.items() if v is not None})
        if writes.body:
            await self._write_body(uid, body, writes.body)

    async def _write_body(self, uid: str, body: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        response: dict[str, Any] = await self.client.patch(
            self.resource.path(meta.get("namespace"), meta["name"]), patch)
        self._remember(uid, response)
        return response

    def _remember(self, uid: str, response: Mapping[str, Any]) -> None:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            self._written[uid] = int(response["metadata"]["resourceVersion"])
