"""What handlers get, spelled as Kopf spells it (``kopf.Body`` → ``opd.Body``), and type names for signatures.

``Body``, ``Meta``, ``Spec``, ``Status``, ``Labels``, ``Annotations`` are read-only dicts with
Kopf's attribute access (``body.metadata.name``, ``meta.labels``, ``body.spec.get('x')``):
``isinstance(body, opd.Body)`` holds, writes raise ``TypeError`` (fill ``patch`` instead), and
``dict(body)``, ``json.dumps(body)`` and ``copy.deepcopy(body)`` (a plain dict) work. Each is one
shallow copy of its level of the object, nothing deeper: cheap per event.

``ObjectLogger`` is a handler's ``logger``: a stdlib ``logging.LoggerAdapter`` (as Kopf's) whose
records go to opd's log with the object named, and, for resource handlers, to the object's
Events as ``settings.posting`` says (reason ``Logging``, as Kopf posts them).
"""

from __future__ import annotations

import copy
import enum
import logging
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Literal, NamedTuple, NoReturn, TypeAlias, TypedDict, cast

from loguru import logger as _loguru

# -- an object and its parts (as in a handler's ``body``, ``spec``, ``meta``...) -------------------------------------
RawBody: TypeAlias = MutableMapping[str, Any]  # an object as the API sends it
BodyEssence: TypeAlias = Mapping[str, Any]  # what the diff-base keeps: spec, labels, annotations


class _View(dict[str, Any]):
    """A read-only dict: a shallow copy of one level of an object (nested values are the object's)."""

    __slots__ = ()

    def __init__(self, src: Mapping[str, Any] | None = None) -> None:
        # Whoever may write the object may put a list or a string where a table belongs (a custom
        # resource's spec is free-form): such a part reads as empty; the raw value stays in ``body``.
        super().__init__(src if isinstance(src, Mapping) else ())

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only: fill the handler's patch to change the object")

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    # Copies are plain dicts, free to change (the object itself never changes through them).
    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self),)

    def copy(self) -> dict[str, Any]:
        return dict(self)

    def _replace_with(self, src: Mapping[str, Any] | None) -> None:
        """Become a view of a newer state of the same part (Kopf's name): for the live views a
        daemon keeps. Keys are set before the gone ones go, so a reader never misses a kept key."""
        src = src if isinstance(src, Mapping) else {}
        dict.update(self, src)
        for key in [k for k in self if k not in src]:
            dict.__delitem__(self, key)


class Labels(_View):
    """An object's labels (empty when it has none)."""

    __slots__ = ()


class Annotations(_View):
    """An object's annotations (empty when it has none)."""

    __slots__ = ()


class Spec(_View):
    """``body['spec']`` (empty when absent)."""

    __slots__ = ()


class Status(_View):
    """``body['status']`` (empty when absent)."""

    __slots__ = ()


class Meta(_View):
    """``body['metadata']``, with Kopf's properties; ``name``, ``namespace``... are None when absent."""

    __slots__ = ("_annotations", "_labels")

    def __init__(self, src: Mapping[str, Any] | None = None) -> None:
        super().__init__(src)
        self._labels: Labels | None = None
        self._annotations: Annotations | None = None

    def _replace_with(self, src: Mapping[str, Any] | None) -> None:
        super()._replace_with(src)
        if self._labels is not None:
            self._labels._replace_with(self.get("labels") or {})
        if self._annotations is not None:
            self._annotations._replace_with(self.get("annotations") or {})

    @property
    def labels(self) -> Labels:
        if self._labels is None:
            self._labels = Labels(self.get("labels") or {})
        return self._labels

    @property
    def annotations(self) -> Annotations:
        if self._annotations is None:
            self._annotations = Annotations(self.get("annotations") or {})
        return self._annotations

    @property
    def uid(self) -> str:
        return cast(str, self.get("uid"))  # None only for a made-up object, as Kopf's

    @property
    def name(self) -> str:
        return cast(str, self.get("name"))  # None only for a made-up object, as Kopf's

    @property
    def namespace(self) -> str | None:
        return self.get("namespace")

    @property
    def creation_timestamp(self) -> str | None:
        return self.get("creationTimestamp")

    @property
    def deletion_timestamp(self) -> str | None:
        return self.get("deletionTimestamp")


class Body(_View):
    """A handled object: ``body.metadata`` (also ``body.meta``), ``body.spec``, ``body.status``."""

    __slots__ = ("_meta", "_spec", "_status")

    def __init__(self, src: Mapping[str, Any] | None = None) -> None:
        super().__init__(src)
        self._meta: Meta | None = None
        self._spec: Spec | None = None
        self._status: Status | None = None

    def _replace_with(self, src: Mapping[str, Any] | None) -> None:
        super()._replace_with(src)
        for part, key in ((self._meta, "metadata"), (self._spec, "spec"), (self._status, "status")):
            if part is not None:
                part._replace_with(self.get(key))

    @property
    def metadata(self) -> Meta:
        if self._meta is None:
            self._meta = Meta(self.get("metadata"))
        return self._meta

    @property
    def meta(self) -> Meta:
        return self.metadata

    @property
    def spec(self) -> Spec:
        if self._spec is None:
            self._spec = Spec(self.get("spec"))
        return self._spec

    @property
    def status(self) -> Status:
        if self._status is None:
            self._status = Status(self.get("status"))
        return self._status


