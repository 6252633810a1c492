"""Fuzzing the engine's intake: watch lines and objects of any shape.

What the API server can send (custom resources with free-form spec and status) is also
run against the real server in test_watching.py; the shapes it never sends (not JSON,
no uid, labels that are no map, nesting past the parser's bound...) are generated here,
thousands of them, against the pure functions every event goes through: a bad line
costs one line of log and no exception; what passes the intake, the processing's pure
steps handle without raising.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

import opd
from opd.engine import causes, shapes
from opd.engine.diffs import diff
from opd.engine.hub import CatchUp
from opd.engine.listing import ListProgress, PageBuffer
from opd.engine.processing import ResourceProcessor
from opd.engine.reporting import where
from opd.engine.state import Storage, compact, dump, essence, version
from opd.engine.watching import Watcher
from opd.kube.api import APIError, KubeClient
from opd.registry import Handler, OperatorRegistry, Reason
from opd.resources import Resource, ResourceRef
from opd.settings import OperatorSettings, PersistenceSettings, WatchingSettings

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)  # orjson's range
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=16)


def odd(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right type, often anything JSON can hold."""
    return st.one_of(right, right, json_values)


names = st.text(alphabet="abcxyz-0123", min_size=1, max_size=8)
string_maps = st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3)
metadata = st.fixed_dictionaries({}, optional={
    "uid": odd(names), "name": odd(names), "namespace": odd(names),
    "resourceVersion": odd(st.integers(1, 10**9).map(str)),
    "labels": odd(string_maps), "annotations": odd(string_maps),
    "finalizers": odd(st.lists(st.sampled_from(["opd.dev/finalizer", "x/y", ""]), max_size=3)),
    "deletionTimestamp": odd(st.just("2026-01-01T00:00:00Z")), "generation": odd(st.integers(0, 9)),
})
objects = st.fixed_dictionaries({}, optional={
    "apiVersion": odd(st.just("kopf.dev/v1")), "kind": odd(st.just("KopfExample")),
    "metadata": odd(metadata), "spec": json_values, "status": json_values, "data": json_values,
})
# Objects whose identity is right, the rest anything: they reach the checks past the first ones.
identified = st.fixed_dictionaries({
    "metadata": st.fixed_dictionaries({"uid": names, "name": names, "resourceVersion": st.integers(1, 9).map(str)},
                                      optional={k: odd(v) for k, v in {
                                          "namespace": names, "labels": string_maps, "annotations": string_maps,
                                          "deletionTimestamp": st.just("2026-01-01T00:00:00Z"),
                                          "finalizers": st.lists(st.sampled_from(["opd.dev/finalizer", "x"])),
                                      }.items()}),
}, optional={"spec": json_values, "status": json_values | st.fixed_dictionaries({"opd": json_values})})
events = st.fixed_dictionaries({}, optional={
    "type": odd(st.sampled_from([*shapes.EVENT_TYPES, "WHATEVER"])), "object": odd(objects | identified),
})
lines = st.one_of(events.map(orjson.dumps), events.map(orjson.dumps), json_values.map(orjson.dumps),
                  st.binary(max_size=64), st.text(max_size=64).map(str.encode))

RESOURCE = Resource(group="kopf.dev", version="v1", plural="kopfexamples", kind="KopfExample", namespaced=True,
                    subresources=frozenset({"status"}))


def _registry() -> dict[Reason, list[Handler]]:
    """Handlers with every kind of filter the intake's output must survive."""
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry, labels={"a": opd.PRESENT, "b": "x"})(lambda **_: None)
    opd.on.update("kopfexamples", registry=registry, annotations={"c": opd.ABSENT})(lambda **_: None)
    opd.on.field("kopfexamples", field="spec.size", registry=registry, new=opd.PRESENT)(lambda **_: None)
    opd.on.delete("kopfexamples", registry=registry)(lambda **_: None)
    opd.timer("kopfexamples", interval=1, registry=registry, when=lambda body, **_: bool(body))(lambda **_: None)
    return {r: [h for h in registry.handlers if h.reason == r] for r in Reason}


BY_REASON = _registry()


def _processable(obj: dict[str, Any], previous: dict[str, Any] | None, *, handler: bool = True) -> None:
    """The pure steps processing takes for an object the intake let through: none may raise."""
    for in_status in (True, False):
        storage = Storage(PersistenceSettings(storage="status" if in_status else "annotations"),
                          has_status_subresource=True, handler_ids=["h"])
        state = storage.read(obj)
        assert state.diff_base is None or isinstance(state.diff_base, str)
        assert all(isinstance(record, dict) for record in state.progress.values())
        storage.confirms(obj, "x")
    new = essence(obj, "opd.dev", secret=True)
    current = compact(dump(new), 1000)
    old = essence(previous, "opd.dev") if previous is not None else None
    changes = diff(old, new)
    assert isinstance(changes, tuple)
    causes.detect(body=obj, by_reason=BY_REASON, kwargs={"body": obj}, old=old, new=new,
                  diff_base=None if old is None else dump(old), current=current, first_seen=True,
                  has_progress=bool(state.progress), finalizer="opd.dev/finalizer")
    assert isinstance(where(obj), str)
    assert isinstance(version(obj), int)
    if handler:
        copy.deepcopy(obj)  # what a handler may do with its body (past ~300 levels: the handler's own error)


