"""What Kopf's handlers see and how they are registered, on the local apiserver, written from Kopf's
documentation (its "Handlers", "Arguments" and "Logging" pages) with ``import opd as kopf``:

- one function under several decorators is several handlers (ids ``fn/data.a``, ``fn/data.b``: Kopf's);
- ``logger`` is a stdlib ``logging.LoggerAdapter``: %-formatting, ``exc_info``, ``extra``; its records go
  to opd's log naming the object and, from INFO up, to the object's Events (reason ``Logging``);
- ``body``, ``meta``, ``spec``, ``status``, ``labels``, ``annotations`` are Kopf's read-only views with
  attribute access (``body.metadata.name``), also as an index's values;
- every kwarg Kopf's "Arguments" page lists, for every kind of handler, with Kopf's types.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import RunningOperator, create_kex, eventually, get_kex
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client
from loguru import logger as loguru_logger

import opd as kopf


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


async def _create_cm(api: client.ApiClient, namespace: str, name: str, data: dict[str, str],
                     labels: dict[str, str]) -> None:
    await client.CoreV1Api(api).create_namespaced_config_map(namespace, {
        "metadata": {"name": name, "labels": labels}, "data": data})


async def _cm(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    raw = await client.CoreV1Api(api).read_namespaced_config_map(name, namespace, _preload_content=False)
    result: dict[str, Any] = json.loads(await raw.read())
    return result


async def _annotations(api: client.ApiClient, namespace: str, name: str, *keys: str) -> dict[str, str] | None:
    """The object's ``example.com/`` annotations once all of ``keys`` are there."""
    found = (await _cm(api, namespace, name))["metadata"].get("annotations") or {}
    ours = {k.removeprefix("example.com/"): v for k, v in found.items() if k.startswith("example.com/")}
    return ours if all(k in ours for k in keys) else None


