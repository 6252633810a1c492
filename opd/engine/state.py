"""What opd keeps on each object: the diff-base (last handled essence) and per-handler progress.

Two places, chosen per resource: annotations (``<prefix>/...``), or one field in
``.status`` (when the resource has a status subresource), so handler results
and the markers that say a handler ran travel in one atomic write.

The diff-base of a Secret never holds its values: each key of ``data`` and
``stringData`` is kept as a digest (salted with the object's uid), which is
enough to see that, and which, keys changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opd.settings import PersistenceSettings

LAST_HANDLED = "last-handled-configuration"
_IGNORED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_SYSTEM_KEYS = frozenset({"apiVersion", "kind", "metadata", "status"})
_SECRET_FIELDS = ("data", "stringData")
RESULT_PREFIX = "result."  # annotation names of results kept in annotations: <prefix>/result.<handler>


def _is_ours(key: str, prefix: str) -> bool:
    """Markers of this operator, or of opd's plugins (``<plugin>.opd.dev``), never count as changes.
    ``opd.dev/...`` itself is left to users, except where it is this operator's own prefix."""
    domain = key.split("/", 1)[0] if "/" in key else ""
    return domain == prefix or domain.endswith(".opd.dev")


def holding_label(prefix: str) -> str:
    """The label opd sets while it holds its finalizer on an object: a second, narrow watch on it
    finds the objects opd must still let go of after they left the handlers' label selector."""
    return f"{prefix}/finalizer"


def is_holding_label(key: str, prefix: str) -> bool:
    return key.endswith("/finalizer") and _is_ours(key, prefix)


def is_secret(api_version: str, kind: str) -> bool:
    return api_version == "v1" and kind == "Secret"


def essence(body: Mapping[str, Any], prefix: str, *, secret: bool = False) -> dict[str, Any]:
    """What a change is measured on: everything but status and system metadata (and opd's own
    labels and annotations). For a Secret (``secret=True``), its values are digests."""
    result = {k: v for k, v in body.items() if k not in _SYSTEM_KEYS}
    meta = body.get("metadata") or {}
    if secret:
        salt = str(meta.get("uid") or "")
        for name in _SECRET_FIELDS:
            values = result.get(name)
            if isinstance(values, Mapping):
                result[name] = {key: _digest(salt, key, value) for key, value in values.items()}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if not is_holding_label(k, prefix)}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not _is_ours(k, prefix) and k not in _IGNORED_ANNOTATIONS}
    if labels or annotations:
        result["metadata"] = {k: v for k, v in (("labels", labels), ("annotations", annotations)) if v}
    return result


def _digest(salt: str, key: str, value: Any) -> str:
    text = value if isinstance(value, str) else dump(value)
    return _DIGEST + hashlib.sha256(f"{salt}\0{key}\0{text}".encode()).hexdigest()


def annotation_name(handler_id: str, prefix: str = "") -> str:
    """A valid annotation name part (at most 63 characters) for a handler id (e.g. ``<lambda>``,
    ``Class.method``), after ``prefix`` (e.g. ``result.``)."""
    room = 63 - len(prefix)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", handler_id).strip("-._") or "handler"
    if name != handler_id or len(name) > room:
        digest = hashlib.sha1(handler_id.encode()).hexdigest()[:8]
        name = f"{name[:room - 9]}-{digest}"
    return prefix + name


def result_annotation(prefix: str, handler_id: str) -> str:
    return f"{prefix}/{annotation_name(handler_id, RESULT_PREFIX)}"


_DIGEST = "sha256:"


def compact(diff_base: str, limit: int) -> str:
    """The diff-base itself, or its digest when it is too large to keep on the object
    (it would double the object's size: past etcd's request limit for a ~1 MiB object)."""
    if len(diff_base) <= limit:
        return diff_base
    return _DIGEST + hashlib.sha256(diff_base.encode()).hexdigest()


def is_digest(diff_base: str) -> bool:
    return diff_base.startswith(_DIGEST)


def version(body: Any) -> int:
    """The object's resourceVersion as a number (-1 if absent): etcd's revisions only grow."""
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return -1


def dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass
class State:
    diff_base: str | None
    progress: dict[str, dict[str, Any]]


@dataclass
class Writes:
    """The two merge-patches of one processing step: status first (results), then the body."""

    status: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    def set_result(self, handler_id: str, value: Any, results_field: str | None) -> None:
        status = self.status.setdefault("status", {})
        if results_field is not None:
            status = status.setdefault(results_field, {})
        status[handler_id] = value

    def set_annotation(self, key: str, value: str | None) -> None:
        self.body.setdefault("metadata", {}).setdefault("annotations", {})[key] = value


class Storage:
    """Reads and writes the diff-base and progress of one operator on one resource."""

    def __init__(self, settings: PersistenceSettings, *, has_status_subresource: bool,
                 handler_ids: Iterable[str] = ()) -> None:
        self._ids = {annotation_name(hid): hid for hid in handler_ids}
        self.prefix = settings.prefix
        self.field = settings.status_field
        mode = settings.storage
        if mode == "auto":
            mode = "status" if has_status_subresource else "annotations"
        self.in_status = mode == "status"

    def fall_back_to_annotations(self) -> None:
        self.in_status = False

    def read(self, body: Mapping[str, Any]) -> State:
        if self.in_status:
            ours = ((body.get("status") or {}).get(self.field)) or {}
            if ours:
                return State(ours.get("lastHandled"), dict(ours.get("progress") or {}))
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        base = annotations.get(f"{self.prefix}/{LAST_HANDLED}")
        progress: dict[str, dict[str, Any]] = {}
        marker = f"{self.prefix}/"
        for key, value in annotations.items():
            if key.startswith(marker) and key != f"{self.prefix}/{LAST_HANDLED}":
                name = key[len(marker):]
                if name.startswith(RESULT_PREFIX) or name == "finalizer":
                    continue
                try:
                    record = json.loads(value)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                # An id with a slash names itself in its record: a sub-handler's ("<parent>/<id>"), or
                # Kopf's id of a field handler ("fn/spec.size"), whose parent need not be a handler.
                child = record.pop("id", None)
                if isinstance(child, str) and (not self._ids or any(
                        child == hid or child.startswith(f"{hid}/") for hid in self._ids.values())):
                    progress[child] = record
                elif not self._ids or name in self._ids:  # else: somebody's own annotation in our domain
                    progress[self._ids.get(name, name)] = record
        return State(base, progress)

    def write(self, writes: Writes, *, old: State, diff_base: str | None,
              progress: Mapping[str, dict[str, Any] | None]) -> None:
        """Record a new diff-base (if given) and progress (None purges a handler's record)."""
        if self.in_status:
            ours: dict[str, Any] = {}
            if diff_base is not None and diff_base != old.diff_base:
                ours["lastHandled"] = diff_base
            changes = {}
            for hid, rec in progress.items():
                before = old.progress.get(hid)
                if before != rec:
                    # A merge-patch merges dicts: null the keys a record no longer has.
                    gone = {k: None for k in (before or {}) if rec is not None and k not in rec}
                    changes[hid] = None if rec is None else {**gone, **rec}
            if changes:
                ours["progress"] = changes
            if ours:
                writes.status.setdefault("status", {})[self.field] = ours
            return
        if diff_base is not None and diff_base != old.diff_base:
            writes.set_annotation(f"{self.prefix}/{LAST_HANDLED}", diff_base)
        for hid, rec in progress.items():
            if old.progress.get(hid) != rec:
                child = "/" in hid  # a sub-handler's: its annotation name alone does not say which
                writes.set_annotation(f"{self.prefix}/{annotation_name(hid)}",
                                      None if rec is None else dump({**rec, "id": hid} if child else rec))

    def confirms(self, response: Mapping[str, Any], diff_base: str | None) -> bool:
        """Whether a status write survived (a structural schema may prune unknown fields)."""
        if not self.in_status or diff_base is None:
            return True
        ours = ((response.get("status") or {}).get(self.field)) or {}
        return bool(ours.get("lastHandled") == diff_base)