def body_kwargs(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A handler's object kwargs for one object: ``body`` and its parts, as views of it."""
    body = raw if isinstance(raw, Body) else Body(raw)
    meta = body.metadata
    return {"body": body, "spec": body.spec, "meta": meta, "status": body.status,
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "labels": meta.labels, "annotations": meta.annotations}


# -- a handler's logger -------------------------------------------------------------------------------------------
Logger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]  # Kopf's: what a handler's ``logger`` is
# Posts one Event for a record: (levelno, message); the engine binds it to the object and its poster.
EventSink = Callable[[int, str], None]
_FIELDS = "opd_fields"  # on a record: the fields opd's log shows with it (object, resource, extra=...)
_SINK = "opd_sink"  # on a record: where its Event goes (None: not posted)


_TRACE = 5  # loguru's TRACE
_STDLIB = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})


def _fitted(msg: Any, args: tuple[Any, ...], named: Mapping[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """The stdlib's ``%``-style message and arguments, left for logging to format; a message written
    for opd's former loguru logger (``{}``-style, or keyword arguments) is formatted here, so that
    every handler of the record sees a finished message."""
    error: Exception | None = None
    if not named:
        try:
            str(msg) % (args[0] if len(args) == 1 and isinstance(args[0], Mapping) and args[0] else args)
            return msg, args
        except (TypeError, ValueError, KeyError) as exc:
            error = exc
    if named or "{" in str(msg):
        try:
            return str(msg).format(*args, **named), ()
        except (IndexError, KeyError, ValueError, AttributeError) as exc:
            error = error or exc
    # A user's mistake: one line with the message and what did not fit, never logging's traceback.
    return (f"{str(msg)[:200]!r} with arguments {str(args)[:200]}{f' {dict(named)}'[:200] if named else ''} "
            f"(a log call whose format does not fit them: {type(error).__name__}: {error})"), ()


def level_name(levelno: int) -> str:
    """The name ``settings.posting.level`` compares with: debug, info, warning or error."""
    return "debug" if levelno <= logging.DEBUG else "info" if levelno <= logging.INFO else (
        "warning" if levelno <= logging.WARNING else "error")


class _ToOpdLog(logging.Handler):
    """Hands an object logger's records to opd's log (loguru), with their fields, then to Events."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # a record made elsewhere whose format does not fit: one line all the same
            message = _fitted(record.msg, (record.args,) if isinstance(record.args, Mapping) else record.args or (),
                              {})[0] if record.args else f"{record.msg!r} ({type(exc).__name__}: {exc})"
        if record.stack_info:
            message = f"{message}\n{record.stack_info}"
        fields = getattr(record, _FIELDS, None) or {}
        try:
            level: str | int = "TRACE" if record.levelno == _TRACE else _loguru.level(record.levelname).name
        except ValueError:
            level = record.levelno
        _loguru.opt(exception=record.exc_info or None).bind(**fields).log(level, message)
        sink: EventSink | None = getattr(record, _SINK, None)
        if sink is not None:
            sink(record.levelno, message)


_OBJECTS = logging.getLogger("opd.objects")
_OBJECTS.propagate = False  # opd's log gets them once, with their fields, through its own handler
_OBJECTS.setLevel(1)  # opd's log level filters (``--verbose``, trace too), not the stdlib's root level
if not any(isinstance(h, _ToOpdLog) for h in _OBJECTS.handlers):
    _OBJECTS.addHandler(_ToOpdLog())


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """A handler's ``logger``: ``logger.info('copied %s to %s', a, b)``, ``exc_info=``, ``extra=``,
    ``stacklevel=``... as the stdlib's; lines name the object (``fields``), and with ``events``
    each record at ``settings.posting.level`` or above is also posted as an Event about it."""

    def __init__(self, fields: Mapping[str, Any] | None = None, *, events: EventSink | None = None,
                 body: Mapping[str, Any] | None = None, settings: Any = None) -> None:
        # Kopf's spelling, ObjectLogger(body=, settings=), names the object; opd posts Events only
        # from the loggers it hands to handlers (it knows the poster there).
        del settings
        self._fields = dict(fields or {}) if body is None else {**_naming(body), **dict(fields or {})}
        self._events = events
        super().__init__(_OBJECTS, {_FIELDS: self._fields, _SINK: events})

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        named = {key: kwargs.pop(key) for key in list(kwargs) if key not in _STDLIB}
        if args or named:
            msg, args = _fitted(msg, args, named)
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        # The stdlib would replace a call's extra= by the adapter's: both are kept, as Kopf keeps them.
        own: dict[str, Any] = {_FIELDS: self._fields, _SINK: self._events}
        extra = dict(kwargs.get("extra") or {})
        if extra.get("k8s_skip"):  # Kopf's way to keep one record out of the Events
            own[_SINK] = None
        shown = {k: v for k, v in extra.items() if not str(k).startswith(("_", "k8s_"))}
        if shown:
            own[_FIELDS] = {**self._fields, **shown}
        kwargs["extra"] = {**extra, **own}
        return msg, kwargs

    def bind(self, **fields: Any) -> ObjectLogger:
        """loguru's spelling, kept for handlers written for opd: the same logger with more fields."""
        return ObjectLogger({**self._fields, **fields}, events=self._events)

    def success(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """loguru's level between info and warning, kept for handlers written for opd (an info record)."""
        self.log(logging.INFO, msg, *args, **kwargs)

    def trace(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """loguru's level below debug, kept for handlers written for opd (shown with ``--log-level trace``)."""
        self.log(_TRACE, msg, *args, **kwargs)


class LocalObjectLogger(ObjectLogger):
    """Kopf's object logger that posts no Events (opd's log only)."""

    def __init__(self, fields: Mapping[str, Any] | None = None, *, events: EventSink | None = None,
                 body: Mapping[str, Any] | None = None, settings: Any = None) -> None:
        del events
        super().__init__(fields, body=body, settings=settings)


def _naming(raw: Mapping[str, Any]) -> dict[str, str]:
    meta = raw.get("metadata") or {}
    return {"object": f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))}


def object_logger(raw: Mapping[str, Any], *, resource: Any, events: EventSink | None = None,
                  extra: Iterable[tuple[str, Any]] = ()) -> ObjectLogger:
    """The logger of a handler called for one object: its lines name it (``namespace/name``)."""
    return ObjectLogger({**_naming(raw), "resource": str(resource), **dict(extra)}, events=events)


RawEventType = Literal[None, "ADDED", "MODIFIED", "DELETED"]


class RawEvent(TypedDict):
    """An event handler's ``event``: the watch event's type and the object."""

    type: RawEventType
    object: RawBody


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    namespace: str | None


class Activity(enum.StrEnum):
    """An operator-level handler's ``activity`` kwarg, as Kopf names them."""

    STARTUP = "startup"
    CLEANUP = "cleanup"
    AUTHENTICATION = "authentication"
    PROBE = "probe"


def activity(reason: str) -> Activity:
    """The ``activity`` of an operator-level handler's reason (``login`` is Kopf's authentication)."""
    return Activity.AUTHENTICATION if reason == "login" else Activity(reason)


# -- diffs (``old``/``new``/``diff`` of update and field handlers) ---------------------------------------------------
class DiffOperation(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"

    def __repr__(self) -> str:  # a diff printed in a log reads as Kopf's: ('change', ('spec', 'size'), 1, 2)
        return repr(self.value)


FieldPath: TypeAlias = tuple[str, ...]
FieldSpec: TypeAlias = str | Sequence[str]  # 'spec.field' or ('spec', 'field'), as field= takes it


class DiffItem(NamedTuple):
    """One change, as Kopf gives it: a tuple ``(operation, field, old, new)`` with those names."""

    operation: DiffOperation
    field: FieldPath
    old: Any
    new: Any

    @property
    def op(self) -> DiffOperation:
        return self.operation

    def __repr__(self) -> str:
        return repr(tuple(self))


class Diff(tuple[DiffItem, ...]):
    """A handler's ``diff``: a tuple of ``DiffItem`` (equal to plain tuples, a JSON list of lists)."""

    __slots__ = ()

    def __new__(cls, items: Iterable[Sequence[Any]] = ()) -> Diff:
        return super().__new__(cls, (item if isinstance(item, DiffItem) else DiffItem(
            DiffOperation(item[0]), tuple(item[1]), item[2], item[3]) for item in items))

HandlerId: TypeAlias = str


class DaemonStoppingReason(enum.StrEnum):
    """Why a daemon's ``stopped`` is set: ``stopped.reason`` equals one of these."""

    FILTERS_MISMATCH = "filters no longer match"
    RESOURCE_DELETED = "object deleted"
    OPERATOR_EXITING = "operator stopping"
    OPERATOR_PAUSING = "no longer this replica's"  # another replica took the object (Leases; Kopf: peering)


# -- admission webhooks (handlers' ``headers``, ``sslpeer``, ``userinfo``) -----------------------------------------
Headers: TypeAlias = Mapping[str, str]
SSLPeer: TypeAlias = Mapping[str, Any]


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]