async def _events(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    found = await client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return list(found.items)


# -- item 1: stacked decorators ------------------------------------------------------------------------------------

async def test_stacked_field_decorators_each_run_and_not_again_after_restart(api: client.ApiClient,
                                                                             namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    calls: list[tuple[str, Any, Any]] = []
    reasons: list[str] = []
    selected = {"test": "stacked"}

    # Kopf's "Arguments" page: several decorators on one function, told apart by param.
    @kopf.on.field("configmaps", field="data.a", param="a", labels=selected, registry=registry)
    @kopf.on.field("configmaps", field="data.b", param="b", labels=selected, registry=registry)
    def copy_field(param: str, old: Any, new: Any, patch: kopf.Patch, **_: Any) -> None:
        calls.append((param, old, new))
        patch.metadata.annotations[f"example.com/seen-{param}"] = str(new)

    @kopf.on.create("configmaps", labels=selected, registry=registry)
    @kopf.on.update("configmaps", labels=selected, registry=registry)
    @kopf.on.resume("configmaps", labels=selected, registry=registry)
    def track(reason: str, **_: Any) -> None:
        reasons.append(reason)

    assert sorted(h.id for h in registry.handlers) == [
        "copy_field/data.a", "copy_field/data.b", "track", "track", "track"]

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await _create_cm(api, namespace, "stacked", {"a": "1", "b": "2"}, selected)
        seen = await eventually(lambda: _annotations(api, namespace, "stacked", "seen-a", "seen-b"))
        assert seen == {"seen-a": "1", "seen-b": "2"}
        await client.CoreV1Api(api).patch_namespaced_config_map("stacked", namespace, {"data": {"a": "3"}})
        await eventually(lambda: _seen_a(api, namespace, "3"))
        await eventually(lambda: "update" in reasons)
        await asyncio.sleep(1)  # room for a wrong second run of either
    assert sorted(calls, key=str) == [("a", "1", "3"), ("a", None, "1"), ("b", None, "2")]

    # Their progress and diff-base are kept under their ids: a restart runs only the resume handler.
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await eventually(lambda: reasons[-1:] == ["resume"])
        await asyncio.sleep(1)
    assert sorted(calls, key=str) == [("a", "1", "3"), ("a", None, "1"), ("b", None, "2")]
    assert reasons[0] == "create" and reasons[-1] == "resume" and reasons.count("resume") == 1


async def _seen_a(api: client.ApiClient, namespace: str, value: str) -> bool:
    found = await _annotations(api, namespace, "stacked", "seen-a")
    return bool(found and found["seen-a"] == value)


async def test_create_and_field_on_one_function_both_run(api: client.ApiClient, namespace: str) -> None:
    # Kopf's ids differ ("both" and "both/data.a"): at creation both registrations run, once each.
    registry = kopf.OperatorRegistry()
    calls: collections.Counter[str] = collections.Counter()
    selected = {"test": "create-field"}

    @kopf.on.create("configmaps", param="create", labels=selected, registry=registry)
    @kopf.on.field("configmaps", field="data.a", param="field", labels=selected, registry=registry)
    def both(param: str, patch: kopf.Patch, **_: Any) -> None:
        calls[param] += 1
        patch.metadata.annotations[f"example.com/by-{param}"] = "yes"

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await _create_cm(api, namespace, "both", {"a": "1"}, selected)
        found = await eventually(lambda: _annotations(api, namespace, "both", "by-create", "by-field"))
        assert found == {"by-create": "yes", "by-field": "yes"}
        await asyncio.sleep(1)
    assert calls == {"create": 1, "field": 1}


async def test_event_and_timer_stacked_over_two_resources(api: client.ApiClient, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    seen: set[tuple[str, str]] = set()
    selected = {"test": "two-resources"}

    @kopf.on.event("configmaps", labels=selected, registry=registry)
    @kopf.on.event("secrets", labels=selected, registry=registry)
    def watch(body: kopf.Body, type: str, **_: Any) -> None:
        seen.add((body["kind"], type))

    @kopf.timer("configmaps", interval=0.3, labels=selected, registry=registry)
    @kopf.timer("secrets", interval=0.3, labels=selected, registry=registry)
    def tick(patch: kopf.Patch, resource: Any, **_: Any) -> None:
        patch.metadata.annotations["example.com/ticked"] = resource.plural

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await _create_cm(api, namespace, "two", {"a": "1"}, selected)
        await client.CoreV1Api(api).create_namespaced_secret(namespace, {
            "metadata": {"name": "two", "labels": selected}, "stringData": {"a": "1"}})
        await eventually(lambda: {("ConfigMap", "ADDED"), ("Secret", "ADDED")} <= seen)

        async def ticked() -> bool:
            cm = (await _cm(api, namespace, "two"))["metadata"].get("annotations") or {}
            secret = await client.CoreV1Api(api).read_namespaced_secret("two", namespace)
            return (cm.get("example.com/ticked") == "configmaps"
                    and (secret.metadata.annotations or {}).get("example.com/ticked") == "secrets")

        await eventually(ticked)


async def test_subhandlers_take_kopfs_filters_param_and_register(api: client.ApiClient, crd: str,
                                                                 namespace: str) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.create(crd, registry=registry)
    def parent(**_: Any) -> None:
        @kopf.subhandler(id="picked", labels={"pick": "yes"}, param="p")
        def picked(param: str, **_: Any) -> str:
            return param

        @kopf.on.this(id="skipped", labels={"pick": "no"})
        def skipped(**_: Any) -> str:
            return "ran"

        @kopf.subhandler(id="when", when=lambda spec, **_: spec.get("size") == 1)
        def when(**_: Any) -> str:
            return "when"

        def registered(param: int, **_: Any) -> int:
            return param

        kopf.register(registered, id="registered", param=3)

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "subs", {"size": 1}, labels={"pick": "yes"})

        async def done() -> Any:
            status = (await get_kex(api, namespace, "subs")).get("status") or {}
            return status if "parent/registered" in status and "parent/picked" in status else None

        status = await eventually(done)
        await asyncio.sleep(0.5)
        status = (await get_kex(api, namespace, "subs")).get("status") or {}
    assert {k: v for k, v in status.items() if k.startswith("parent/")} == {
        "parent/picked": "p", "parent/when": "when", "parent/registered": 3}


async def test_a_field_handlers_result_lands_under_kopfs_id(api: client.ApiClient, crd: str,
                                                             namespace: str) -> None:
    # Kopf keeps an on.field handler's result in ``status["fn/<field>"]`` (its id) and operators read it
    # there: the ODA Canvas' operators watch "status.summary/status.deployment_status" of a Component.
    registry = kopf.OperatorRegistry()

    @kopf.on.field(crd, field="spec.size", registry=registry)
    def summary(new: Any, **_: Any) -> dict[str, Any]:
        return {"size": new}

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "fieldresult", {"size": 2})

        async def stored() -> Any:
            status = (await get_kex(api, namespace, "fieldresult")).get("status") or {}
            return status if "summary/spec.size" in status or "summary" in status else None

        status = await eventually(stored)
    assert status.get("summary/spec.size") == {"size": 2} and "summary" not in status


async def test_resume_deleted_runs_for_an_object_found_being_deleted(api: client.ApiClient, crd: str,
                                                                    namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    resumed: list[tuple[str, str]] = []

    @kopf.on.delete(crd, registry=registry)
    def gone(**_: Any) -> None:
        pass

    @kopf.on.resume(crd, deleted=True, registry=registry)
    def resume_deleted(name: str, reason: str, **_: Any) -> None:
        resumed.append((name, reason))

    @kopf.on.resume(crd, registry=registry)
    def resume_plain(name: str, reason: str, **_: Any) -> None:
        resumed.append((name, f"plain {reason}"))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "doomed", {"size": 1})

        async def held() -> bool:
            return "opd.dev/finalizer" in str((await get_kex(api, namespace, "doomed"))["metadata"].get("finalizers"))

        await eventually(held)
    await client.CustomObjectsApi(api).delete_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfexamples",
                                                                       "doomed")
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        async def deleted() -> bool:
            try:
                await get_kex(api, namespace, "doomed")
            except client.ApiException as exc:
                return exc.status == 404
            return False

        await eventually(deleted)
    assert resumed == [("doomed", "delete")]  # the plain resume handler does not run for it, as in Kopf


