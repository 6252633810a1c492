"""Handlers' keyword arguments: the one place they are made, for every kind of handler.

Each kind of cause has one function here that says what its handlers get; callers pass
what they know (typed) and get the kwargs back, so no caller assembles them by hand. As
in Kopf, a cause is the one source of kwargs, in three layers: what every handler of the
operator gets (``Operator``: ``settings``, ``memo``, ``api``), the cause's own, then the
operator's indexes, which win over a framework kwarg of their name (a new kwarg of opd's
can never shadow a user's index). What a call adds — ``param``, ``retry``, ``started``,
``runtime`` — is added here too, by ``invocation`` and ``execution``.

Kinds: ``activity`` (startup, cleanup, login, probe), ``Objects`` (one resource's
handlers: change, delete, event, index, timer, daemon, with their per-object memo and
live bodies), ``admission`` and ``conversion`` (webhooks).
"""

from __future__ import annotations

import copy
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opd.typedefs import Body, Diff, EventSink, ObjectLogger, body_kwargs, level_name, object_logger
from opd.typedefs import activity as activity_of

Kwargs = dict[str, Any]
Indexes = Callable[[], Mapping[str, Any]]  # the operator's indexes by name, as they are now


def _none() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Operator:
    """What every handler of one operator gets, whatever its cause."""

    settings: Any
    memo: Any
    # The handlers' own API client, made when first asked for; None before there is a connection
    # (login handlers say how to connect): no ``api`` then.
    api: Callable[[], Any] | None = None
    indexes: Indexes = field(default=_none)

    def kwargs(self) -> Kwargs:
        found: Kwargs = {"settings": self.settings, "memo": self.memo}
        if self.api is not None:
            found["api"] = self.api()
        return found


def _finish(operator: Operator, own: Kwargs) -> Kwargs:
    return {**operator.kwargs(), **own, **operator.indexes()}


# -- operator-level handlers --------------------------------------------------------------------------------------

def activity(operator: Operator, reason: str, *, name: str = "") -> Kwargs:
    """Startup, cleanup, login (Kopf's ``authentication``) and probe handlers: ``activity`` and a
    stdlib ``logger`` naming the operator (opd's log only: there is no object to post Events about)."""
    log = ObjectLogger({"operator": name} if name else {})
    return _finish(operator, {"logger": log, "activity": activity_of(reason)})


# -- one resource's handlers --------------------------------------------------------------------------------------

class Poster(Protocol):
    def post(self, body: Any, type: str, reason: str, message: str, /, *, level: str = ...) -> None: ...


class Objects:
    """The kwargs of one resource's handlers: ``body`` and its parts as Kopf's read-only views of it
    (one shallow copy per level, made once per event), a stdlib ``logger`` naming the object (its
    records also posted as Events, except for event and index handlers, as in Kopf), the object's
    own ``memo``, ``resource``, ``patch``, ``reason`` and what the cause adds."""

    def __init__(self, operator: Operator, *, resource: Any, poster: Poster | None) -> None:
        self.operator = operator
        self.resource = resource
        self.poster = poster
        self._memos: dict[str, Any] = {}  # uid -> the object's own memo (Kopf's), until it is gone
        self._live: dict[str, Body] = {}  # uid -> the body view its running timers and daemons see

    def _object(self, body: Mapping[str, Any], *, posting: bool, own: Kwargs) -> Kwargs:
        events = self._events(body) if posting else None
        return _finish(self.operator, {
            **body_kwargs(body), "logger": object_logger(body, resource=self.resource, events=events),
            "memo": self.memo(body), "resource": self.resource, **own,
        })

    def change(self, body: Mapping[str, Any], *, patch: Any, old: Any, new: Any, diff: Diff) -> Kwargs:
        """Change handlers (create, update, resume, delete, field) before the cause is known: see ``caused``."""
        return self._object(body, posting=True, own={"patch": patch, "old": old, "new": new, "diff": diff})

    def deleted(self, body: Mapping[str, Any], *, patch: Any, reason: str) -> Kwargs:
        """Optional delete handlers of an object already gone (best effort: nowhere to write)."""
        return self._object(body, posting=True, own={"reason": reason, "patch": patch})

    def event(self, body: Mapping[str, Any], *, event_type: str, patch: Any) -> Kwargs:
        """Event handlers: the raw ``event`` and its ``type``."""
        return self._object(body, posting=False, own={"event": {"type": event_type, "object": body},
                                                       "type": event_type, "patch": patch, "reason": "event"})

    def index(self, body: Mapping[str, Any], *, patch: Any) -> Kwargs:
        """Index handlers (Kopf's get a ``patch`` too: written as an event handler's is)."""
        return self._object(body, posting=False, own={"reason": "index", "patch": patch})

    def spawned(self, body: Mapping[str, Any], *, reason: str, stopped: Any, patch: Any) -> Kwargs:
        """Timers and daemons: ``stopped``, and a live body (the object's newest state while they run)."""
        uid = (body.get("metadata") or {}).get("uid")
        live = self._live.get(uid) if uid else None
        if live is None:
            live = Body(body)
            if uid:
                self._live[uid] = live
        return self._object(live, posting=True, own={"reason": reason, "patch": patch, "stopped": stopped})

    def keep_live(self, uid: str, body: Mapping[str, Any], *, running: bool) -> None:
        """The views running timers and daemons of ``uid`` hold: the newest state, or let go."""
        if not running:
            self._live.pop(uid, None)
        elif (live := self._live.get(uid)) is not None:
            live._replace_with(body)

    def stopped(self, uid: str) -> None:
        """Its timers and daemons are stopped: no live view to keep."""
        self._live.pop(uid, None)

    def forget(self, uid: str) -> None:
        """The object is gone (or another replica's): its memo and views go."""
        self._live.pop(uid, None)
        self._memos.pop(uid, None)

    def memo(self, body: Mapping[str, Any]) -> Any:
        """Kopf's per-object memo: a shallow copy of the operator's, made when the object is first
        seen and kept until it is gone (what startup handlers put in it is shared; what a handler
        sets on it is this object's)."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return self.operator.memo
        memo = self._memos.get(uid)
        if memo is None:
            memo = self._memos[uid] = copy.copy(self.operator.memo)
        return memo

    def _events(self, body: Mapping[str, Any]) -> EventSink | None:
        """Where a handler's log records about ``body`` go as Events (reason ``Logging``, as Kopf's):
        ``settings.posting`` decides (``loggers``, off by default as in Kopf; ``enabled``, ``level``)."""
        poster, posting = self.poster, self.operator.settings.posting
        if poster is None:
            return None

        def post(levelno: int, message: str) -> None:
            if posting.loggers:
                poster.post(body, "Normal" if levelno <= logging.INFO else "Warning", "Logging", message,
                            level=level_name(levelno))

        return post


def caused(kwargs: Kwargs, reason: str) -> Kwargs:
    """A change's kwargs once its cause is known."""
    return {**kwargs, "reason": reason}


