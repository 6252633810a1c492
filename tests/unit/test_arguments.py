"""The one builder of handlers' kwargs (``opd.engine.arguments``): every kwarg Kopf gives each kind
of handler, opd's own (``settings``, ``api``), the indexes winning over a framework kwarg of their
name, the per-object memo, live bodies for timers and daemons, and which loggers post Events."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

import opd
from opd.engine import arguments
from opd.settings import OperatorSettings
from opd.typedefs import Activity, Body, Diff

# What Kopf gives every handler called for one object (its ResourceCause) ...
KOPF_RESOURCE = {"body", "spec", "meta", "status", "uid", "name", "namespace", "labels", "annotations",
                 "logger", "memo", "patch", "resource"}
OPD_COMMON = {"settings", "api"}  # ... and what opd adds for every handler of a connected operator
KOPF_BY_KIND = {  # each kind's own, on top of that (Kopf's causes)
    "change": {"reason", "old", "new", "diff"},
    "deleted": {"reason"},
    "event": {"type", "event", "reason"},
    "index": {"reason"},
    "spawned": {"reason", "stopped"},
}
KOPF_ACTIVITY = {"activity", "settings", "memo", "logger"}
KOPF_ADMISSION = KOPF_RESOURCE | {"dryrun", "headers", "sslpeer", "userinfo", "warnings", "operation",
                                  "subresource", "old", "new", "diff"}
PER_CALL = {"param", "retry", "started", "runtime"}  # added by the call: execution and invocation

BODY = {"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "n", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}, "annotations": {"c": "d"}},
        "spec": {"size": 1}, "status": {"phase": "x"}}


@dataclass
class Poster:
    posted: list[tuple[str, str, str]] = field(default_factory=list)

    def post(self, body: Any, type: str, reason: str, message: str, *, level: str = "info") -> None:
        self.posted.append((type, reason, message))


class Client:
    made = 0

    def __call__(self) -> str:
        self.made += 1
        return "the-api-client"


@pytest.fixture
def settings() -> OperatorSettings:
    settings = OperatorSettings()
    settings.posting.loggers = True
    return settings


def _objects(settings: OperatorSettings, *, indexes: dict[str, Any] | None = None,
             poster: Poster | None = None) -> arguments.Objects:
    operator = arguments.Operator(settings=settings, memo=opd.Memo(shared=1), api=Client(),
                                  indexes=lambda: dict(indexes or {}))
    return arguments.Objects(operator, resource="kopfexamples.kopf.dev", poster=poster)


def _kinds(objects: arguments.Objects) -> dict[str, dict[str, Any]]:
    patch = opd.Patch()
    change = objects.change(BODY, patch=patch, old=None, new=BODY["spec"], diff=Diff(()))
    return {
        "change": arguments.caused(change, "create"),
        "deleted": objects.deleted(BODY, patch=patch, reason="delete"),
        "event": objects.event(BODY, event_type="ADDED", patch=patch),
        "index": objects.index(BODY, patch=patch),
        "spawned": objects.spawned(BODY, reason="daemon", stopped="the-stopper", patch=patch),
    }


@pytest.mark.parametrize("kind", sorted(KOPF_BY_KIND))
def test_every_kopf_kwarg_of_each_kind_of_resource_handler(settings: OperatorSettings, kind: str) -> None:
    kwargs = _kinds(_objects(settings))[kind]
    assert set(kwargs) == KOPF_RESOURCE | KOPF_BY_KIND[kind] | OPD_COMMON
    assert isinstance(kwargs["body"], Body) and kwargs["body"] == BODY
    assert (kwargs["spec"], kwargs["meta"], kwargs["status"]) == (BODY["spec"], BODY["metadata"], BODY["status"])
    assert (kwargs["uid"], kwargs["name"], kwargs["namespace"]) == ("u1", "n", "ns")
    assert (kwargs["labels"], kwargs["annotations"]) == ({"a": "b"}, {"c": "d"})
    assert kwargs["resource"] == "kopfexamples.kopf.dev" and kwargs["settings"] is settings
    assert kwargs["api"] == "the-api-client" and isinstance(kwargs["logger"], logging.LoggerAdapter)
    assert kwargs["memo"].shared == 1


def test_the_kinds_own_values(settings: OperatorSettings) -> None:
    kinds = _kinds(_objects(settings))
    assert kinds["change"]["reason"] == "create" and kinds["change"]["old"] is None
    assert kinds["change"]["new"] == {"size": 1} and kinds["change"]["diff"] == ()
    assert kinds["event"]["type"] == "ADDED" and kinds["event"]["event"] == {"type": "ADDED", "object": BODY}
    assert (kinds["event"]["reason"], kinds["index"]["reason"]) == ("event", "index")
    assert kinds["spawned"]["stopped"] == "the-stopper" and kinds["spawned"]["reason"] == "daemon"
    field_scoped = arguments.field_scoped(kinds["change"], old=1, new=2, diff=Diff((("change", (), 1, 2),)))
    assert (field_scoped["old"], field_scoped["new"], field_scoped["reason"]) == (1, 2, "create")
    mine = opd.Patch()
    assert arguments.own_patch(field_scoped, mine)["patch"] is mine and field_scoped["patch"] is not mine


def test_indexes_win_over_a_framework_kwarg_of_their_name(settings: OperatorSettings) -> None:
    kinds = _kinds(_objects(settings, indexes={"by_name": {"n": ["x"]}, "labels": "an index"}))
    for kwargs in kinds.values():
        assert kwargs["by_name"] == {"n": ["x"]} and kwargs["labels"] == "an index"
    operator = arguments.Operator(settings=settings, memo=None, indexes=lambda: {"memo": "an index"})
    assert arguments.activity(operator, "startup")["memo"] == "an index"


def test_each_object_has_its_own_memo_until_it_is_forgotten(settings: OperatorSettings) -> None:
    objects = _objects(settings)
    first = objects.index(BODY, patch=opd.Patch())["memo"]
    first.mine = "set by a handler"
    again = objects.event(BODY, event_type="MODIFIED", patch=opd.Patch())["memo"]
    other = objects.index({**BODY, "metadata": {"uid": "u2", "name": "m"}}, patch=opd.Patch())["memo"]
    assert again is first and other is not first and not hasattr(other, "mine")
    assert first.shared == other.shared == 1 and first is not objects.operator.memo
    objects.forget("u1")
    assert not hasattr(objects.index(BODY, patch=opd.Patch())["memo"], "mine")
    assert objects.memo({"metadata": {}}) is objects.operator.memo  # no uid: the operator's own


def test_timers_and_daemons_see_the_newest_body_while_they_run(settings: OperatorSettings) -> None:
    objects = _objects(settings)
    first = objects.spawned(BODY, reason="timer", stopped=None, patch=opd.Patch())["body"]
    newer = {**BODY, "spec": {"size": 2}}
    objects.keep_live("u1", newer, running=True)
    assert first["spec"] == {"size": 2}
    assert objects.spawned(newer, reason="timer", stopped=None, patch=opd.Patch())["body"] is first
    objects.keep_live("u1", newer, running=False)  # stopped: the next one gets a view of its own
    assert objects.spawned(newer, reason="timer", stopped=None, patch=opd.Patch())["body"] is not first


def test_only_change_delete_timer_and_daemon_loggers_post_events(settings: OperatorSettings) -> None:
    poster = Poster()
    kinds = _kinds(_objects(settings, poster=poster))
    for kind, kwargs in kinds.items():
        kwargs["logger"].warning("from %s", kind)
    assert sorted(message for _, _, message in poster.posted) == ["from change", "from deleted", "from spawned"]
    assert {(type_, reason) for type_, reason, _ in poster.posted} == {("Warning", "Logging")}


def test_activity_handlers_get_every_kopf_kwarg(settings: OperatorSettings) -> None:
    client = Client()
    connected = arguments.Operator(settings=settings, memo=opd.Memo(), api=client, indexes=lambda: {"idx": 1})
    for reason, activity in (("startup", Activity.STARTUP), ("cleanup", Activity.CLEANUP),
                             ("probe", Activity.PROBE), ("login", Activity.AUTHENTICATION)):
        kwargs = arguments.activity(connected, reason, name="op")
        assert set(kwargs) == KOPF_ACTIVITY | {"api", "idx"} and kwargs["activity"] == activity
        assert kwargs["memo"] is connected.memo and kwargs["settings"] is settings
    # Before a connection (login handlers say how to connect): no api, and no client made for it.
    before = arguments.Operator(settings=settings, memo=None)
    assert set(arguments.activity(before, "login")) == KOPF_ACTIVITY
    made = client.made
    arguments.Objects(connected, resource="r", poster=None)
    assert client.made == made  # made when a handler's kwargs ask for it, not before


@dataclass
class Request:
    body: dict[str, Any]
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    name: str | None = None
    namespace: str | None = None
    operation: str = "UPDATE"
    subresource: str | None = None
    dryrun: bool = True
    userinfo: dict[str, Any] = field(default_factory=lambda: {"username": "me"})


def test_admission_handlers_get_every_kopf_kwarg(settings: OperatorSettings) -> None:
    operator = arguments.Operator(settings=settings, memo="memo", api=Client(), indexes=lambda: {"idx": 1})
    request = Request(body=BODY, old={"spec": {"size": 0}}, new=BODY)
    warnings: list[str] = []
    kwargs = arguments.admission(operator, request, diff=Diff(()), headers={"H": "v"}, sslpeer=None,
                                 warnings=warnings, patch=opd.Patch(), resource="r", logger="a logger")
    assert set(kwargs) == KOPF_ADMISSION | OPD_COMMON  # no indexes for webhooks
    assert kwargs["warnings"] is warnings and kwargs["dryrun"] is True and kwargs["userinfo"] == {"username": "me"}
    assert isinstance(kwargs["old"], Body) and kwargs["old"] == {"spec": {"size": 0}}
    assert (kwargs["headers"], kwargs["sslpeer"], kwargs["operation"]) == ({"H": "v"}, {}, "UPDATE")
    assert (kwargs["name"], kwargs["namespace"], kwargs["logger"]) == ("n", "ns", "a logger")
    one = arguments.admitting(kwargs, reason="validate", param=7)
    assert (one["reason"], one["param"]) == ("validate", 7) and "reason" not in kwargs
    alone = arguments.admission(None, Request(body={}, old=None, new=None, name="x"), diff=Diff(()), headers=None,
                                sslpeer=None, warnings=[], patch=opd.Patch())
    assert set(alone) == KOPF_ADMISSION - {"logger", "memo", "resource"} and alone["name"] == "x"


def test_converters_get_the_object_itself(settings: OperatorSettings) -> None:
    operator = arguments.Operator(settings=settings, memo="memo", indexes=lambda: {"idx": 1})
    body = {"apiVersion": "g/v1", "metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"x": 1}}
    kwargs = arguments.conversion(operator, body, from_version="v1", to_version="v2", resource="r",
                                  reason="convert", param=None, logger="a logger")
    assert set(kwargs) == {"body", "spec", "meta", "status", "uid", "name", "namespace", "labels", "annotations",
                           "from_version", "to_version", "resource", "reason", "param", "logger", "memo",
                           "settings"}
    assert kwargs["body"] is body and kwargs["spec"] is body["spec"] and kwargs["meta"] is body["metadata"]
    assert (kwargs["from_version"], kwargs["to_version"], kwargs["name"]) == ("v1", "v2", "n")


def test_what_each_call_adds() -> None:
    tried = arguments.tried({"a": 1}, retry=2, started=0.0, runtime=1.5)
    assert set(tried) == {"a"} | PER_CALL - {"param"} and tried["retry"] == 2
    assert tried["started"] == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert tried["runtime"] == datetime.timedelta(seconds=1.5)
    assert arguments.with_param(tried, "p")["param"] == "p" and "param" not in tried


def test_a_newer_read_of_the_object_replaces_the_views() -> None:
    kwargs = {"body": Body(BODY), "patch": "kept"}
    newer = {**BODY, "metadata": {**BODY["metadata"], "resourceVersion": "2"}}
    arguments.refreshed(kwargs, newer)
    assert kwargs["body"] == newer and kwargs["meta"]["resourceVersion"] == "2" and kwargs["patch"] == "kept"
