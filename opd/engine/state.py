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
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from opd.settings import PersistenceSettings
from opd.storages import (
    AnnotationsDiffBaseStorage,
    AnnotationsProgressStorage,
    DiffBaseStorage,
    ProgressStorage,
    StatusDiffBaseStorage,
    StatusProgressStorage,
    ensure,
    resolve,
)

LAST_HANDLED = "last-handled-configuration"
_OWNER = "@uid"  # in opd's own diff-base annotation: the uid of the object it was written for
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


# Fields that change with every write (opd's own included): never part of the essence, even when named.
_VOLATILE = frozenset({("metadata",), ("metadata", "resourceVersion"), ("metadata", "managedFields"),
                       ("metadata", "labels"), ("metadata", "annotations")})


def essence(body: Mapping[str, Any], prefix: str, *, secret: bool = False,
            extra: Iterable[tuple[str, ...]] = (), own_status: Iterable[str] = (),
            markers: str | None = None) -> dict[str, Any]:
    """What a change is measured on: everything but status and system metadata (and opd's own
    labels and annotations). For a Secret (``secret=True``), its values are digests.

    ``extra``: fields the handlers name in status or metadata (``status.phase``), kept as in Kopf,
    so that a change of them is a change; ``own_status``: opd's keys in ``.status`` (``markers``,
    results) that do not count when a handler names the whole status; ``markers`` never counts."""
    result = {k: v for k, v in body.items() if k not in _SYSTEM_KEYS}
    meta = body.get("metadata") or {}
    for path in extra:
        if not path or path[0] not in ("metadata", "status") or path[:2] in _VOLATILE:
            continue  # the rest of the body is in the essence already; labels and annotations too
        found = resolve(body, path, _ABSENT)
        if found is _ABSENT:
            continue
        if path == ("status",) and isinstance(found, Mapping):
            found = {k: v for k, v in found.items() if k not in set(own_status)}
        elif path[0] == "status" and len(path) > 1 and path[1] == markers:
            continue
        ensure(result, path, json.loads(dump(found)))  # a copy, and only what JSON holds
    if secret:
        salt = str(meta.get("uid") or "")
        for name in _SECRET_FIELDS:
            values = result.get(name)
            if isinstance(values, Mapping):
                result[name] = {key: _digest(salt, key, value) for key, value in values.items()}
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if not is_holding_label(k, prefix) and k not in (f"{prefix}/shard", f"{prefix}/shards")}  # opd.ha's
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not _is_ours(k, prefix) and k not in _IGNORED_ANNOTATIONS}
    if labels or annotations:
        kept = result.setdefault("metadata", {})
        kept.update({k: v for k, v in (("labels", labels), ("annotations", annotations)) if v})
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
_ABSENT = object()


def compact(diff_base: str, limit: int) -> str:
    """The diff-base itself, or its digest when it is too large to keep on the object
    (it would double the object's size: past etcd's request limit for a ~1 MiB object)."""
    if len(diff_base) <= limit:
        return diff_base
    return _DIGEST + hashlib.sha256(diff_base.encode()).hexdigest()


def is_digest(diff_base: str) -> bool:
    return diff_base.startswith(_DIGEST)


def parse(diff_base: str | None) -> dict[str, Any] | None:
    """The essence a stored diff-base holds; None for a digest, or for what is no essence (somebody
    wrote the annotation or field by hand): the change is then seen, but not how, as for a digest."""
    if not diff_base or is_digest(diff_base):
        return None
    try:
        found = json.loads(diff_base)
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


def version(body: Any) -> int:
    """The object's resourceVersion as a number (-1 if absent): etcd's revisions only grow."""
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return -1


