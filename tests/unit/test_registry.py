"""Unit tests for opd/registry.py and opd/on.py: registering handlers, filtering, label selectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import opd
from opd.registry import (
    ErrorsMode,
    Handler,
    OperatorRegistry,
    Reason,
    accepted_kwargs,
    get_default_registry,
    matches,
)
from opd.resources import ResourceRef

KEX = ResourceRef.parse("kopf.dev", "v1", "kopfexamples")


def fn_body(body: Any, **_: Any) -> None:
    pass


def _handler(fn: Callable[..., Any] = fn_body, *, id: str = "h", reason: Reason = Reason.CREATE,
             resource: ResourceRef = KEX, **kw: Any) -> Handler:
    return Handler(fn=fn, id=id, reason=reason, resource=resource, accepts=accepted_kwargs(fn), **kw)


def _body(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "namespace": "ns"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"field": 1}}


# --- decorators ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("decorator", "reason"), [
    (opd.on.create, Reason.CREATE),
    (opd.on.update, Reason.UPDATE),
    (opd.on.resume, Reason.RESUME),
    (opd.on.delete, Reason.DELETE),
    (opd.on.event, Reason.EVENT),
])
def test_decorators_register_with_reason(decorator: Callable[..., Any], reason: Reason) -> None:
    registry = OperatorRegistry()
    before = len(get_default_registry().handlers)

    def handler_fn(**_: Any) -> None:
        pass

    returned = decorator("kopf.dev", "v1", "kopfexamples", registry=registry)(handler_fn)
    assert returned is handler_fn
    assert len(registry.handlers) == 1
    (handler,) = registry.handlers
    assert handler.fn is handler_fn
    assert handler.reason is reason
    assert handler.resource == KEX
    assert len(get_default_registry().handlers) == before  # the explicit registry only


def test_decorator_options_are_kept() -> None:
    registry = OperatorRegistry()

    def when(**_: Any) -> bool:
        return True

    @opd.on.delete("kopfexamples", registry=registry, labels={"a": "b"}, annotations={"c": opd.PRESENT},
                   when=when, errors="permanent", timeout=3.0, retries=4, backoff=0.5, optional=True)
    def fn(**_: Any) -> None:
        pass

    (h,) = registry.handlers
    assert h.labels == {"a": "b"}
    assert h.annotations == {"c": opd.PRESENT}
    assert h.when is when
    assert h.errors is ErrorsMode.PERMANENT
    assert (h.timeout, h.retries, h.backoff, h.optional) == (3.0, 4, 0.5, True)


def test_decorator_defaults() -> None:
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(fn_body)
    opd.on.event("kopfexamples", registry=registry)(fn_body)
    create, event = registry.handlers
    assert create.errors is ErrorsMode.TEMPORARY
    assert (create.timeout, create.retries, create.backoff, create.optional) == (None, None, None, False)
    assert create.labels is None and create.annotations is None and create.when is None
    assert event.errors is ErrorsMode.IGNORED


def test_decorator_rejects_bad_resource_at_decoration() -> None:
    with pytest.raises(opd.ConfigError):
        opd.on.create(registry=OperatorRegistry())
    with pytest.raises(ValueError, match="bogus"):
        opd.on.create("kopfexamples", registry=OperatorRegistry(), errors="bogus")(fn_body)


def test_decorator_keyword_resource() -> None:
    registry = OperatorRegistry()
    opd.on.update(group="kopf.dev", version="v1", plural="kopfexamples", registry=registry)(fn_body)
    opd.on.update(kind="Pod", group="core", registry=registry)(fn_body)
    assert [h.resource for h in registry.handlers] == [KEX, ResourceRef("Pod", "", None)]


def test_id_is_the_function_name() -> None:
    # Since 2390904 ("handler id is the function name") the id is fn.__name__: no module/class/scope path.
    registry = OperatorRegistry()

    @opd.on.create("kopfexamples", registry=registry)
    def local_fn(**_: Any) -> None:
        pass

    class Holder:
        @staticmethod
        def method(**_: Any) -> None:
            pass

    opd.on.create("kopfexamples", registry=registry)(Holder.method)
    opd.on.create("kopfexamples", registry=registry)(fn_body)
    ids = [h.id for h in registry.handlers]
    assert ids == ["local_fn", "method", "fn_body"]
    assert all("<locals>" not in i and "." not in i for i in ids)


def test_same_name_in_two_scopes_takes_kopfs_ids() -> None:
    # Two functions of one name (here: in two scopes) on one resource: opd's short id would be one
    # for both, so both take Kopf's (qualified names), as Kopf gives them: no "duplicate handler id".
    registry = OperatorRegistry()

    def first() -> Callable[..., Any]:
        def fn(**_: Any) -> None:
            pass
        return fn

    def second() -> Callable[..., Any]:
        def fn(**_: Any) -> None:
            pass
        return fn

    opd.on.create("kopfexamples", registry=registry)(first())
    opd.on.create("kopfexamples", registry=registry)(second())
    assert [h.id for h in registry.handlers] == [
        "test_same_name_in_two_scopes_takes_kopfs_ids.<locals>.first.<locals>.fn",
        "test_same_name_in_two_scopes_takes_kopfs_ids.<locals>.second.<locals>.fn"]


def test_explicit_id() -> None:
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry, id="my-id")(fn_body)
    assert registry.handlers[0].id == "my-id"


def test_duplicate_id_rejected() -> None:
    # One function under two decorators of one id is one handler that either selects (Kopf runs it
    # once per cause); two functions with one id on one resource and cause would share their progress.
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(fn_body)
    opd.on.create("kopfexamples", registry=registry, labels={"x": "y"})(fn_body)
    opd.on.create("kopfexamples", registry=registry, id="a")(fn_body)

    def other(**_: Any) -> None:
        pass

    with pytest.raises(ValueError, match=r"duplicate handler id 'a' .*: fn_body and .*other; give one"):
        opd.on.create("kopfexamples", registry=registry, id="a")(other)
    assert [h.id for h in registry.handlers] == ["fn_body", "fn_body", "a"]


def test_stacked_field_handlers_take_kopfs_ids() -> None:
    # Kopf's ids: the function's name, then the field; opd keeps its short id where it is unique.
    registry = OperatorRegistry()
    opd.on.field("configmaps", field="data.a", registry=registry)(fn_body)
    opd.on.field("configmaps", field="data.b", registry=registry)(fn_body)
    opd.on.create("configmaps", registry=registry)(fn_body)
    opd.on.update("configmaps", field="data.c", registry=registry, id="u")(fn_body)
    opd.on.field("secrets", field="data.a", registry=registry)(fn_body)
    assert [h.id for h in registry.handlers] == ["fn_body/data.a", "fn_body/data.b", "fn_body", "u", "fn_body"]


def test_same_id_allowed_for_other_reason_or_resource() -> None:
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry, id="a")(fn_body)
    opd.on.update("kopfexamples", registry=registry, id="a")(fn_body)
    opd.on.create("pods", registry=registry, id="a")(fn_body)
    assert len(registry.handlers) == 3


def test_registries_are_isolated() -> None:
    r1, r2 = OperatorRegistry(), OperatorRegistry()
    opd.on.create("kopfexamples", registry=r1)(fn_body)
    opd.on.create("kopfexamples", registry=r2)(fn_body)  # no duplicate across registries
    assert len(r1.handlers) == len(r2.handlers) == 1


def test_resources_and_for_resource() -> None:
    registry = OperatorRegistry()
    pods = ResourceRef.parse("pods")
    registry.append(_handler(id="a", reason=Reason.CREATE))
    registry.append(_handler(id="b", reason=Reason.UPDATE, resource=pods))
    registry.append(_handler(id="c", reason=Reason.DELETE))
    assert registry.resources() == [KEX, pods]
    assert [h.id for h in registry.for_resource(KEX)] == ["a", "c"]
    assert [h.id for h in registry.for_resource(KEX, [Reason.DELETE, Reason.UPDATE])] == ["c"]
    assert registry.for_resource(ResourceRef("nothing")) == []


# --- accepted_kwargs / select_kwargs -----------------------------------------------------------------

def test_accepted_kwargs_named_params() -> None:
    def fn(body: Any, spec: Any, *, logger: Any, retry: int = 0) -> None:
        pass

    assert accepted_kwargs(fn) == frozenset({"body", "spec", "logger", "retry"})


def test_accepted_kwargs_var_keyword_means_all() -> None:
    def fn(body: Any, **kwargs: Any) -> None:
        pass

    assert accepted_kwargs(fn) is None


def test_accepted_kwargs_skips_positional_only_and_varargs() -> None:
    def fn(a: Any, /, *args: Any, body: Any) -> None:
        pass

    assert accepted_kwargs(fn) == frozenset({"body"})

    def nothing() -> None:
        pass

    assert accepted_kwargs(nothing) == frozenset()


def test_select_kwargs() -> None:
    def named(body: Any, spec: Any) -> None:
        pass

    def anything(**kwargs: Any) -> None:
        pass

    kwargs = {"body": 1, "spec": 2, "logger": 3, "patch": 4}
    assert _handler(named).select_kwargs(kwargs) == {"body": 1, "spec": 2}
    assert _handler(anything).select_kwargs(kwargs) == kwargs

    def none() -> None:
        pass

    assert _handler(none).select_kwargs(kwargs) == {}


def test_is_async() -> None:
    async def coro(**_: Any) -> None:
        pass

    assert _handler(coro).is_async
    assert not _handler(fn_body).is_async


# --- matches() -------------------------------------------------------------------------------------

def test_matches_without_filters() -> None:
    h = _handler()
    assert matches(h, _body(), {})
    assert matches(h, _body(labels={"a": "b"}), {})
    assert matches(h, {"metadata": {"name": "x"}}, {})


@pytest.mark.parametrize(("wanted", "labels", "expected"), [
    ({"app": "web"}, {"app": "web"}, True),
    ({"app": "web"}, {"app": "web", "tier": "x"}, True),
    ({"app": "web"}, {"app": "db"}, False),
    ({"app": "web"}, {}, False),
    ({"app": "web"}, None, False),
    ({"app": ""}, {}, False),
    ({"app": ""}, {"app": ""}, True),
    ({"app": opd.PRESENT}, {"app": ""}, True),
    ({"app": opd.PRESENT}, {"app": "anything"}, True),
    ({"app": opd.PRESENT}, {"other": "x"}, False),
    ({"app": opd.PRESENT}, None, False),
    ({"app": opd.ABSENT}, {"other": "x"}, True),
    ({"app": opd.ABSENT}, None, True),
    ({"app": opd.ABSENT}, {"app": ""}, False),
    ({"app": "web", "skip": opd.ABSENT}, {"app": "web"}, True),
    ({"app": "web", "skip": opd.ABSENT}, {"app": "web", "skip": "1"}, False),
    ({"app": "web", "tier": opd.PRESENT}, {"app": "web"}, False),
    ({}, None, True),
])
def test_matches_filters(wanted: dict[str, Any], labels: dict[str, str] | None, expected: bool) -> None:
    by_labels = _handler(labels=wanted)
    by_annotations = _handler(annotations=wanted)
    assert matches(by_labels, _body(labels=labels), {}) is expected
    assert matches(by_annotations, _body(annotations=labels), {}) is expected
    # Labels filter labels only, annotations annotations only.
    if wanted and not expected:
        assert matches(by_labels, _body(annotations=labels), {}) is matches(by_labels, _body(), {})


def test_matches_labels_and_annotations_both_required() -> None:
    h = _handler(labels={"a": "1"}, annotations={"b": "2"})
    assert matches(h, _body(labels={"a": "1"}, annotations={"b": "2"}), {})
    assert not matches(h, _body(labels={"a": "1"}, annotations={"b": "3"}), {})
    assert not matches(h, _body(labels={"a": "1"}), {})
    assert not matches(h, _body(annotations={"b": "2"}), {})


def test_matches_callable_filter() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def is_big(value: str, **kwargs: Any) -> bool:
        calls.append((value, kwargs))
        return int(value) > 10

    h = _handler(labels={"size": is_big})
    kwargs = {"name": "x", "spec": {"field": 1}}
    assert matches(h, _body(labels={"size": "42"}), kwargs)
    assert not matches(h, _body(labels={"size": "3"}), kwargs)
    assert calls == [("42", kwargs), ("3", kwargs)]
    # A missing key does not match, and the callable is not asked.
    assert not matches(h, _body(labels={}), kwargs)
    assert len(calls) == 2


def test_matches_callable_annotation_filter() -> None:
    h = _handler(annotations={"note": lambda value, **_: value.startswith("ok")})
    assert matches(h, _body(annotations={"note": "ok-then"}), {})
    assert not matches(h, _body(annotations={"note": "nope"}), {})


def test_matches_when() -> None:
    seen: list[dict[str, Any]] = []

    def when(**kwargs: Any) -> bool:
        seen.append(kwargs)
        return bool(kwargs["spec"].get("enabled"))

    h = _handler(when=when)
    assert matches(h, _body(), {"spec": {"enabled": True}})
    assert not matches(h, _body(), {"spec": {"enabled": False}})
    assert seen == [{"spec": {"enabled": True}}, {"spec": {"enabled": False}}]


def test_matches_when_not_called_if_labels_fail() -> None:
    def when(**_: Any) -> bool:
        raise AssertionError("when= must not be called when the labels already fail")

    h = _handler(labels={"a": "b"}, when=when)
    assert not matches(h, _body(labels={"a": "c"}), {})


def test_marker_repr() -> None:
    assert repr(opd.PRESENT) == "opd.PRESENT"
    assert repr(opd.ABSENT) == "opd.ABSENT"


# --- label_selector ----------------------------------------------------------------------------------

def _registry(*labels: dict[str, Any] | None, resource: ResourceRef = KEX) -> OperatorRegistry:
    registry = OperatorRegistry()
    for i, lbl in enumerate(labels):
        registry.append(_handler(id=f"h{i}", resource=resource, labels=lbl))
    return registry


def _selects(selector: str | None, labels: dict[str, str]) -> bool:
    """A tiny evaluator of the equality/existence selectors label_selector() emits."""
    for req in (selector or "").split(","):
        if not req:
            continue
        if req.startswith("!"):
            ok = req[1:] not in labels
        elif "=" in req:
            key, value = req.split("=", 1)
            ok = labels.get(key) == value
        else:
            ok = req in labels
        if not ok:
            return False
    return True


def test_label_selector_no_handlers() -> None:
    assert OperatorRegistry().label_selector(KEX) is None
    assert _registry({"a": "b"}, resource=ResourceRef("pods")).label_selector(KEX) is None


def test_label_selector_single_handler_all_kinds() -> None:
    registry = _registry({"tier": opd.PRESENT, "app": "web", "skip": opd.ABSENT})
    assert registry.label_selector(KEX) == "app=web,!skip,tier"


def test_label_selector_is_sorted_by_key() -> None:
    assert _registry({"z": "1", "b": "2", "a": opd.PRESENT}).label_selector(KEX) == "a,b=2,z=1"
    assert _registry({"a": opd.PRESENT, "b": "2", "z": "1"}).label_selector(KEX) == "a,b=2,z=1"


def test_label_selector_common_requirements_only() -> None:
    registry = _registry(
        {"app": "web", "x": opd.PRESENT, "only-here": "1"},
        {"app": "web", "x": opd.PRESENT},
        {"app": "web", "x": opd.PRESENT, "y": opd.ABSENT},
    )
    assert registry.label_selector(KEX) == "app=web,x"


def test_label_selector_no_key_in_common() -> None:
    assert _registry({"app": "web"}, {"tier": "db"}).label_selector(KEX) is None


def test_label_selector_implied_presence() -> None:
    # Different values, PRESENT and callables all need the label: its presence is common.
    assert _registry({"app": "web"}, {"app": "db"}).label_selector(KEX) == "app"
    assert _registry({"app": "web"}, {"app": opd.PRESENT}).label_selector(KEX) == "app"
    assert _registry({"app": "web"}, {"app": lambda v, **_: True}).label_selector(KEX) == "app"


def test_label_selector_absent_and_present_conflict() -> None:
    assert _registry({"app": opd.ABSENT}, {"app": opd.PRESENT}).label_selector(KEX) is None
    assert _registry({"app": opd.ABSENT}, {"app": "web"}).label_selector(KEX) is None
    assert _registry({"app": opd.ABSENT}, {"app": opd.ABSENT}).label_selector(KEX) == "!app"


def test_label_selector_handler_without_labels_means_none() -> None:
    assert _registry({"app": "web"}, None).label_selector(KEX) is None
    assert _registry(None, {"app": "web"}).label_selector(KEX) is None
    assert _registry({"app": "web"}, {}).label_selector(KEX) is None


def test_label_selector_ignores_annotations() -> None:
    registry = OperatorRegistry()
    registry.append(_handler(id="a", labels={"app": "web"}, annotations={"b": "c"}))
    registry.append(_handler(id="b", labels={"app": "web"}, annotations={"b": opd.ABSENT}))
    assert registry.label_selector(KEX) == "app=web"


def test_label_selector_callable_value_never_in_selector() -> None:
    def is_web(value: str, **_: Any) -> bool:
        return value == "web"

    selector = _registry({"app": is_web, "tier": "x"}).label_selector(KEX)
    assert selector == "app,tier=x"
    assert "is_web" not in selector and "function" not in selector


@pytest.mark.parametrize("handler_labels", [
    [{"app": "web"}, {"app": "db"}],
    [{"app": "web", "tier": opd.PRESENT}, {"app": "web", "tier": "front"}],
    [{"app": lambda v, **_: v.startswith("w")}, {"app": "db", "skip": opd.ABSENT}],
    [{"skip": opd.ABSENT, "app": opd.PRESENT}, {"skip": opd.ABSENT}],
    [{"app": opd.ABSENT}, {"app": "web"}],
])
def test_label_selector_is_safe(handler_labels: list[dict[str, Any]]) -> None:
    """Whatever any handler would match, the server-side selector lets through."""
    registry = _registry(*handler_labels)
    selector = registry.label_selector(KEX)
    samples: list[dict[str, str]] = [
        {}, {"app": "web"}, {"app": "db"}, {"app": "web", "tier": "front"}, {"app": "web", "tier": "back"},
        {"app": "db", "skip": "1"}, {"tier": "front"}, {"skip": "1"}, {"app": "wow"},
    ]
    for labels in samples:
        if any(matches(h, _body(labels=labels), {}) for h in registry.handlers):
            assert _selects(selector, labels), (selector, labels)


def test_label_selector_all_reasons_count() -> None:
    registry = OperatorRegistry()
    registry.append(_handler(id="a", reason=Reason.CREATE, labels={"app": "web"}))
    registry.append(_handler(id="b", reason=Reason.EVENT))
    assert registry.label_selector(KEX) is None


def test_label_selector_per_resource() -> None:
    pods = ResourceRef("pods")
    registry = OperatorRegistry()
    registry.append(_handler(id="a", labels={"app": "web"}))
    registry.append(_handler(id="a", resource=pods, labels={"app": "db"}))
    assert registry.label_selector(KEX) == "app=web"
    assert registry.label_selector(pods) == "app=db"


def test_label_selector_from_decorators() -> None:
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry, labels={"app": "web", "skip": opd.ABSENT})(fn_body)
    opd.on.update("kopfexamples", registry=registry, labels={"app": "web"})(fn_body)
    assert registry.label_selector(ResourceRef("kopfexamples")) == "app=web"


def test_import_leaves_the_asyncio_policy_alone_until_a_default_handler_is_declared() -> None:
    """``import opd`` changed the global policy's class (a side effect of an import); now only a handler
    in the process-wide default registry adapts it (Kopf's embedding: a thread asking the policy for its loop)."""
    import subprocess
    import sys

    code = (
        "import asyncio, threading\n"
        "import opd\n"
        "print(type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy)\n"
        "opd.on.create('kopfexamples', registry=opd.OperatorRegistry())(lambda **_: None)\n"
        "print(type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy)\n"
        "opd.on.create('kopfexamples')(lambda **_: None)\n"
        "got = []\n"
        "t = threading.Thread(target=lambda: got.append(asyncio.get_event_loop_policy().get_event_loop()))\n"
        "t.start(); t.join()\n"
        "print(len(got) == 1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