@FUZZ
@given(line=lines, previous=identified | objects)
def test_fuzz_any_watch_line_is_taken_or_refused_in_one_line(line: bytes, previous: dict[str, Any]) -> None:
    try:
        kind, obj = shapes.parse_line(line)
    except shapes.BadShape as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and len(reason) < 300
        return
    assert kind in shapes.EVENT_TYPES
    if kind == "ERROR":
        code, reason, message = shapes.error_status(obj)
        assert 400 <= code <= 599 and len(reason) <= 80 and len(message) <= 80
        return
    if kind == "BOOKMARK":
        found = shapes.bookmark_version(obj)
        assert found is None or isinstance(found, str)
        return
    meta = obj["metadata"]
    assert all(isinstance(meta[k], str) and meta[k] for k in ("uid", "name", "resourceVersion"))
    try:
        shapes.check_object(previous)
    except shapes.BadShape:
        previous = None  # type: ignore[assignment]  # refused at the intake: never processed
    _processable(obj, previous)
    catch_up = CatchUp()
    catch_up.snapshot(meta["resourceVersion"])
    catch_up.admit(kind, obj)
    catch_up.take(obj)


class _Collected(list[tuple[str, str]]):
    def __call__(self, kind: str, body: dict[str, Any]) -> None:
        self.append((kind, body["metadata"]["name"]))


def _watcher() -> tuple[Watcher, _Collected]:
    delivered = _Collected()
    # take() reads lines given to it: no client, no request (the stream's lines are what is fuzzed).
    watcher = Watcher(KubeClient.__new__(KubeClient), RESOURCE, "ns", settings=WatchingSettings(), deliver=delivered)
    return watcher, delivered


def _good(index: int) -> bytes:
    return orjson.dumps({"type": "MODIFIED", "object": {"metadata": {
        "uid": f"u{index}", "name": f"good-{index}", "namespace": "ns", "resourceVersion": str(1000 + index)}}})


@pytest.fixture
def warnings() -> Any:
    said: list[str] = []
    sink = logger.add(lambda m: said.append(str(m)), level="WARNING")
    yield said
    logger.remove(sink)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(lines, min_size=1, max_size=12))
def test_fuzz_a_good_event_after_bad_lines_is_delivered(bad: list[bytes], warnings: list[str]) -> None:
    watcher, delivered = _watcher()
    warnings.clear()
    expected = []
    for index, line in enumerate(bad):
        try:
            watcher.take(line)
        except APIError as exc:  # an ERROR event: run() backs off and resumes (one line per kind of error)
            assert 400 <= exc.status <= 599
        watcher.take(_good(index))
        expected.append(("MODIFIED", f"good-{index}"))
    # Every good one, in order, whatever came between (fuzzed names never start with "good").
    assert [d for d in delivered if d[1].startswith("good-")] == expected
    assert watcher.resource_version == str(1000 + len(bad) - 1)
    # Bounded: at most one line said a minute, however many were skipped.
    assert sum("skipped" in m for m in warnings) <= 1
    assert not any("Traceback" in m or "| ERROR" in m for m in warnings)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"a": value}
    return {"x": value}


def _deep_line(depth: int) -> bytes:
    spec = b'{"x":' + b'{"a":' * (depth - 1) + b'"leaf"' + b"}" * depth
    meta = b'{"uid":"u","name":"deep","resourceVersion":"1"}'
    return b'{"type":"ADDED","object":{"metadata":' + meta + b',"spec":' + spec + b"}}"


@pytest.mark.parametrize("depth", [1030, 5000, 100_000])
def test_a_line_nested_past_the_parser_s_bound_is_refused(depth: int) -> None:
    with pytest.raises(shapes.BadShape, match="not JSON"):  # orjson: 1024 levels at most
        shapes.parse_line(_deep_line(depth))


def test_an_object_nested_800_levels_is_processable() -> None:
    _, body = shapes.parse_line(_deep_line(800))
    _processable(body, {"metadata": body["metadata"], "spec": _nested(799)}, handler=False)


async def test_an_object_too_deep_to_process_costs_one_line(warnings: list[str]) -> None:
    """Between what the parser takes (1024 levels) and what diffs and JSON encoding can walk
    (Python's recursion limit), processing skips the object with one WARNING, no traceback."""
    kind, body = shapes.parse_line(_deep_line(1015))
    registry = OperatorRegistry()
    opd.on.create("kopfexamples", registry=registry)(lambda **_: None)
    processor = ResourceProcessor(client=KubeClient.__new__(KubeClient), resource=RESOURCE,
                                  ref=ResourceRef.parse("kopfexamples"), registry=registry,
                                  settings=OperatorSettings(), memo=None, executor=None)
    await processor._process("u", (kind, body))  # raised RecursionError before (an ERROR traceback)
    assert [m for m in warnings if "nested too deeply to process" in m and "deep" in m]
    assert not any("Traceback" in m or "| ERROR" in m for m in warnings)
    await processor.close()


