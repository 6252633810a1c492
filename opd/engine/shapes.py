"""What a watch line and a watched object must look like before the engine trusts them.

The API server validates metadata, but a proxy, a buggy aggregated API server or a
truncated stream can bring anything, and a custom resource's own fields may hold any
JSON the schema lets through. Everything past this module reads ``metadata`` as
Kubernetes defines it (``uid``, ``name``, ``resourceVersion`` strings; ``labels`` and
``annotations`` string maps; ``finalizers`` a list of strings; ``deletionTimestamp`` a
string), so an event or object that is not so is refused here, with a short reason the
caller says in one line; nothing of it reaches the processing.

Nesting is bounded by the parser: orjson refuses a document nested past 1024 levels
(such a line is "not JSON" here). Checking depth again on every object would cost more
than parsing it; the few steps that recurse (diffs, JSON encoding of the diff-base) are
guarded where they run instead (``processing``: an object they cannot walk is skipped
with one line).
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_LINE = 16 * 2**20  # a watch line: etcd keeps objects of ~1.5 MiB; 16 MiB leaves room for any encoding of one
_SHOWN = 80  # characters of a name or reason shown in a message

EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
_STRING_MAPS = ("labels", "annotations")


class BadShape(ValueError):
    """A watch line or object the engine cannot trust; ``str()`` is a short reason, one line."""


def short(value: Any) -> str:
    """A value as a message shows it: one line, at most ``_SHOWN`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def parse_line(line: bytes | bytearray) -> tuple[str, dict[str, Any]]:
    """One line of a watch stream as (type, object); raises BadShape. The object of an
    ADDED/MODIFIED/DELETED event is checked whole (``check_object``); ERROR and BOOKMARK
    objects only need to be JSON objects (``error_status``, ``bookmark_version`` read them)."""
    if len(line) > MAX_LINE:
        raise BadShape(f"a line of {len(line)} bytes (over {MAX_LINE})")
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadShape(f"not JSON ({short(str(exc))})") from None
    if not isinstance(event, dict):
        raise BadShape(f"a JSON {_json_type(event)}, not an event")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise BadShape(f"an event without a type (type: {short(kind)})")
    if kind not in EVENT_TYPES:
        raise BadShape(f"an event of unknown type {short(kind)}")
    obj = event.get("object")
    if not isinstance(obj, dict):
        raise BadShape(f"a {kind} event without an object (object: {_json_type(obj)})")
    if kind not in ("ERROR", "BOOKMARK"):
        check_object(obj)
    return kind, obj


def check_object(obj: Any) -> None:
    """Raise BadShape unless ``obj`` is an object the engine can handle (see the module's docstring).
    It reads metadata only: its cost does not grow with the object's size."""
    if not isinstance(obj, dict):
        raise BadShape(f"a JSON {_json_type(obj)}, not an object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise BadShape(f"an object without metadata (metadata: {_json_type(meta)})")
    for key in ("uid", "name", "resourceVersion"):
        value = meta.get(key)
        if not isinstance(value, str) or not value:
            raise BadShape(f"an object whose metadata.{key} is {_describe(value)}")
    for key in ("namespace", "deletionTimestamp"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise BadShape(f"{where(obj)}: metadata.{key} is {_describe(value)}")
    for key in _STRING_MAPS:
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadShape(f"{where(obj)}: metadata.{key} is {_describe(value)}, not a map")
        for item in value.values():
            if not isinstance(item, str):
                raise BadShape(f"{where(obj)}: metadata.{key} has a value that is {_describe(item)}")
    finalizers = meta.get("finalizers")
    if finalizers is not None and not (isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)):
        raise BadShape(f"{where(obj)}: metadata.finalizers is not a list of strings")


def error_status(obj: dict[str, Any]) -> tuple[int, str, str]:
    """An ERROR event's Status as (HTTP error code, reason, message); whatever is odd in it reads as a 500."""
    code = obj.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
        code = 500
    reason, message = obj.get("reason"), obj.get("message")
    return code, short(reason) if isinstance(reason, str) else "", short(message) if isinstance(message, str) else ""


def bookmark_version(obj: dict[str, Any]) -> str | None:
    """A BOOKMARK's resourceVersion; None when it carries none that can be resumed from."""
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version and len(version) <= 64 else None


def where(obj: dict[str, Any]) -> str:
    """``namespace/name`` of a checked-so-far object, for messages."""
    meta = obj.get("metadata") or {}
    name, namespace = short(meta.get("name")), meta.get("namespace")
    return f"{short(namespace)}/{name}" if isinstance(namespace, str) and namespace else name


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    if value == "":
        return "empty"
    return f"a JSON {_json_type(value)}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
