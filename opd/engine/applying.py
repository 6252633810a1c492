"""Writing a processed change: results, the handlers' patches, markers and the finalizer,
planned together and sent in the order that never loses work.

The rule: a handler's result and its patch reach the object with, or before, the
marker that says the handler ran; a crash in between repeats the handler, never
drops its output. So, per plan:

- markers in ``.status`` (a status subresource): the handlers' patch of the object
  first, then one ``/status`` PATCH with results, ``patch.status`` and markers, then
  the finalizer change (with a resourceVersion precondition: finalizers are a list);
- markers in annotations: results and ``patch.status`` to ``/status`` first (when
  the resource has one), then one PATCH of the object with everything else.

Where results go: ``.status.<id>`` (or ``.status.<results_field>.<id>``) — through the
status subresource, or in the object itself for a resource without one. Until the
API server has kept a result once, results go in a write of their own, after the
handlers' patch and ahead of the markers, and the response is checked (once per
resource, however many objects are handled side by side): a resource that drops them (a ConfigMap
has no status; a structural schema may prune unknown fields) gets its results in
annotations ``<prefix>/result.<id>`` from then on, said once at WARNING. A result
too large for an annotation is not stored, said once per handler.

A handler's patch and result are checked to be JSON once (``sendable``, where a bad one
can fail alone), go out as the objects the handler made (new dicts only where two parts
of a write meet; a plan is never changed, so a failed write goes again as it was), and
are serialised once, when sent. ``Writer`` is every write of a processor: a handled
change's plan, kept until written; outputs of handlers that keep no progress; retries.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from opd.engine.backoff import Backoff
from opd.engine.diffs import Patch
from opd.engine.execution import Outcome, brief
from opd.engine.ownership import EVERYTHING, Fenced, Ownership, say_dropped
from opd.engine.queueing import WorkQueue
from opd.engine.reporting import Reporter, where
from opd.engine.state import State, Storage, Writes, dump, holding_label, result_annotation, version
from opd.errors import PermanentError
from opd.kube.api import REQUEST_ERRORS, APIError, KubeClient
from opd.kube.batching import Checked, Fence, PatchNotJSON, check_json
from opd.registry import Handler, result_key
from opd.resources import Resource
from opd.settings import PersistenceSettings

Item = tuple[str, dict[str, Any]]  # a queue item: (event type, body), as ``inventory.Item``

MAX_RESULT_ANNOTATION = 32 * 1024  # all annotations of an object share 256 KiB


class Placement(enum.Enum):
    STATUS = "the status subresource"
    BODY = "the object's .status"
    ANNOTATIONS = "annotations"


@dataclass
class Plan:
    """What one processed change writes; empty parts are not sent."""

    results: dict[str, Any] = field(default_factory=dict)  # handler id -> its (non-None) result
    patch: dict[str, Any] = field(default_factory=dict)  # the handlers' own merge-patch (``status`` included)
    # Markers: a new diff-base (None: unchanged) and progress records (None purges one).
    diff_base: str | None = None
    progress: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    old: State = field(default_factory=lambda: State(None, {}))
    finalizer: bool | None = None  # True: add opd's finalizer, False: remove it, None: leave it
    marks: bool = False  # whether this plan writes markers at all (timers' and daemons' outputs do not)
    checked: bool = False  # its results and patch are known to be JSON (``sendable``): not checked again
    version: int = -1  # the resourceVersion of the state it was computed from

    @property
    def empty(self) -> bool:
        return not (self.results or self.patch or self.finalizer is not None or self.marks)


def merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` merged over ``base`` as a new dict; neither is changed, and a part only one of them
    has is shared, not copied (a handler's patch goes out as the objects it made)."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = merged(below, value) if isinstance(value, Mapping) and isinstance(below, Mapping) else value
    return out


def absorb(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Merge ``other`` (a handler's patch) into ``into`` (all handlers' of one change): only ``into``
    changes; where both have a part, the merged part is a new dict."""
    for key, value in other.items():
        below = into.get(key)
        into[key] = merged(below, value) if isinstance(value, Mapping) and isinstance(below, Mapping) else value


