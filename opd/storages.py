"""Kopf's progress and diff-base storages, by Kopf's names: where an operator keeps, on each object,
which handlers ran (progress) and the last handled state (the diff-base).

Set one in a startup handler (``settings.persistence.progress_storage = opd.StatusProgressStorage(
field='status.my-op')``) and opd keeps its markers there; left unset (None), opd keeps its own
(README: What opd writes, and where). The classes write into a merge-patch (``patch``): opd sends
``patch.status`` to the status subresource with the handlers' results, the rest to the object, in
the order that never loses a result. Subclass ``ProgressStorage``/``DiffBaseStorage`` for a place of
your own, as with Kopf.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, TypedDict

KOPF_PREFIX = "kopf.zalando.org"  # Kopf's default annotation domain, as its storages default to it


class ProgressRecord(TypedDict, total=False):
    """One handler's progress. opd's own fields: ``started`` and ``delayed`` (Unix times), ``retries``,
    ``success``/``failure``, ``message``."""

    started: float | None
    delayed: float | None
    retries: int | None
    success: bool | None
    failure: bool | None
    message: str | None
    subrefs: Collection[str] | None


def parse_field(spec: str | Sequence[str], name: str = "kopf") -> tuple[str, ...]:
    """A field as Kopf takes it ('status.{name}.progress' or a tuple of keys) as a path."""
    path = tuple(spec.format(name=name).split(".")) if isinstance(spec, str) else tuple(spec)
    if not path or not all(isinstance(key, str) and key for key in path):
        raise ValueError(f"a storage field must be 'a.b.c' or a tuple of keys, not {spec!r}")
    return path


def resolve(body: Mapping[str, Any] | None, path: tuple[str, ...], default: Any = None) -> Any:
    node: Any = body
    for key in path:
        # dict first: what the API server sent is one, and isinstance on an ABC costs several times more
        if not (type(node) is dict or isinstance(node, Mapping)) or key not in node:
            return default
        node = node[key]
    return node


def ensure(patch: MutableMapping[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = patch
    for key in path[:-1]:
        inner = node.get(key)
        if not (type(inner) is dict or isinstance(inner, MutableMapping)):
            inner = node[key] = {}
        node = inner
    node[path[-1]] = value


def remove(data: MutableMapping[str, Any], path: tuple[str, ...]) -> None:
    """Take ``path`` out of ``data`` and the dicts it leaves empty."""
    parent = resolve(data, path[:-1]) if len(path) > 1 else data
    if isinstance(parent, MutableMapping):
        parent.pop(path[-1], None)
        if not parent and len(path) > 1:
            remove(data, path[:-1])


def key_name(key: str) -> str:
    """A valid annotation name (at most 63 characters) for a handler id (``<lambda>``, ``Cls.fn``,
    ``parent/child``): characters outside the allowed ones become '-', a long one ends in a digest."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-._") or "handler"
    if name != key or len(name) > 63:
        name = f"{name[:54]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    return name


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", prefix):
        raise ValueError(f"a storage prefix must be a DNS subdomain (e.g. 'my-op.example.com'), not {prefix!r}")
    return prefix


def _any_status(answers: Iterable[bool | None]) -> bool | None:
    found = list(answers)
    return True if True in found else None if None in found else False


# -- progress ---------------------------------------------------------------------------------------------------------

