"""causes.detect(): the cause of a change, computed once, as a pure function."""

from __future__ import annotations

from typing import Any

import opd
from opd.engine import causes
from opd.engine.state import dump
from opd.registry import Handler, OperatorRegistry, Reason

FINALIZER = "opd.dev/finalizer"


def _by_reason(registry: OperatorRegistry) -> dict[Reason, list[Handler]]:
    handlers = registry.handlers
    return {r: [h for h in handlers if h.reason == r] for r in Reason}


def _body(labels: dict[str, str] | None = None, *, deleting: bool = False, finalizers: list[str] | None = None,
          spec: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                            "labels": labels or {}, "finalizers": finalizers or []}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "spec": spec or {}}


def _detect(registry: OperatorRegistry, body: dict[str, Any], *, old: Any = None, first_seen: bool = True,
            has_progress: bool = False) -> causes.Change:
    new = {"spec": body.get("spec") or {}}
    return causes.detect(body=body, by_reason=_by_reason(registry), kwargs={"body": body}, old=old, new=new,
                         diff_base=None if old is None else dump(old), current=dump(new), first_seen=first_seen,
                         has_progress=has_progress, finalizer=FINALIZER)


def test_unlabelled_object_is_out_of_scope_and_gets_no_finalizer() -> None:
    registry = OperatorRegistry()
    opd.on.create("configmaps", registry=registry, labels={"x": opd.PRESENT})(lambda **_: None)
    opd.on.delete("configmaps", registry=registry, labels={"x": opd.PRESENT})(lambda **_: None)
    change = _detect(registry, _body())
    assert (change.reason, change.in_scope, change.wants_finalizer, change.handlers) == (None, False, False, [])
    labelled = _detect(registry, _body({"x": "1"}))
    assert labelled.reason == Reason.CREATE and labelled.in_scope and labelled.wants_finalizer
    # Two lambdas share opd's short id ("<lambda>"): each takes Kopf's, its file and line.
    assert [h.id for h, _ in labelled.handlers] == ["lambda:test_causes.py:39"]


def test_when_runs_once_per_handler_per_change() -> None:
    registry = OperatorRegistry()
    calls: list[str] = []

    def when(**_: Any) -> bool:
        calls.append("x")
        return True

    opd.on.create("configmaps", registry=registry, when=when)(lambda **_: None)
    opd.on.timer("configmaps", registry=registry, interval=1, when=when, id="t")(lambda **_: None)
    opd.on.delete("configmaps", registry=registry, when=when, id="d")(lambda **_: None)
    change = _detect(registry, _body())
    assert len(calls) == 3  # three handlers, each evaluated once
    assert change.wants_finalizer and [h.id for h in change.spawning] == ["t"]


def test_a_deletion_held_by_opd_is_a_delete_cause_even_with_no_handler_matching() -> None:
    registry = OperatorRegistry()
    opd.on.delete("configmaps", registry=registry, labels={"x": "1"})(lambda **_: None)
    change = _detect(registry, _body(deleting=True, finalizers=[FINALIZER]), old={"spec": {}})
    assert change.reason == Reason.DELETE and change.handlers == []  # nothing to run: opd lets go


def test_optional_delete_runs_without_opds_finalizer() -> None:
    registry = OperatorRegistry()
    opd.on.delete("configmaps", registry=registry, optional=True)(lambda **_: None)
    change = _detect(registry, _body(deleting=True, finalizers=["someone.else/keep"]), old={"spec": {}})
    assert change.reason == Reason.DELETE and len(change.handlers) == 1
    assert not change.wants_finalizer  # optional: it never holds the object


def test_mandatory_delete_without_finalizer_is_not_run() -> None:
    registry = OperatorRegistry()
    opd.on.delete("configmaps", registry=registry)(lambda **_: None)
    change = _detect(registry, _body(deleting=True, finalizers=["someone.else/keep"]), old={"spec": {}})
    assert change.reason is None


def test_field_handler_runs_only_when_its_field_changed_and_its_filters_pass() -> None:
    registry = OperatorRegistry()
    opd.on.field("configmaps", registry=registry, field="spec.size", new=lambda v, **_: v > 1, id="f")(
        lambda **_: None)
    opd.on.update("configmaps", registry=registry, field="spec.other", id="u")(lambda **_: None)
    grew = _detect(registry, _body(spec={"size": 2}), old={"spec": {"size": 1}})
    assert grew.reason == Reason.UPDATE and [h.id for h, _ in grew.handlers] == ["f"]
    own = grew.handlers[0][1]
    assert (own["old"], own["new"], own["reason"]) == (1, 2, "update")
    shrank = _detect(registry, _body(spec={"size": 0}), old={"spec": {"size": 1}})
    assert shrank.reason == Reason.UPDATE and shrank.handlers == [] and shrank.in_scope
    created = _detect(registry, _body(spec={"size": 5}))
    assert created.reason == Reason.CREATE and [h.id for h, _ in created.handlers] == ["f"]


def test_resume_only_on_first_sight_or_with_progress() -> None:
    registry = OperatorRegistry()
    opd.on.resume("configmaps", registry=registry)(lambda **_: None)
    same = {"spec": {}}
    assert _detect(registry, _body(), old=same, first_seen=True).reason == Reason.RESUME
    assert _detect(registry, _body(), old=same, first_seen=False).reason is None
    assert _detect(registry, _body(), old=same, first_seen=False, has_progress=True).reason == Reason.RESUME


def test_event_handlers_alone_never_put_an_object_in_scope() -> None:
    registry = OperatorRegistry()
    opd.on.event("configmaps", registry=registry)(lambda **_: None)
    change = _detect(registry, _body())
    assert not change.in_scope and change.reason is None


def test_update_with_field_takes_old_and_new_filters_as_kopf_does() -> None:
    registry = OperatorRegistry()
    opd.on.update("configmaps", registry=registry, field="spec.size", old=1, new=opd.PRESENT, id="u")(
        lambda **_: None)
    from_one = _detect(registry, _body(spec={"size": 2}), old={"spec": {"size": 1}})
    assert [h.id for h, _ in from_one.handlers] == ["u"]
    from_three = _detect(registry, _body(spec={"size": 2}), old={"spec": {"size": 3}})
    assert from_three.reason == Reason.UPDATE and from_three.handlers == []


def test_posting_level_takes_logging_numbers_as_kopf_users_set_them() -> None:
    import logging

    from opd.engine.events import _threshold
    assert _threshold(logging.WARNING) == 30 and _threshold("warning") == 30 and _threshold("ERROR") == 40