# -- item 6: the logger --------------------------------------------------------------------------------------------

async def test_logger_is_a_stdlib_adapter_that_formats_and_posts_events(api: client.ApiClient,
                                                                        namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    selected = {"test": "logger"}
    kinds: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.loggers = True  # off by default, as in Kopf 1.45

    @kopf.on.create("configmaps", labels=selected, registry=registry)
    def copy(name: str, logger: kopf.Logger, **_: Any) -> None:
        kinds.append(type(logger).__mro__[1].__name__)
        assert isinstance(logger, logging.LoggerAdapter)
        logger.info("copied %s to %s", name, "target")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed %s", "once")
        logger.log(logging.WARNING, "level %d", 30, extra={"step": "third"}, stacklevel=2)
        logger.debug("debug %s", "below the posting level")

    records: list[Any] = []
    sink = loguru_logger.add(lambda message: records.append(message.record), level="DEBUG", format="{message}")
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await _create_cm(api, namespace, "logged", {"a": "1"}, selected)

            async def posted() -> dict[str, str] | None:
                found = {e.message: e.type for e in await _events(api, namespace, "logged") if e.reason == "Logging"}
                return found if len(found) >= 3 else None

            events = await eventually(posted)
    finally:
        loguru_logger.remove(sink)
    assert events == {"copied logged to target": "Normal", "failed once": "Warning", "level 30": "Warning"}
    mine = {r["message"]: r for r in records if r["extra"].get("object") == f"{namespace}/logged"
            and r["message"] in ("copied logged to target", "failed once", "level 30", "debug below the posting level")}
    assert set(mine) == {"copied logged to target", "failed once", "level 30", "debug below the posting level"}
    assert mine["failed once"]["exception"] is not None and mine["failed once"]["level"].name == "ERROR"
    assert mine["level 30"]["extra"]["step"] == "third"
    assert kinds == ["LoggerAdapter"]


@pytest.mark.parametrize("off", ["enabled", "loggers"])
async def test_logger_posts_no_events_when_posting_is_off(api: client.ApiClient, namespace: str, off: str) -> None:
    """Kopf's settings.posting: ``enabled=False`` posts nothing; ``loggers`` (False by default) keeps
    handlers' log lines out of the Events (explicit kopf.info()... and outcomes are still posted)."""
    registry = kopf.OperatorRegistry()
    selected = {"test": "quiet"}
    done = asyncio.Event()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        if off == "enabled":
            settings.posting.enabled = False
            settings.posting.loggers = True

    @kopf.on.create("configmaps", labels=selected, registry=registry)
    def quiet(logger: kopf.Logger, **_: Any) -> None:
        logger.warning("not an event %s", "here")
        done.set()

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await _create_cm(api, namespace, "quiet", {"a": "1"}, selected)
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(2)  # well past the poster's batch window
    assert [e.message for e in await _events(api, namespace, "quiet") if e.reason == "Logging"] == []


# -- item 7: Body, Meta, Spec, Status... ---------------------------------------------------------------------------

async def test_body_parts_are_kopfs_read_only_views(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.index(crd, registry=registry)
    def by_name(body: kopf.Body, **_: Any) -> dict[str, kopf.Body]:
        return {body.metadata.name: body}

    @kopf.on.create(crd, labels={"role": "reader"}, registry=registry)
    def read(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels,
             annotations: kopf.Annotations, by_name: kopf.Index, **_: Any) -> dict[str, Any]:
        views = [(body, kopf.Body), (meta, kopf.Meta), (spec, kopf.Spec), (status, kopf.Status),
                 (labels, kopf.Labels), (annotations, kopf.Annotations), (body.metadata, kopf.Meta),
                 (body.spec, kopf.Spec), (body.status, kopf.Status), (meta.labels, kopf.Labels)]
        refused = []
        for write in (lambda: body.__setitem__("spec", {}), lambda: spec.update(size=0),
                      lambda: meta.labels.pop("role"), lambda: status.setdefault("x", 1)):
            try:
                write()
            except TypeError:
                refused.append(True)
        [source] = by_name["source"]
        copied = json.loads(json.dumps(body))
        copied["spec"]["size"] = 99  # a copy is the handler's own
        return {
            "isinstance": all(isinstance(v, t) for v, t in views),
            "name": body.metadata.name, "meta_name": meta.name, "namespace": meta.namespace, "uid": meta.uid,
            "created": meta.creation_timestamp is not None, "label": meta.labels["role"],
            "size": body.spec["size"], "spec_get": spec.get("size"), "status": status.get("phase", "none"),
            "refused": len(refused), "dict": dict(body)["kind"], "json": copied["metadata"]["name"],
            "source": [source.metadata.name, source.spec.get("size"), isinstance(source, kopf.Body)],
            "spec_after": body.spec["size"],
        }

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "source", {"size": 1})
        await create_kex(api, namespace, "reader", {"size": 2}, labels={"role": "reader"})

        async def result() -> Any:
            return ((await get_kex(api, namespace, "reader")).get("status") or {}).get("read")

        found = await eventually(result)
    uid = (await get_kex(api, namespace, "reader"))["metadata"]["uid"]
    assert found == {"isinstance": True, "name": "reader", "meta_name": "reader", "namespace": namespace,
                     "uid": uid, "created": True, "label": "reader", "size": 2, "spec_get": 2, "status": "none",
                     "refused": 4, "dict": "KopfExample", "json": "reader", "source": ["source", 1, True],
                     "spec_after": 2}


async def test_daemons_see_live_views_of_their_object(api: client.ApiClient, crd: str, namespace: str) -> None:
    # Kopf's "Daemons" page: body, spec, meta... are live views of the object's current state.
    registry = kopf.OperatorRegistry()

    @kopf.daemon(crd, registry=registry)
    async def watch_size(stopped: kopf.DaemonStopped, spec: kopf.Spec, body: kopf.Body, meta: kopf.Meta,
                         **_: Any) -> dict[str, Any]:
        while not stopped and spec.get("size") == 1:
            await stopped.wait(0.1)
        return {"spec": spec.get("size"), "body": body.spec.get("size"), "label": meta.labels.get("step")}

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "live", {"size": 1})
        await asyncio.sleep(0.5)
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "live", {"metadata": {"labels": {"step": "two"}},
                                                                  "spec": {"size": 2}},
            _content_type="application/merge-patch+json")

        async def result() -> Any:
            return ((await get_kex(api, namespace, "live")).get("status") or {}).get("watch_size")

        assert await eventually(result) == {"spec": 2, "body": 2, "label": "two"}