def test_a_line_over_the_bound_is_refused_unparsed() -> None:
    line = b'{"type":"ADDED","object":{"metadata":{},"spec":"' + b"x" * shapes.MAX_LINE + b'"}}'
    with pytest.raises(shapes.BadShape, match="bytes \\(over"):
        shapes.parse_line(line)


@FUZZ
@given(status=json_values, annotations=odd(string_maps), ours=odd(st.fixed_dictionaries({}, optional={
    "lastHandled": odd(st.text(max_size=20)),
    "progress": odd(st.dictionaries(st.sampled_from(["h", "h/sub", "x"]), odd(st.fixed_dictionaries({}, optional={
        "started": odd(st.floats(0, 2e9)), "delayed": odd(st.floats(0, 2e9)), "retries": odd(st.integers(0, 9)),
        "success": odd(st.booleans()), "failure": odd(st.booleans())})), max_size=3)),
})))
def test_fuzz_what_a_user_writes_in_status_or_annotations_reads_as_state(
        status: Any, annotations: Any, ours: Any) -> None:
    """Status and annotations of a custom resource are anybody's to write (the real server keeps any
    JSON there: see test_watching.py): opd reads its own records out of them, or reads none."""
    for status_value in (status, {"opd": ours}):
        body = {"metadata": {"uid": "u", "name": "n", "resourceVersion": "1",
                             "annotations": annotations if isinstance(annotations, dict) else {}},
                "status": status_value}
        for mode in ("status", "annotations"):
            state = Storage(PersistenceSettings(storage=mode), has_status_subresource=True,
                            handler_ids=["h"]).read(body)
            assert state.diff_base is None or isinstance(state.diff_base, str)
            for record in state.progress.values():
                assert isinstance(record, dict)
                for key in ("started", "delayed", "retries"):
                    assert record.get(key) is None or isinstance(record[key], int | float)
                    float(record.get(key) or 0)  # what processing and execution do with them


def test_an_error_event_with_an_odd_status_is_an_error_of_the_server() -> None:
    watcher, _ = _watcher()
    for status in ({"code": "410"}, {"code": True}, {"code": 2**63 - 1}, {"reason": ["x"], "message": {"a": 1}}, {}):
        with pytest.raises(APIError) as caught:
            watcher.take(orjson.dumps({"type": "ERROR", "object": status}))
        assert caught.value.status == 500  # retried with backoff by run(), one line per kind
    with pytest.raises(APIError) as caught:
        watcher.take(b'{"type":"ERROR","object":{"code":410,"reason":"Expired","message":"' + b"m" * 10_000 + b'"}}')
    assert caught.value.status == 410 and len(caught.value.message) <= 80


def test_a_bookmark_without_a_version_keeps_the_stream_s_version() -> None:
    watcher, _ = _watcher()
    watcher.take(_good(1))
    for bookmark in ({}, {"metadata": None}, {"metadata": {"resourceVersion": 7}},
                     {"metadata": {"resourceVersion": ""}}, {"metadata": {"resourceVersion": "9" * 100}}):
        watcher.take(orjson.dumps({"type": "BOOKMARK", "object": bookmark}))
    assert watcher.resource_version == "1001"
    watcher.take(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"2000"}}}')
    assert watcher.resource_version == "2000"


async def test_a_listed_object_left_out_as_malformed_is_not_reported_deleted() -> None:
    """It is still there (only its shape is wrong): a relist that leaves it out must not make its
    handlers believe it was deleted. Its uid, when it has one, keeps it known."""
    for skipped, reported in ((set(), [("DELETED", "kept")]), ({"u1"}, [])):
        watcher, delivered = _watcher()
        watcher._known["u1"] = ("5", "ns", "kept")
        no_more_pages = PageBuffer(lambda raw: [])
        no_more_pages.finish()
        await watcher._deliver_list([], no_more_pages, set(), skipped, ListProgress())
        assert delivered == reported


pages = st.one_of(
    st.fixed_dictionaries({}, optional={
        "items": odd(st.lists(odd(objects | identified), max_size=4)),
        "metadata": odd(st.fixed_dictionaries({}, optional={
            "resourceVersion": odd(st.integers(1, 10**9).map(str)), "continue": odd(names),
            "remainingItemCount": odd(st.integers(-5, 10**6))})),
    }).map(orjson.dumps),
    json_values.map(orjson.dumps), st.binary(max_size=64))


@FUZZ
@given(page=pages)
def test_fuzz_any_list_page_is_parsed_and_checked_or_refused_in_one_line(page: bytes) -> None:
    """A LIST's page, as received (kept as bytes, parsed again when fed): a page of items with a
    version, or BadShape; its items then each either whole bodies or left out."""
    watcher, _ = _watcher()
    try:
        listed, version, token, remaining = watcher.parse(page)
    except shapes.BadShape as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(listed, list) and isinstance(version, str) and version
    assert token is None or isinstance(token, str)
    assert remaining is None or type(remaining) is int
    for item in watcher.checked(listed, set()):
        assert "kind" in item and "apiVersion" in item and item["metadata"]["uid"]
