"""Why an object is processed (its cause), and which handlers that calls for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opd.engine.diffs import diff
from opd.registry import SPAWNING, Handler, Reason, matches, resolve_field, value_ok

ByReason = Mapping[Reason, list[Handler]]


def detect(*, meta: Mapping[str, Any], diff_base: str | None, current: str, first_seen: bool,
           has_progress: bool, finalizer: str, by_reason: ByReason) -> Reason | None:
    if meta.get("deletionTimestamp"):
        return Reason.DELETE if finalizer in (meta.get("finalizers") or ()) else None
    if diff_base is None:
        return Reason.CREATE
    if diff_base != current:
        return Reason.UPDATE
    if by_reason.get(Reason.RESUME) and (first_seen or has_progress):
        return Reason.RESUME
    return None


def select(reason: Reason, by_reason: ByReason, body: Mapping[str, Any], kwargs: dict[str, Any],
           old: Any, new: Any) -> list[tuple[Handler, dict[str, Any]]]:
    """Matching handlers for a cause, each with its own kwargs: a field-scoped
    handler sees that field's old/new/diff, and runs on a change only if the field changed."""
    candidates = list(by_reason.get(reason, ()))
    if reason in (Reason.CREATE, Reason.UPDATE):
        candidates += by_reason.get(Reason.FIELD, ())
    chosen = []
    for handler in candidates:
        own = kwargs
        if handler.field is not None and handler.reason in (Reason.UPDATE, Reason.FIELD):
            was, old_value = resolve_field(old, handler.field)
            now, new_value = resolve_field(new, handler.field)
            if (was, old_value) == (now, new_value):
                continue
            wanted_old = value_ok(was, old_value, handler.old, **kwargs)
            wanted_new = value_ok(now, new_value, handler.new, **kwargs)
            if handler.reason == Reason.FIELD and not (wanted_old and wanted_new):
                continue
            own = {**kwargs, "old": old_value, "new": new_value, "diff": diff(old_value, new_value)}
        if matches(handler, body, own):
            chosen.append((handler, own))
    return chosen


def spawning(by_reason: ByReason, body: Mapping[str, Any], kwargs: dict[str, Any]) -> list[Handler]:
    return [h for r in SPAWNING for h in by_reason.get(r, ()) if matches(h, body, kwargs)]


def needs_finalizer(by_reason: ByReason, body: Mapping[str, Any], kwargs: dict[str, Any]) -> bool:
    """Delete handlers (unless optional), timers and daemons keep the object until opd lets go."""
    if any(not h.optional and matches(h, body, kwargs) for h in by_reason.get(Reason.DELETE, ())):
        return True
    return bool(spawning(by_reason, body, kwargs))