def field_scoped(kwargs: Kwargs, *, old: Any, new: Any, diff: Diff) -> Kwargs:
    """A field-scoped handler's: the field's ``old``, ``new`` and ``diff`` instead of the object's."""
    return {**kwargs, "old": old, "new": new, "diff": diff}


def own_patch(kwargs: Kwargs, patch: Any) -> Kwargs:
    """One handler's call with a ``patch`` of its own (a bad one is dropped alone)."""
    return {**kwargs, "patch": patch}


def refreshed(kwargs: Kwargs, body: Mapping[str, Any]) -> None:
    """Point ``body`` and its parts at a newer read of the object (an earlier write moved it on)."""
    current = kwargs.get("body")
    if current is None or current.get("metadata") is not body.get("metadata"):
        kwargs.update(body_kwargs(body))


# -- webhooks -----------------------------------------------------------------------------------------------------

class AdmissionRequest(Protocol):
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def old(self) -> dict[str, Any] | None: ...
    @property
    def new(self) -> dict[str, Any] | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def operation(self) -> str: ...
    @property
    def subresource(self) -> str | None: ...
    @property
    def dryrun(self) -> bool: ...
    @property
    def userinfo(self) -> Mapping[str, Any]: ...


def admission(operator: Operator | None, request: AdmissionRequest, *, diff: Diff, headers: Mapping[str, str] | None,
              sslpeer: Mapping[str, Any] | None, warnings: list[str], patch: Any, resource: Any = None,
              logger: Any = None) -> Kwargs:
    """Admission (validating, mutating) handlers: the object as the same read-only views resource
    handlers get, ``old``/``new``/``diff``, the review's own fields, ``warnings`` to add to and the
    ``patch`` a mutation fills. No indexes, and a logger that posts no Events (there may be no object yet)."""
    viewed = body_kwargs(request.body)
    own: Kwargs = {
        **viewed,
        "name": request.name or viewed["name"], "namespace": request.namespace or viewed["namespace"],
        "old": Body(request.old) if request.old is not None else None,
        "new": Body(request.new) if request.new is not None else None,
        "diff": diff, "operation": request.operation, "subresource": request.subresource,
        "dryrun": request.dryrun, "userinfo": request.userinfo, "headers": dict(headers or {}),
        "sslpeer": dict(sslpeer or {}), "warnings": warnings, "patch": patch,
    }
    if logger is not None:
        own.update(resource=resource, logger=logger)
    return {**operator.kwargs(), **own} if operator is not None else own


def admitting(kwargs: Kwargs, *, reason: str, param: Any) -> Kwargs:
    """One admission handler's call of a review's kwargs."""
    return {**kwargs, "reason": reason, "param": param}


def conversion(operator: Operator, body: dict[str, Any], *, from_version: str | None, to_version: str | None,
               resource: Any, reason: str, param: Any, logger: Any) -> Kwargs:
    """Converters: the object itself, not views of it (a converter may change it in place and return
    None), and the step's ``from_version``/``to_version``. No indexes."""
    meta = body.get("metadata") or {}
    return {
        **operator.kwargs(), "body": body, "spec": body.get("spec") or {}, "meta": meta,
        "status": body.get("status") or {}, "name": meta.get("name"), "namespace": meta.get("namespace"),
        "uid": meta.get("uid"), "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {},
        "from_version": from_version, "to_version": to_version, "resource": resource, "reason": reason,
        "param": param, "logger": logger,
    }


# -- per call -----------------------------------------------------------------------------------------------------

def with_param(kwargs: Mapping[str, Any], param: Any) -> Kwargs:
    """What every call adds: the handler's ``param=`` (a review's handlers have it already)."""
    return {**kwargs, "param": param}


def tried(kwargs: Kwargs, *, retry: int, started: float, runtime: float) -> Kwargs:
    """A try's: ``retry`` (0 first), Kopf's types for the first try's start (an aware datetime) and
    the time since (a timedelta)."""
    return {**kwargs, "retry": retry, "started": datetime.datetime.fromtimestamp(started, datetime.UTC),
            "runtime": datetime.timedelta(seconds=runtime)}