def _loads(text: str) -> Any:
    """json.loads, faster: orjson reads what ``dump`` writes the same way; what it refuses (NaN, an
    integer past 64 bits, a lone surrogate) json reads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


_UNREADABLE = _DIGEST + "unreadable"  # a diff-base that is not one: changed, not known how


@dataclass
class State:
    diff_base: str | None
    progress: dict[str, dict[str, Any]]
    # The object these were read from: a storage's store/purge is given it, as Kopf's are.
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


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
    """Reads and writes the diff-base and progress of one operator on one resource.

    opd's own places by default (``.status.<status_field>`` or annotations ``<prefix>/...``); Kopf's
    storages when the operator sets ``settings.persistence.progress_storage``/``diffbase_storage``.
    Every storage writes into a merge-patch: its ``status`` goes to the status subresource (with the
    handlers' results), the rest to the object after them."""

    def __init__(self, settings: PersistenceSettings, *, has_status_subresource: bool,
                 handler_ids: Iterable[str] = (), fields: Iterable[tuple[str, ...]] = (),
                 secret: bool = False) -> None:
        self._ids = {annotation_name(hid): hid for hid in handler_ids}
        self.prefix = settings.prefix
        self._in_annotations: tuple[ProgressStorage, DiffBaseStorage] | None = None
        self.field = settings.status_field
        # An explicit "status" says the status is writable (opd's setting, as before).
        self.has_status = has_status_subresource or settings.storage == "status"
        self.secret = secret
        self.fields = tuple(dict.fromkeys(fields))  # named by handlers: kept in the essence
        own_status = {self.field, *((settings.results_field,) if settings.results_field else ())}
        self._own_status = own_status | set(self._ids.values())  # results: status.<handler id>
        mode = settings.storage
        if mode == "auto":
            mode = "status" if has_status_subresource else "annotations"
        # opd's own default: in the status, read from annotations too when the status has nothing (an
        # earlier fall-back), or in annotations.
        self._opd_status = settings.progress_storage is None and settings.diffbase_storage is None and \
            mode == "status"
        if mode == "status":
            default_progress: ProgressStorage = StatusProgressStorage(field=("status", self.field, "progress"))
            default_base: DiffBaseStorage = StatusDiffBaseStorage(field=("status", self.field, "lastHandled"))
        else:
            default_progress, default_base = self._annotations()
        self.progress_storage = settings.progress_storage or default_progress
        self.diffbase_storage = settings.diffbase_storage or default_base
        # opd's own diff-base in annotations names the object it belongs to: operators copy their
        # objects' annotations to the children they make (filtering Kopf's domain, not opd's).
        self._bound = settings.diffbase_storage is None
        # Unknown (a storage of the operator's own) counts as the status: its writes then go after the
        # results in either case.
        self.in_status = self.has_status and (self.progress_storage.writes_status() is not False
                                              or self.diffbase_storage.writes_status() is not False)

    def _annotations(self) -> tuple[ProgressStorage, DiffBaseStorage]:
        """opd's storages in annotations; made once: they keep no state, and ``read`` asks for them for
        every object that has no status field of opd's yet."""
        if self._in_annotations is None:
            self._in_annotations = (AnnotationsProgressStorage(prefix=self.prefix),
                                    AnnotationsDiffBaseStorage(prefix=self.prefix, key=LAST_HANDLED))
        return self._in_annotations

    def fall_back_to_annotations(self) -> None:
        """The API server dropped what went to the status (a schema prunes it): opd's annotations instead."""
        progress, base = self._annotations()
        if self.progress_storage.writes_status():
            self.progress_storage = progress
        if self.diffbase_storage.writes_status():
            self.diffbase_storage = base
        self.in_status = False
        self._opd_status = False

    def essence(self, body: Mapping[str, Any], *, shown: bool = False) -> dict[str, Any]:
        """What a change of ``body`` is measured on, without any storage's own fields; ``shown``:
        as handlers see it, a Secret's values themselves (never to be stored: see ``secret``)."""
        result = essence(body, self.prefix, secret=self.secret and not shown, extra=self.fields,
                         own_status=self._own_status, markers=self.field)
        result = self.progress_storage.clear(essence=result)
        return self.diffbase_storage.clear(essence=result)

    def read(self, body: Mapping[str, Any]) -> State:
        progress_storage, base_storage = self.progress_storage, self.diffbase_storage
        if self._opd_status and not resolve(body, ("status", self.field)):
            progress_storage, base_storage = self._annotations()  # kept there by an earlier fall-back
        base = base_storage.fetch(body=body)
        if self._bound and base_storage.writes_status() is False and isinstance(base, dict) and _OWNER in base:
            owner = base.pop(_OWNER)
            if owner != (body.get("metadata") or {}).get("uid"):
                base = None  # another object's, copied with its annotations: this one is new to opd
        # Whoever may edit the object may write anything there: what is not a diff-base reads as
        # "changed, not known how", never as none (which would be a creation).
        diff_base = base if isinstance(base, str) else dump(base) if isinstance(base, dict) else \
            None if base is None else _UNREADABLE
        listed = progress_storage.records(body)
        if listed is None:  # a storage of the operator's own: the records of the handlers opd knows
            listed = {hid: dict(rec) for hid in self._ids.values()
                      if isinstance(rec := progress_storage.fetch(key=hid, body=body), Mapping)}
        progress: dict[str, dict[str, Any]] = {}
        for key, record in listed.items():
            hid = self._ids.get(key, key)
            if key == LAST_HANDLED or key.startswith(RESULT_PREFIX) or key == "finalizer":
                continue  # opd's other annotations in the same domain
            # An id with a slash is a sub-handler's ("<parent>/<id>") or Kopf's id of a field handler
            # ("fn/spec.size", whose "fn" need not be a handler): kept when it or a prefix is a handler's.
            if self._ids and not any(hid == known or hid.startswith(f"{known}/") for known in self._ids.values()):
                continue  # somebody's own annotation in our domain, or another operator's record
            if _valid_record(record):
                progress[hid] = record
        return State(diff_base, progress, body)

    def write(self, writes: Writes, *, old: State, diff_base: str | None,
              progress: Mapping[str, dict[str, Any] | None]) -> None:
        """Record a new diff-base (if given) and progress (None purges a handler's record)."""
        patch: dict[str, Any] = {}
        body = old.body or {}
        if diff_base is not None and diff_base != old.diff_base:
            try:
                kept: Any = _loads(diff_base)
            except ValueError:
                kept = diff_base  # a digest: stored as it is
            uid = (body.get("metadata") or {}).get("uid")
            if self._bound and self.diffbase_storage.writes_status() is False and isinstance(kept, dict) and uid:
                kept = {**kept, _OWNER: uid}
            self.diffbase_storage.store(body=body, patch=patch, essence=kept)
        for hid, rec in progress.items():
            if old.progress.get(hid) == rec:
                continue
            if rec is None:
                self.progress_storage.purge(key=hid, body=body, patch=patch)
            else:
                self.progress_storage.store(key=hid, record=rec, body=body, patch=patch)  # type: ignore[arg-type]
        status = patch.pop("status", None)
        if status is not None:
            if self.has_status:
                merge_into(writes.status.setdefault("status", {}), status)
            else:
                merge_into(writes.body.setdefault("status", {}), status)
        merge_into(writes.body, patch)

    def confirms(self, response: Mapping[str, Any], diff_base: str | None) -> bool:
        """Whether a status write survived (a structural schema may prune unknown fields)."""
        if not self.in_status or diff_base is None or not self.diffbase_storage.writes_status():
            return True
        base = self.diffbase_storage.fetch(body=response)
        return (base if isinstance(base, str) else dump(base) if isinstance(base, dict) else None) == diff_base


def merge_into(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = value


_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "started": (int, float), "delayed": (int, float), "retries": (int,), "success": (bool,),
    "failure": (bool,), "message": (str,),
}


def _valid_record(record: Any) -> bool:
    """A record opd can resume from: another tool's (Kopf's, with ISO times) counts as none."""
    if not isinstance(record, dict):
        return False
    for key, types in _RECORD_TYPES.items():
        value = record.get(key)
        if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            return False
        if isinstance(value, int | float) and not (math.isfinite(value) and abs(value) <= 1e12):
            return False  # no time or count opd wrote
    return True

