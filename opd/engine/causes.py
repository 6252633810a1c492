"""Why an object is processed (its cause), and which handlers that calls for.

One pure function, ``detect()``, computed once per change: every handler's
filters (``labels``, ``annotations``, ``value``, ``when``) are evaluated exactly
once, and everything the processor decides — the cause, the handlers to run,
the timers and daemons to keep, whether opd may write to the object at all and
whether it holds a finalizer — is derived from that one evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opd.engine import arguments
from opd.engine.diffs import diff, shown
from opd.registry import SPAWNING, STATEFUL, Handler, Reason, matches, resolve_field, value_ok
from opd.typedefs import Diff

ByReason = Mapping[Reason, list[Handler]]
Selected = list[tuple[Handler, dict[str, Any]]]  # a handler with its own kwargs


@dataclass
class Change:
    reason: Reason | None  # the cause to handle now, or None
    handlers: Selected = field(default_factory=list)  # change/delete handlers to run for it
    spawning: list[Handler] = field(default_factory=list)  # timers and daemons that match
    # Some stateful handler of this operator selects the object: only then may opd write
    # to it (diff-base, markers, finalizer). Event handlers never write, so they do not count.
    in_scope: bool = False
    wants_finalizer: bool = False  # delete handlers (not optional), timers or daemons hold it


def _field_kwargs(handler: Handler, kwargs: dict[str, Any], old: Any, new: Any,
                  seen: Any) -> tuple[bool, dict[str, Any]]:
    """A field-scoped handler's own kwargs (the field's old/new/diff), and whether this change
    is one for it: the field changed, and its ``old=``/``new=`` value filters accept the change.
    ``seen`` is the new essence as handlers see it (a Secret's values, where ``new`` has digests)."""
    assert handler.field is not None
    was, old_value = resolve_field(old, handler.field)
    now, new_value = resolve_field(new, handler.field)
    _, seen_value = resolve_field(seen, handler.field)
    changed = (was, old_value) != (now, new_value)
    if changed and (handler.old is not None or handler.new is not None):  # on.field, or on.update(field=)
        changed = value_ok(was, old_value, handler.old, **kwargs) and value_ok(now, seen_value, handler.new, **kwargs)
    return changed, arguments.field_scoped(kwargs, old=old_value, new=seen_value,
                                           diff=Diff(shown(diff(old_value, new_value), seen_value)))


def detect(*, body: Mapping[str, Any], by_reason: ByReason, kwargs: dict[str, Any], old: Any, new: Any,
           diff_base: str | None, current: str, first_seen: bool, has_progress: bool,
           finalizer: str, seen: Any = None) -> Change:
    """The cause of this change and what follows from it.

    ``old``/``new`` are the essences (``old`` is None without a diff-base, or when only its
    digest is kept); ``diff_base``/``current`` their stored forms, compared for "changed";
    ``seen`` the new essence as handlers are shown it (by default ``new``).
    """
    seen = new if seen is None else seen
    meta = body.get("metadata") or {}
    deleting = bool(meta.get("deletionTimestamp"))
    holding = finalizer in (meta.get("finalizers") or ())
    if deleting:
        reason: Reason | None = Reason.DELETE
    elif diff_base is None:
        reason = Reason.CREATE
    elif diff_base != current:
        reason = Reason.UPDATE
    elif by_reason.get(Reason.RESUME) and (first_seen or has_progress):
        reason = Reason.RESUME
    else:
        reason = None

    if reason is not None:
        kwargs = arguments.caused(kwargs, str(reason))
    change = Change(reason=None)
    candidates: Selected = []
    for r, handlers in by_reason.items():
        if r not in STATEFUL:
            continue
        for handler in handlers:
            own = kwargs
            field_changed = True
            if handler.field is not None and r in (Reason.UPDATE, Reason.FIELD):
                field_changed, own = _field_kwargs(handler, kwargs, old, new, seen)
            if not matches(handler, body, own):  # the one evaluation of its filters for this change
                continue
            change.in_scope = True
            if r in SPAWNING:
                change.spawning.append(handler)
                change.wants_finalizer = True
                continue
            if r == Reason.DELETE and not handler.optional:
                change.wants_finalizer = True
            if _runs_for(handler, reason, field_changed, first_seen):
                candidates.append((handler, own))

    if reason == Reason.DELETE:
        # With opd's finalizer, the deletion waits for opd: its delete handlers run (or none match,
        # and opd lets go). Without it, only optional delete handlers run, best effort.
        runnable = [(h, k) for h, k in candidates if holding or h.optional]
        change.reason = reason if holding or runnable else None
        change.handlers = runnable
    elif reason is not None and change.in_scope:
        change.reason = reason
        change.handlers = candidates
    return change


def _runs_for(handler: Handler, reason: Reason | None, field_changed: bool, first_seen: bool) -> bool:
    if reason is None:
        return False
    if handler.reason == Reason.RESUME and handler.deleted and reason == Reason.DELETE:
        return first_seen  # Kopf's on.resume(deleted=True): found being deleted when the operator starts
    if handler.reason == Reason.FIELD:
        return reason in (Reason.CREATE, Reason.UPDATE) and field_changed
    if handler.reason == Reason.UPDATE and handler.field is not None:
        return reason == Reason.UPDATE and field_changed
    return handler.reason == reason
