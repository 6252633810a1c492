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
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from opd.engine.ownership import EVERYTHING, Ownership
from opd.engine.state import State, Storage, Writes, dump, holding_label, result_annotation
from opd.kube.api import KubeClient
from opd.kube.batching import Fence
from opd.resources import Resource
from opd.settings import PersistenceSettings

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
    version: int = -1  # the resourceVersion of the state it was computed from

    @property
    def empty(self) -> bool:
        return not (self.results or self.patch or self.finalizer is not None or self.marks)


def merge(into: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge(into[key], value)
        elif isinstance(value, Mapping):
            into[key] = merge({}, value)
        else:
            into[key] = value
    return into


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
    def _place_results(self, results: Mapping[str, Any], status: dict[str, Any], body: dict[str, Any]) -> None:
        for hid, value in results.items():
            if self.placement is Placement.ANNOTATIONS:
                text = dump(value)
                if len(text) > MAX_RESULT_ANNOTATION:
                    if hid not in self._too_large:
                        self._too_large.add(hid)
                        logger.warning(f"opd: the result of handler {hid!r} on {self.resource} is "
                                       f"{len(text)} bytes: too large for an annotation, not stored")
                    continue
                merge(body, {"metadata": {"annotations": {result_annotation(self.prefix, hid): text}}})
                continue
            target = status if self.placement is Placement.STATUS else body
            inner = target.setdefault("status", {})
            if self.results_field is not None:
                inner = inner.setdefault(self.results_field, {})
            inner[hid] = value

    def _kept(self, response: Mapping[str, Any], results: Mapping[str, Any]) -> bool:
        status = response.get("status") or {}
        if self.results_field is not None:
            status = status.get(self.results_field) or {}
        return all(hid in status for hid in results)

    def _probe_payload(self, results: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The first result of this resource, alone and ahead of any marker, where placement says."""
        probe_status: dict[str, Any] = {}
        probe_body: dict[str, Any] = {}
        self._place_results(results, probe_status, probe_body)
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
        """Write ``plan`` to the object (``body`` is its newest known state); returns the last response."""
        meta = body["metadata"]
        namespace, name, uid = meta.get("namespace"), meta["name"], meta["uid"]
        response: dict[str, Any] | None = None
        results = dict(plan.results)
        patch = merge({}, plan.patch)
        own_status = patch.pop("status", None) or {}

        if results and not self._confirmed and self.placement is not Placement.ANNOTATIONS:
            if patch:  # the handler's patch first, as always: whoever sees a result sees its patch too
                response = await self._patch(uid, namespace, name, None, patch)
                patch = {}
            async with self._probing:  # objects handled side by side wait for the one check
                if not self._confirmed:
                    response = await self._patch(uid, namespace, name, *self._probe_payload(results))
                    if self._settle(response, results):
                        results = {}

        payload_status: dict[str, Any] = {}
        payload_body: dict[str, Any] = merge({}, patch)
        self._place_results(results, payload_status, payload_body)
        if own_status:
            merge(payload_status if self.has_status else payload_body, {"status": own_status})

        markers = Writes()
        if plan.marks:
            self.storage.write(markers, old=plan.old, diff_base=plan.diff_base, progress=plan.progress)
        if self.storage.in_status:
            if payload_body:
                response = await self._patch(uid, namespace, name, None, payload_body)
            status = merge(payload_status, markers.status)
            if status:
                response = await self._patch(uid, namespace, name, "status", status)
                if plan.marks and not self.storage.confirms(response, plan.diff_base):
                    logger.warning(f"opd: {self.resource} drops unknown status fields (structural schema): "
                                   f"keeping opd's markers in annotations instead")
                    self.storage.fall_back_to_annotations()
                    markers = Writes()
                    self.storage.write(markers, old=State(None, {}), diff_base=plan.diff_base,
                                       progress={k: v for k, v in plan.progress.items() if v is not None})
            last = merge(merge({}, markers.body), self._finalizers(plan, response or body))
            if last:
                response = await self._patch(uid, namespace, name, None, last)
            return response

        if payload_status:
            response = await self._patch(uid, namespace, name, "status", payload_status)
        last = merge(merge(payload_body, markers.body), self._finalizers(plan, response or body))
        if last:
            response = await self._patch(uid, namespace, name, None, last)
        return response

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
                     patch: Mapping[str, Any]) -> dict[str, Any]:
        ownership = self.ownership
        # Checked now, and again when the patch leaves (it may wait behind another write of the object).
        fence = Fence(lambda: ownership.time_left(uid), f"{self.resource} {namespace + '/' if namespace else ''}{name}")
        fence.check()
        response: dict[str, Any] = await self.client.patch(self.resource.path(namespace, name, sub), patch,
                                                           fence=fence)
        return response