async def test_memo_is_the_objects_own_over_the_operators(api: client.ApiClient, crd: str, namespace: str) -> None:
    # Kopf's "Arguments" page: memo's values are shared by the handlers of the same object; what
    # startup put in the operator's memo is in each object's (a shallow copy).
    registry = kopf.OperatorRegistry()
    operator_memo = kopf.Memo()

    @kopf.on.startup(registry=registry)
    def start(memo: kopf.Memo, **_: Any) -> None:
        memo.everyone = []

    @kopf.on.create(crd, registry=registry)
    def remember(name: str, memo: kopf.Memo, **_: Any) -> None:
        memo.mine = name
        memo.everyone.append(name)

    @kopf.on.update(crd, registry=registry)
    def recall(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
        return {"mine": memo.get("mine"), "everyone": sorted(memo.everyone)}

    async with RunningOperator(registry=registry, namespaces=[namespace], memo=operator_memo):
        for name in ("first", "second"):
            await create_kex(api, namespace, name, {"size": 1})
        await eventually(lambda: len(operator_memo.get("everyone", [])) == 2)
        for name in ("first", "second"):
            await client.CustomObjectsApi(api).patch_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfexamples", name, {"spec": {"size": 2}},
                _content_type="application/merge-patch+json")

        async def recalled(name: str) -> Any:
            return ((await get_kex(api, namespace, name)).get("status") or {}).get("recall")

        for name in ("first", "second"):
            assert await eventually(lambda name=name: recalled(name)) == {"mine": name, "everyone": ["first", "second"]}
    assert "mine" not in operator_memo