class ProgressStorage(abc.ABC):
    """Where each handler's progress record is kept: one record per handler id (``key``)."""

    @abc.abstractmethod
    def fetch(self, *, key: str, body: Mapping[str, Any]) -> ProgressRecord | None:
        raise NotImplementedError

    @abc.abstractmethod
    def store(self, *, key: str, record: ProgressRecord, body: Mapping[str, Any],
              patch: MutableMapping[str, Any]) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    def purge(self, *, key: str, body: Mapping[str, Any], patch: MutableMapping[str, Any]) -> None:
        raise NotImplementedError

    def touch(self, *, body: Mapping[str, Any], patch: MutableMapping[str, Any],  # noqa: B027
              value: str | None) -> None:
        """Kopf writes a dummy value to get a new event for a delayed handler; opd keeps its own timers,
        so it never calls this (kept for subclasses written for Kopf)."""

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        """The essence without this storage's own fields (they must never count as a change)."""
        return essence

    def flush(self) -> None:  # noqa: B027
        """Nothing is buffered by opd's storages."""

    def records(self, body: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
        """Every record kept on ``body`` (sub-handlers' too), or None when this storage cannot list them
        (a subclass: opd then fetches the records of the handlers it knows)."""
        return None

    def writes_status(self) -> bool | None:
        """Whether ``store`` writes into ``.status`` (None: unknown, a storage of the operator's own)."""
        return None


class AnnotationsProgressStorage(ProgressStorage):
    """Progress in annotations ``<prefix>/<handler id>`` (a JSON record each)."""

    def __init__(self, *, prefix: str = KOPF_PREFIX, verbose: bool = False, touch_key: str = "touch-dummy",
                 v1: bool = True) -> None:
        self.prefix = _check_prefix(prefix)
        self.verbose = verbose  # Kopf's human-readable extras; opd's records are readable as they are
        self.touch_key = touch_key
        self.v1 = v1

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key_name(key)}"

    def writes_status(self) -> bool | None:
        return False

    def fetch(self, *, key: str, body: Mapping[str, Any]) -> ProgressRecord | None:
        return self._parse(resolve(body, ("metadata", "annotations", self._key(key))))[1]

    def store(self, *, key: str, record: ProgressRecord, body: Mapping[str, Any],
              patch: MutableMapping[str, Any]) -> None:
        # The annotation name alone may not say which handler (shortened, or a sub-handler's): the record does.
        value = {**record, "id": key} if key_name(key) != key else dict(record)
        ensure(patch, ("metadata", "annotations", self._key(key)), json.dumps(value, sort_keys=True,
                                                                              separators=(",", ":")))

    def purge(self, *, key: str, body: Mapping[str, Any], patch: MutableMapping[str, Any]) -> None:
        ensure(patch, ("metadata", "annotations", self._key(key)), None)

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        annotations = resolve(essence, ("metadata", "annotations"))
        if isinstance(annotations, MutableMapping):
            for name in [n for n in annotations if n.startswith(f"{self.prefix}/")]:
                del annotations[name]
            if not annotations:
                remove(essence, ("metadata", "annotations"))
        return essence

    @staticmethod
    def _parse(text: Any) -> tuple[str | None, ProgressRecord | None]:
        if not isinstance(text, str):
            return None, None
        try:
            record = json.loads(text)
        except ValueError:
            return None, None
        if not isinstance(record, dict):
            return None, None
        key = record.pop("id", None)
        return (key if isinstance(key, str) else None), record  # type: ignore[return-value]

    def records(self, body: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
        found: dict[str, dict[str, Any]] = {}
        for name, text in (resolve(body, ("metadata", "annotations")) or {}).items():
            if not name.startswith(f"{self.prefix}/"):
                continue
            key, record = self._parse(text)
            if record is not None:
                found[key or name[len(self.prefix) + 1:]] = dict(record)
        return found


class StatusProgressStorage(ProgressStorage):
    """Progress in the object's status: ``<field>.<handler id>`` (``status.kopf.progress`` by default)."""

    def __init__(self, *, name: str = "kopf", field: str | Sequence[str] = "status.{name}.progress",
                 touch_field: str | Sequence[str] = "status.{name}.dummy") -> None:
        self.name = name
        self.field = parse_field(field, name)
        self.touch_field = parse_field(touch_field, name)

    def writes_status(self) -> bool | None:
        return self.field[0] == "status"

    def fetch(self, *, key: str, body: Mapping[str, Any]) -> ProgressRecord | None:
        record = resolve(body, (*self.field, key))
        return dict(record) if isinstance(record, Mapping) else None  # type: ignore[return-value]

    def store(self, *, key: str, record: ProgressRecord, body: Mapping[str, Any],
              patch: MutableMapping[str, Any]) -> None:
        before = resolve(body, (*self.field, key))
        # A merge-patch merges dicts: the keys a record no longer has are nulled.
        gone = {k: None for k in before if k not in record} if isinstance(before, Mapping) else {}
        ensure(patch, (*self.field, key), {**gone, **record})

    def purge(self, *, key: str, body: Mapping[str, Any], patch: MutableMapping[str, Any]) -> None:
        ensure(patch, (*self.field, key), None)

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        remove(essence, self.field)
        return essence

    def records(self, body: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
        container = resolve(body, self.field)
        if not isinstance(container, Mapping):
            return {}
        return {k: dict(v) for k, v in container.items() if isinstance(v, Mapping)}


class MultiProgressStorage(ProgressStorage):
    """Reads from the first storage that has a record, writes to all of them."""

    def __init__(self, storages: Collection[ProgressStorage]) -> None:
        self.storages = list(storages)
        if not all(isinstance(s, ProgressStorage) for s in self.storages):
            raise TypeError("MultiProgressStorage takes ProgressStorage instances")

    def fetch(self, *, key: str, body: Mapping[str, Any]) -> ProgressRecord | None:
        for storage in self.storages:
            record = storage.fetch(key=key, body=body)
            if record is not None:
                return record
        return None

    def store(self, *, key: str, record: ProgressRecord, body: Mapping[str, Any],
              patch: MutableMapping[str, Any]) -> None:
        for storage in self.storages:
            storage.store(key=key, record=record, body=body, patch=patch)

    def purge(self, *, key: str, body: Mapping[str, Any], patch: MutableMapping[str, Any]) -> None:
        for storage in self.storages:
            storage.purge(key=key, body=body, patch=patch)

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        for storage in self.storages:
            essence = storage.clear(essence=essence)
        return essence

    def writes_status(self) -> bool | None:
        return _any_status(s.writes_status() for s in self.storages)

    def records(self, body: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
        found: dict[str, dict[str, Any]] = {}
        for storage in reversed(self.storages):  # the first storage's record wins
            listed = storage.records(body)
            if listed is None:
                return None
            found.update(listed)
        return found


class _ReadOnlyStatusProgressStorage(StatusProgressStorage):
    """Records an operator kept in the status before: read, never written (Kopf's transition)."""

    def store(self, *, key: str, record: ProgressRecord, body: Mapping[str, Any],
              patch: MutableMapping[str, Any]) -> None:
        pass

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        return essence  # the essence holds no status field

    def writes_status(self) -> bool | None:
        return False


class SmartProgressStorage(MultiProgressStorage):
    """Kopf's default: annotations ``<prefix>/<id>``, written and read first; then records left in the
    status field (``status.kopf.progress``) by older versions, read only."""

    def __init__(self, *, name: str = "kopf", field: str | Sequence[str] = "status.{name}.progress",
                 touch_key: str = "touch-dummy", touch_field: str | Sequence[str] = "status.{name}.dummy",
                 prefix: str = KOPF_PREFIX, v1: bool = True, verbose: bool = False) -> None:
        super().__init__([
            AnnotationsProgressStorage(prefix=prefix, verbose=verbose, touch_key=touch_key, v1=v1),
            _ReadOnlyStatusProgressStorage(name=name, field=field, touch_field=touch_field),
        ])


# -- diff-base --------------------------------------------------------------------------------------------------------

class DiffBaseStorage(abc.ABC):
    """Where the last handled essence of an object is kept (what its next change is measured on)."""

    def __init__(self, ignored_fields: Iterable[str | Sequence[str]] | None = None) -> None:
        self.ignored_fields = [parse_field(f) for f in ignored_fields or ()]

    def build(self, *, body: Mapping[str, Any],
              extra_fields: Iterable[str | Sequence[str]] | None = None) -> dict[str, Any]:
        """An object's essence as Kopf measures it: all but status and system metadata (labels and
        annotations stay), plus ``extra_fields``, less this storage's own fields and ``ignored_fields``.
        (opd's engine makes its own, which also hides Secret values, and then calls ``clear``.)"""
        essence = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("apiVersion", "kind", "metadata",
                                                                               "status")}
        meta = body.get("metadata") or {}
        for name in ("labels", "annotations"):
            values = {k: v for k, v in (meta.get(name) or {}).items()
                      if k != "kubectl.kubernetes.io/last-applied-configuration"}
            if values:
                essence.setdefault("metadata", {})[name] = values
        for spec in extra_fields or ():
            path = parse_field(spec)
            found = resolve(body, path, _ABSENT)
            if found is not _ABSENT:
                ensure(essence, path, copy.deepcopy(found))
        return self.clear(essence=essence)

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        """The essence without this storage's own fields and without ``ignored_fields``."""
        for path in self.ignored_fields:
            remove(essence, path)
        return essence

    def writes_status(self) -> bool | None:
        """Whether ``store`` writes into ``.status`` (None: unknown, a storage of the operator's own)."""
        return None

    @abc.abstractmethod
    def fetch(self, *, body: Mapping[str, Any]) -> Any:
        """The stored essence (a dict, or the text opd stored: a digest for a huge object), or None."""
        raise NotImplementedError

    @abc.abstractmethod
    def store(self, *, body: Mapping[str, Any], patch: MutableMapping[str, Any], essence: Any) -> None:
        raise NotImplementedError


_ABSENT = object()


def _encode(essence: Any) -> str:
    """JSON (sorted, compact: the text opd compares), or a text as it is (opd's digest of a huge essence)."""
    return essence if isinstance(essence, str) else json.dumps(essence, sort_keys=True, separators=(",", ":"))


def _decode(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # a digest


class AnnotationsDiffBaseStorage(DiffBaseStorage):
    """The diff-base as JSON in the annotation ``<prefix>/<key>``."""

    def __init__(self, name: str | None = None, *, prefix: str = KOPF_PREFIX,
                 key: str = "last-handled-configuration", v1: bool = True,
                 ignored_fields: Iterable[str | Sequence[str]] | None = None) -> None:
        super().__init__(ignored_fields)
        if name is not None:  # Kopf's docs also spell it whole: AnnotationsDiffBaseStorage('example.com/last')
            if not isinstance(name, str) or name.count("/") != 1:
                raise ValueError(f"a diff-base annotation name must be '<prefix>/<key>', not {name!r}")
            prefix, key = name.split("/")
        self.prefix = _check_prefix(prefix)
        if not isinstance(key, str) or key_name(key) != key:
            raise ValueError(f"a diff-base key must be a valid annotation name (at most 63 of [A-Za-z0-9._-]), "
                             f"not {key!r}")
        self.key = key
        self.v1 = v1

    @property
    def annotation(self) -> str:
        return f"{self.prefix}/{self.key}"

    def writes_status(self) -> bool | None:
        return False

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        remove(essence, ("metadata", "annotations", self.annotation))
        return super().clear(essence=essence)

    def fetch(self, *, body: Mapping[str, Any]) -> Any:
        return _decode(resolve(body, ("metadata", "annotations", self.annotation)))

    def store(self, *, body: Mapping[str, Any], patch: MutableMapping[str, Any], essence: Any) -> None:
        ensure(patch, ("metadata", "annotations", self.annotation), _encode(essence))


class StatusDiffBaseStorage(DiffBaseStorage):
    """The diff-base as one JSON string in the status: ``status.kopf.last-handled-configuration`` by default."""

    def __init__(self, *, name: str = "kopf", field: str | Sequence[str] = "status.{name}.last-handled-configuration",
                 ignored_fields: Iterable[str | Sequence[str]] | None = None) -> None:
        super().__init__(ignored_fields)
        self.name = name
        self.field = parse_field(field, name)

    def writes_status(self) -> bool | None:
        return self.field[0] == "status"

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        remove(essence, self.field)
        return super().clear(essence=essence)

    def fetch(self, *, body: Mapping[str, Any]) -> Any:
        return _decode(resolve(body, self.field))

    def store(self, *, body: Mapping[str, Any], patch: MutableMapping[str, Any], essence: Any) -> None:
        ensure(patch, self.field, _encode(essence))  # one string: a merge-patch never merges into it


class MultiDiffBaseStorage(DiffBaseStorage):
    """Reads from the first storage that has a diff-base, writes to all of them."""

    def __init__(self, storages: Collection[DiffBaseStorage]) -> None:
        super().__init__()
        self.storages = list(storages)
        if not all(isinstance(s, DiffBaseStorage) for s in self.storages):
            raise TypeError("MultiDiffBaseStorage takes DiffBaseStorage instances")

    def clear(self, *, essence: dict[str, Any]) -> dict[str, Any]:
        for storage in self.storages:
            essence = storage.clear(essence=essence)
        return essence

    def writes_status(self) -> bool | None:
        return _any_status(s.writes_status() for s in self.storages)

    def fetch(self, *, body: Mapping[str, Any]) -> Any:
        for storage in self.storages:
            found = storage.fetch(body=body)
            if found is not None:
                return found
        return None

    def store(self, *, body: Mapping[str, Any], patch: MutableMapping[str, Any], essence: Any) -> None:
        for storage in self.storages:
            storage.store(body=body, patch=patch, essence=essence)