class Applier:
    """Writes plans for the objects of one resource, for one operator."""

    def __init__(self, client: KubeClient, resource: Resource, persistence: PersistenceSettings,
                 storage: Storage, *, holding_label: bool, ownership: Ownership = EVERYTHING) -> None:
        self.client = client
        self.ownership = ownership  # asked before every write: a replica that lost an object writes nothing
        self.resource = resource
        self.storage = storage
        self.results_field = persistence.results_field
        self.prefix = persistence.prefix
        self.finalizer = persistence.finalizer
        self.label = holding_label  # mark held objects with a label a narrow watch follows
        self.has_status = "status" in resource.subresources
        self.placement = Placement.STATUS if self.has_status else Placement.BODY
        self._confirmed = False  # the API server has kept a result where placement says
        self._probing = asyncio.Lock()
        self._too_large: set[str] = set()  # handler ids already reported

    # -- what goes where -------------------------------------------------------------------------------------------
    def _placed(self, results: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Results as (a patch of the status subresource, a patch of the object), where placement says."""
        status: dict[str, Any] = {}
        body: dict[str, Any] = {}
        for hid, value in results.items():
            if self.placement is Placement.ANNOTATIONS:
                text = dump(value)
                if len(text) > MAX_RESULT_ANNOTATION:
                    if hid not in self._too_large:
                        self._too_large.add(hid)
                        logger.warning(f"opd: the result of handler {hid!r} on {self.resource} is "
                                       f"{len(text)} bytes: too large for an annotation, not stored")
                    continue
                body = merged(body, {"metadata": {"annotations": {result_annotation(self.prefix, hid): text}}})
                continue
            inner = {hid: value} if self.results_field is None else {self.results_field: {hid: value}}
            if self.placement is Placement.STATUS:
                status = merged(status, {"status": inner})
            else:
                body = merged(body, {"status": inner})
        return status, body

    def _kept(self, response: Mapping[str, Any], results: Mapping[str, Any]) -> bool:
        status = response.get("status") or {}
        if self.results_field is not None:
            status = status.get(self.results_field) or {}
        return all(hid in status for hid in results)

    def _probe_payload(self, results: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The first result of this resource, alone and ahead of any marker, where placement says."""
        probe_status, probe_body = self._placed(results)
        sub = "status" if self.placement is Placement.STATUS else None
        return sub, probe_status or probe_body

    def _settle(self, response: Mapping[str, Any], results: Mapping[str, Any]) -> bool:
        """Whether the API server kept the probe's results; if not, they go to annotations from now on."""
        self._confirmed = True
        if self._kept(response, results):
            return True
        where = "status" if self.placement is Placement.STATUS else ".status"
        self.placement = Placement.ANNOTATIONS
        logger.warning(f"opd: {self.resource} does not keep handler results in {where} (no such field, or a "
                       f"schema prunes it): keeping them in annotations {self.prefix}/result.<handler id> instead")
        return False

    # -- writing ----------------------------------------------------------------------------------------------------
    async def apply(self, plan: Plan, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Write ``plan`` to the object (``body`` is its newest known state); returns the last response.
        The plan is not changed (a failed write is applied again): its parts go out as they are, in new
        dicts only where two parts meet, and ``plan.checked`` spares them a second JSON check."""
        meta = body["metadata"]
        namespace, name, uid = meta.get("namespace"), meta["name"], meta["uid"]
        response: dict[str, Any] | None = None
        write = functools.partial(self._patch, uid, namespace, name, checked=plan.checked)
        results: Mapping[str, Any] = plan.results
        own_status = plan.patch.get("status") or {}
        patch = {k: v for k, v in plan.patch.items() if k != "status"}

        if results and not self._confirmed and self.placement is not Placement.ANNOTATIONS:
            if patch:  # the handler's patch first, as always: whoever sees a result sees its patch too
                response = await write(None, patch)
                patch = {}
            async with self._probing:  # objects handled side by side wait for the one check
                if not self._confirmed:
                    response = await write(*self._probe_payload(results))
                    if self._settle(response, results):
                        results = {}

        payload_status, placed_body = self._placed(results)
        payload_body = merged(patch, placed_body)
        if own_status:
            if self.has_status:
                payload_status = merged(payload_status, {"status": own_status})
            else:
                payload_body = merged(payload_body, {"status": own_status})

        markers = Writes()
        if plan.marks:
            self.storage.write(markers, old=plan.old, diff_base=plan.diff_base, progress=plan.progress)
        in_status = self.storage.in_status  # as these markers were made: the writes below may change it
        if in_status:
            if payload_body:
                response = await write(None, payload_body)
            status = merged(payload_status, markers.status)
            if status:
                self._check_markers(plan, namespace, name, "status", markers.status)
                response = await write("status", status)
                if plan.marks and not self.storage.confirms(response, plan.diff_base):
                    logger.warning(f"opd: {self.resource} drops unknown status fields (structural schema): "
                                   f"keeping opd's markers in annotations instead")
                    self.storage.fall_back_to_annotations()
                # Fallen back by this write or by another object's while these markers were on their way
                # (computed for the status before the writes awaited): the status dropped them as well.
                if markers.status and not self.storage.in_status:
                    markers = Writes()
                    self.storage.write(markers, old=State(None, {}), diff_base=plan.diff_base,
                                       progress={k: v for k, v in plan.progress.items() if v is not None})
            last = merged(markers.body, self._finalizers(plan, response or body))
            if last:
                self._check_markers(plan, namespace, name, None, markers.body)
                response = await write(None, last)
            return response

        if payload_status:
            response = await write("status", payload_status)
        last = merged(merged(payload_body, markers.body), self._finalizers(plan, response or body))
        if last:
            self._check_markers(plan, namespace, name, None, markers.body)
            response = await write(None, last)
        return response

    def _check_markers(self, plan: Plan, namespace: str | None, name: str, sub: str | None,
                       markers: Mapping[str, Any]) -> None:
        """The handlers' parts of a checked plan are JSON; opd's own markers are checked as they go
        (a retry delay of NaN makes a progress record that is not)."""
        if plan.checked and markers:
            check_json(self.resource.path(namespace, name, sub), markers)

    def _finalizers(self, plan: Plan, body: Mapping[str, Any]) -> dict[str, Any]:
        """The finalizer change, computed from the newest state this plan knows (an earlier write of
        the plan returns it) and preconditioned on it: finalizers are a list, replaced whole."""
        if plan.finalizer is None:
            return {}
        current = list(body["metadata"].get("finalizers") or ())
        if plan.finalizer:
            changed = current if self.finalizer in current else [*current, self.finalizer]
        else:
            changed = [f for f in current if f != self.finalizer]
        meta: dict[str, Any] = {"finalizers": changed, "resourceVersion": body["metadata"]["resourceVersion"]}
        labels = body["metadata"].get("labels") or {}
        key = holding_label(self.prefix)
        if plan.finalizer and self.label:
            meta["labels"] = {key: "true"}
        elif not plan.finalizer and key in labels:
            meta["labels"] = {key: None}
        return {"metadata": meta}

    async def _patch(self, uid: str, namespace: str | None, name: str, sub: str | None,
                     patch: dict[str, Any], *, checked: bool) -> dict[str, Any]:
        ownership = self.ownership
        # Checked now, and again when the patch leaves (it may wait behind another write of the object).
        fence = Fence(lambda: ownership.time_left(uid), f"{self.resource} {namespace + '/' if namespace else ''}{name}")
        fence.check()
        response: dict[str, Any] = await self.client.patch(self.resource.path(namespace, name, sub),
                                                           Checked(patch) if checked else patch, fence=fence)
        return response


# -- a processor's writes: what is kept until written, what is said and dropped, what is retried -----------------

WRITE_ERRORS: tuple[type[Exception], ...] = (*REQUEST_ERRORS, PatchNotJSON)


class Remembered(Protocol):
    """What the processor remembers of an object that its writes keep up to date (``inventory.Record``)."""

    unwritten: Plan | None
    written: int | None
    released: bool
    failing: str | None
    retry: Backoff | None


def sendable(handler: Handler, outcome: Outcome, patch: Patch) -> Outcome:
    """The one check that a handler's result and patch are JSON, where a bad one can fail alone: a
    handler whose result or patch has no JSON form (a set, NaN) fails, for good, and nothing of it
    is written; the other handlers' outputs go as usual (and are not checked again: ``Plan.checked``)."""
    for what, value in (("result", outcome.result), ("patch", patch)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            patch.clear()
            error = PermanentError(f"its {what} is not JSON: {brief(exc)}")
            record = {k: v for k, v in outcome.record.items() if k not in ("success", "delayed")}
            return Outcome({**record, "failure": True, "message": brief(error)}, error=error)
    return outcome


def _unwritable(exc: APIError) -> bool:
    """Writes the server will refuse every time: too large for etcd, or invalid."""
    return exc.status in (413, 422) or "too large" in exc.message.lower()


def _refused(exc: BaseException) -> bool:
    """Refused by the server for a reason that retrying alone does not fix (400, 403, ...)."""
    return isinstance(exc, APIError) and 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


class Writer:
    """Every write of one resource's processing, through its applier: a handled change's plan (kept
    until it is written: its handlers ran), the outputs of handlers that keep no progress (a failed
    write said, not retried), and a failed write retried with backoff."""

    def __init__(self, applier: Applier, reporter: Reporter, queue: WorkQueue[str, Item], *,
                 recall: Callable[[str], Remembered], backoff_initial: float) -> None:
        self.applier = applier
        self.reporter = reporter
        self.queue = queue
        self._recall = recall
        self._backoff_initial = backoff_initial

    async def plan(self, memory: Remembered, plan: Plan, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Write a plan; until it is written, ``memory`` keeps it (never recomputed: its handlers ran)."""
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

    async def quietly(self, handler: Handler, body: Mapping[str, Any], plan: Plan) -> None:
        """Outputs of handlers that keep no progress (timers, daemons, event and index handlers): a
        failed write is said, not retried — the handler runs again and writes again."""
        try:
            response = await self.applier.apply(plan, body)
        except Fenced as exc:
            say_dropped(f"opd: {exc}: the output of {handler.id!r} is dropped")
            return
        except WRITE_ERRORS as exc:
            logger.warning(f"opd: writing the output of {handler.id!r} for {where(body)} failed: {brief(exc)}")
            return
        if response is not None:
            self._recall(body["metadata"]["uid"]).written = version(response)

    async def outcome(self, handler: Handler, body: dict[str, Any], outcome: Outcome, patch: Patch) -> None:
        """A timer's or daemon's try: reported, its result and patch written."""
        outcome = sendable(handler, outcome, patch)
        self.reporter.outcome(handler, body, outcome)
        plan = Plan(patch=patch, checked=True)
        if outcome.success and outcome.error is None and outcome.result is not None:
            plan.results[result_key(handler)] = outcome.result
        if not plan.empty:
            await self.quietly(handler, body, plan)

    def failed(self, uid: str, memory: Remembered, item: Item, exc: Exception) -> None:
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
                initial=self._backoff_initial * 2, maximum=8.0, jitter=0.1)
        delay = getattr(exc, "retry_after", None) or memory.retry.next()
        first, memory.failing = memory.failing != kind, kind
        self.reporter.write_failed(body, exc, refused=refused, delay=delay, first=first,
                                   maximum=memory.retry.maximum)
        self.queue.put_after(delay, uid, item)