# -- the kwargs of Kopf's "Arguments" page, per kind of handler --------------------------------------------------

RESOURCE = {"body", "spec", "meta", "status", "uid", "name", "namespace", "labels", "annotations", "resource",
            "patch", "logger", "memo", "param"}
RETRYING = {"retry", "started", "runtime"}
EXPECTED = {
    "startup": {"activity", "settings", "logger", "memo", "param", "by_uid"} | RETRYING,
    "create": RESOURCE | RETRYING | {"reason", "diff", "old", "new", "by_uid"},
    "update": RESOURCE | RETRYING | {"reason", "diff", "old", "new", "by_uid"},
    "field": RESOURCE | RETRYING | {"reason", "diff", "old", "new", "by_uid"},
    "delete": RESOURCE | RETRYING | {"reason", "diff", "old", "new", "by_uid"},
    "event": RESOURCE | {"event", "type", "by_uid"},
    "timer": RESOURCE | RETRYING | {"by_uid"},
    "daemon": RESOURCE | RETRYING | {"stopped", "by_uid"},
    "index": RESOURCE,
}


def _types(kwargs: dict[str, Any]) -> dict[str, Any]:
    """What Kopf's page says each kwarg is, checked for those the handler got."""
    checks = {
        "body": lambda v: isinstance(v, kopf.Body), "spec": lambda v: isinstance(v, kopf.Spec),
        "meta": lambda v: isinstance(v, kopf.Meta), "status": lambda v: isinstance(v, kopf.Status),
        "labels": lambda v: isinstance(v, kopf.Labels), "annotations": lambda v: isinstance(v, kopf.Annotations),
        "uid": lambda v: isinstance(v, str), "name": lambda v: isinstance(v, str),
        "namespace": lambda v: isinstance(v, str), "patch": lambda v: isinstance(v, kopf.Patch),
        "logger": lambda v: isinstance(v, logging.LoggerAdapter), "memo": lambda v: isinstance(v, kopf.Memo),
        "retry": lambda v: isinstance(v, int), "started": lambda v: isinstance(v, datetime.datetime),
        "runtime": lambda v: isinstance(v, datetime.timedelta),
        "settings": lambda v: isinstance(v, kopf.OperatorSettings),
        "event": lambda v: set(v) == {"type", "object"}, "type": lambda v: v in ("ADDED", "MODIFIED", "DELETED", None),
        "stopped": lambda v: hasattr(v, "wait") and hasattr(v, "is_set"), "by_uid": lambda v: isinstance(v, kopf.Index),
        "reason": lambda v: v in ("create", "update", "delete", "resume", "event", "timer", "daemon", "index"),
        "activity": lambda v: v == "startup",
        "resource": lambda v: v.plural == "kopfexamples", "param": lambda v: v is None,
    }
    return {k: checks[k](v) for k, v in kwargs.items() if k in checks}


async def test_every_kwarg_kopf_documents_per_handler_kind(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    got: dict[str, dict[str, Any]] = {}

    def record(kind: str, kwargs: dict[str, Any]) -> None:
        got.setdefault(kind, {"keys": set(kwargs), "types": _types(kwargs), "extra": {},
                              "reason": kwargs.get("reason")})

    @kopf.on.startup(registry=registry)
    def on_startup(**kwargs: Any) -> None:
        record("startup", kwargs)

    @kopf.index(crd, registry=registry)
    def by_uid(uid: str, **kwargs: Any) -> dict[str, str]:
        record("index", {"uid": uid, **kwargs})
        return {uid: kwargs["name"]}

    @kopf.on.create(crd, registry=registry)
    def on_create(**kwargs: Any) -> None:
        record("create", kwargs)
        # Kopf's diff of a new object: the whole essence added at the root.
        got["create"]["extra"] = {"old": kwargs["old"], "diff": [[d[0], list(d[1]), d[2]] for d in kwargs["diff"]]}

    @kopf.on.update(crd, registry=registry)
    def on_update(**kwargs: Any) -> None:
        record("update", kwargs)
        diff = kwargs["diff"]
        got["update"]["extra"] = {"diff": [list(d) for d in diff], "is_diff": isinstance(diff, kopf.Diff),
                                  "named": [(d.operation, d.op, d.field, d.old, d.new) for d in diff]}

    @kopf.on.field(crd, field="spec.size", registry=registry)
    def on_field(**kwargs: Any) -> None:
        if kwargs["old"] is not None:
            record("field", kwargs)
            got["field"]["extra"] = {"old": kwargs["old"], "new": kwargs["new"]}

    @kopf.on.delete(crd, registry=registry)
    def on_delete(**kwargs: Any) -> None:
        record("delete", kwargs)

    @kopf.on.event(crd, registry=registry)
    def on_event(**kwargs: Any) -> None:
        record("event", kwargs)

    @kopf.timer(crd, interval=0.3, registry=registry)
    def on_timer(**kwargs: Any) -> None:
        record("timer", kwargs)

    @kopf.daemon(crd, registry=registry)
    async def on_daemon(stopped: Any, **kwargs: Any) -> None:
        record("daemon", {"stopped": stopped, **kwargs})
        await stopped.wait()

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "kwargs", {"size": 1})
        await eventually(lambda: {"create", "event", "timer", "daemon"} <= set(got))
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "kwargs", {"spec": {"size": 2}},
            _content_type="application/merge-patch+json")
        await eventually(lambda: {"update", "field"} <= set(got))
        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "kwargs")
        await eventually(lambda: "delete" in got)

    for kind, expected in EXPECTED.items():
        assert expected <= got[kind]["keys"], (kind, expected - got[kind]["keys"])
        assert [k for k, ok in got[kind]["types"].items() if not ok] == [], kind
    assert got["create"]["extra"] == {"old": None, "diff": [["add", [], None]]}
    assert [got[kind]["reason"] for kind in ("create", "update", "field", "delete")] == [
        "create", "update", "update", "delete"]
    assert got["update"]["extra"] == {"diff": [["change", ("spec", "size"), 1, 2]], "is_diff": True,
                                      "named": [("change", "change", ("spec", "size"), 1, 2)]}
    assert got["field"]["extra"] == {"old": 1, "new": 2}


# -- pure logic, fuzzed: the views over any object, the ids of any set of registrations --------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
_objects = st.fixed_dictionaries({}, optional={
    "metadata": st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=8), "namespace": st.text(max_size=8) | st.none(), "uid": st.text(max_size=8),
        "labels": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        "annotations": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)}),
    "spec": st.dictionaries(st.text(max_size=6), _json, max_size=4),
    "status": st.dictionaries(st.text(max_size=6), _json, max_size=4),
    "kind": st.text(max_size=8)})


@settings(max_examples=300, deadline=None)
@given(_objects)
def test_views_of_any_object_read_it_and_refuse_writes(raw: dict[str, Any]) -> None:
    from opd.typedefs import body_kwargs
    before = json.dumps(raw, sort_keys=True)
    kw = body_kwargs(raw)
    body, meta = kw["body"], kw["meta"]
    assert json.loads(json.dumps(body)) == raw and dict(body) == raw
    assert dict(meta) == (raw.get("metadata") or {}) and meta.name == (raw.get("metadata") or {}).get("name")
    assert dict(kw["spec"]) == (raw.get("spec") or {}) == dict(body.spec)
    assert dict(kw["labels"]) == ((raw.get("metadata") or {}).get("labels") or {})
    copied = copy.deepcopy(body)
    assert type(copied) is dict and copied == raw
    for view in (body, meta, kw["spec"], kw["status"], kw["labels"], kw["annotations"]):
        with pytest.raises(TypeError):
            view["x"] = 1
        with pytest.raises(TypeError):
            view.clear()
    assert json.dumps(raw, sort_keys=True) == before  # the object itself is never changed


def _fn_a(**_: Any) -> None: ...
def _fn_b(**_: Any) -> None: ...


class _Other:
    @staticmethod
    def _fn_a(**_: Any) -> None: ...  # the same name as a module-level function, another qualified name


_registration = st.tuples(st.sampled_from([_fn_a, _fn_b, _Other._fn_a]),
                          st.sampled_from(["create", "update", "field", "event", "timer"]),
                          st.sampled_from(["configmaps", "secrets"]),
                          st.sampled_from([None, "data.a", "data.b"]), st.sampled_from([None, None, "x"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_registration, max_size=8))
def test_ids_are_distinct_wherever_kopfs_are(registrations: list[tuple[Any, str, str, str | None, str | None]]) -> None:
    from opd.registry import handler_ids
    registry = kopf.OperatorRegistry()
    kept: list[tuple[Any, str, str, str]] = []  # fn, reason, resource, Kopf's id
    for fn, reason, resource, field, id in registrations:
        if reason == "field" and field is None:
            field = "data.c"
        decorator = getattr(kopf.on, reason) if reason not in ("timer",) else kopf.timer
        options: dict[str, Any] = {"interval": 1.0} if reason == "timer" else {}
        kopf_id = handler_ids(fn, id, tuple(field.split(".")) if field else None)[1]
        try:
            decorator(resource, field=field, id=id, registry=registry, **options)(fn)
        except ValueError as exc:
            # Refused only for two functions with one id for one resource and cause.
            assert "duplicate handler id" in str(exc)
            assert any(k == kopf_id and r == reason and res == resource and f is not fn for f, r, res, k in kept)
            continue
        kept.append((fn, reason, resource, kopf_id))
    handlers = registry.handlers
    assert len(handlers) == len(kept)
    for i, h in enumerate(handlers):
        for j, g in enumerate(handlers):
            if h.resource == g.resource:
                assert (h.id == g.id) == (kept[i][3] == kept[j][3]), (h.id, g.id, kept[i][3], kept[j][3])


def test_object_logger_keeps_opds_former_spellings_and_kopfs_k8s_skip() -> None:
    records: list[Any] = []
    posted: list[tuple[int, str]] = []
    sink = loguru_logger.add(lambda message: records.append(message.record), level="TRACE", format="{message}")
    try:
        log = kopf.ObjectLogger({"object": "ns/x"}, events=lambda level, message: posted.append((level, message)))
        log.info("copied %s to %s", "a", "b")
        log.info("braces {} and {name}", 1, name="n")  # opd's former loguru logger formatted these
        log.bind(step="two").warning("bound")
        log.info("not posted", extra={"k8s_skip": True})
        log.trace("traced %d", 5)
        kopf.LocalObjectLogger(body={"metadata": {"name": "y", "namespace": "ns"}}).error("local %s", "only")
        log.info("%d items", "many")  # a user's mistake: one line that says so, never a traceback
    finally:
        loguru_logger.remove(sink)
    said = {r["message"]: r for r in records}
    assert list(said)[:6] == ["copied a to b", "braces 1 and n", "bound", "not posted", "traced 5", "local only"]
    [mistake] = list(said)[6:]
    assert mistake.startswith("'%d items' with arguments ('many',) (a log call whose format does not fit them")
    assert "\n" not in mistake
    assert said["bound"]["extra"]["step"] == "two" and said["bound"]["extra"]["object"] == "ns/x"
    assert said["traced 5"]["level"].name == "TRACE" and said["local only"]["extra"]["object"] == "ns/y"
    assert "k8s_skip" not in said["not posted"]["extra"]
    assert posted[:4] == [(20, "copied a to b"), (20, "braces 1 and n"), (30, "bound"), (5, "traced 5")]
