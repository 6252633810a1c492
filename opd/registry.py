"""Handler registries: an isolated set of handlers per operator.

The default registry (for decorators without ``registry=``) is kept in a
ContextVar: every thread sees one process-wide default unless a context sets
its own with ``set_default_registry()``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import functools
import inspect
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opd import aiocompat
from opd.resources import ResourceRef


class Reason(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RESUME = "resume"
    FIELD = "field"  # a change of one field, on creation or update
    EVENT = "event"
    TIMER = "timer"
    DAEMON = "daemon"
    STARTUP = "startup"
    CLEANUP = "cleanup"
    PROBE = "probe"
    LOGIN = "login"
    INDEX = "index"  # an in-memory index of a resource's objects (opd.index)
    VALIDATE = "validate"  # admission and conversion webhooks: called by the API server, never
    MUTATE = "mutate"  # by the engine's watch streams (kept out of resources() and for_resource())
    CONVERT = "convert"


CHANGING = frozenset({Reason.CREATE, Reason.UPDATE, Reason.DELETE, Reason.RESUME, Reason.FIELD})
SPAWNING = frozenset({Reason.TIMER, Reason.DAEMON})
# The handlers that keep state on objects (progress, diff-base, finalizers): only they put one in scope.
STATEFUL = CHANGING | SPAWNING
OPERATOR_LEVEL = frozenset({Reason.STARTUP, Reason.CLEANUP, Reason.PROBE, Reason.LOGIN})
WEBHOOKS = frozenset({Reason.VALIDATE, Reason.MUTATE, Reason.CONVERT})


class _Marker(enum.Enum):
    PRESENT = "PRESENT"
    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return f"opd.{self.value}"


PRESENT = _Marker.PRESENT
ABSENT = _Marker.ABSENT

FilterValue = str | _Marker | Callable[..., bool]


class ErrorsMode(enum.StrEnum):
    TEMPORARY = "temporary"  # retry with backoff (default)
    PERMANENT = "permanent"  # fail at the first error
    IGNORED = "ignored"  # log it, count the handler as done


@dataclass(frozen=True, eq=False)
class Handler:
    fn: Callable[..., Any]
    id: str
    reason: Reason
    resource: ResourceRef | None  # None for operator-level handlers (startup, cleanup, probe, login)
    labels: Mapping[str, FilterValue] | None = None
    annotations: Mapping[str, FilterValue] | None = None
    when: Callable[..., bool] | None = None
    errors: ErrorsMode = ErrorsMode.TEMPORARY
    timeout: float | None = None
    retries: int | None = None
    backoff: float | None = None
    optional: bool = False
    deleted: bool = False  # a resume handler that also runs for an object found being deleted (Kopf's)
    # A field path ('spec.size' -> ('spec', 'size')): the handler sees that field's old/new/diff,
    # runs on update only when it changed, and ``value``/``old``/``new`` filter on it.
    field: tuple[str, ...] | None = None
    value: FilterValue | None = None
    old: FilterValue | None = None
    new: FilterValue | None = None
    # Timers and daemons.
    interval: float | None = None
    initial_delay: float = 0.0
    idle: float | None = None
    sharp: bool = False  # a timer's interval counts from the start of a run, not its end
    cancellation_timeout: float | None = None
    cancellation_backoff: float | None = None  # Kopf's: the wait between ``stopped`` and cancelling
    # Kopf's ``param=``: any value, handed to the handler as its ``param`` kwarg.
    param: Any = None
    # The keyword arguments the function names; None when it takes **kwargs.
    accepts: frozenset[str] | None = None
    # The two ids a registration may have (None: ``id``): opd's short one (``id=`` or the function's
    # name) and Kopf's (``id=`` or the function's qualified name, then ``/<field>``). The registry
    # settles on the short one unless another handler of the resource shares it (see ``settle_ids``).
    short_id: str | None = None
    kopf_id: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def select_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.accepts is None:
            return kwargs
        return {k: v for k, v in kwargs.items() if k in self.accepts}


@dataclass(frozen=True, eq=False)
class WebhookHandler(Handler):
    """An admission handler (on.validate, on.mutate) or a converter (on.convert)."""

    operations: frozenset[str] | None = None  # CREATE, UPDATE, DELETE, CONNECT; None: all of them
    subresource: str | None = None  # the requests for this subresource only ("*": any); None: the object's
    persistent: bool = False  # stays in the managed configuration when the operator stops
    side_effects: bool = False  # has side effects, except when ``dryrun``
    ignore_failures: bool = False  # the API server admits the request when the webhook fails or is away
    from_version: str | None = None  # a converter's versions (e.g. "v1" -> "v2")
    to_version: str | None = None


def callable_id(fn: Callable[..., Any]) -> str:
    """Kopf's id of a function: its qualified name (``Class.method``, ``outer.<locals>.fn``), the
    wrapped function's for a partial or a ``functools.wraps`` wrapper, a lambda's file name and line."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    if isinstance(fn, types.FunctionType) and fn.__name__ == "<lambda>":
        # Kopf's names the file by its full path; its name alone keeps the id where opd is installed elsewhere.
        return f"lambda:{os.path.basename(fn.__code__.co_filename)}:{fn.__code__.co_firstlineno}"
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def handler_ids(fn: Callable[..., Any], id: str | None, field: tuple[str, ...] | None) -> tuple[str, str]:
    """(opd's short id, Kopf's id) of one registration: ``id=`` or the function's name; Kopf's is
    ``id=`` or its qualified name, then the field (``fn/spec.size``), so that two decorators on one
    function for two fields differ."""
    short = id or getattr(fn, "__name__", None) or callable_id(fn)
    kopf = id or callable_id(fn)
    return short, f"{kopf}/{'.'.join(field)}" if field else kopf


def settle_ids(handlers: list[Handler]) -> list[Handler]:
    """Each handler's id, distinct wherever Kopf's are: opd's short id where no other handler of its
    resource has it with another Kopf id (so that ids stored on objects by earlier versions stay);
    else the short id with Kopf's field suffix (``fn/data.a`` and ``fn/data.b`` for two stacked
    ``on.field``; ``fn`` and ``fn/spec.x`` for ``on.create`` over ``on.field``) where that tells
    them apart; else Kopf's id itself (``Class.fn``, ``lambda:file.py:12``)."""
    def suffixed(h: Handler) -> str:
        short, kopf = h.short_id or h.id, h.kopf_id or h.id
        field = kopf.rpartition("/")[2] if h.field is not None and kopf.endswith("/" + ".".join(h.field)) else ""
        return f"{short}/{field}" if field else short

    kopf_ids: dict[tuple[Any, str], set[str]] = {}
    for h in handlers:
        kopf_ids.setdefault((h.resource, h.short_id or h.id), set()).add(h.kopf_id or h.id)
        kopf_ids.setdefault((h.resource, "\0" + suffixed(h)), set()).add(h.kopf_id or h.id)
    settled = []
    for h in handlers:
        short, kopf = h.short_id or h.id, h.kopf_id or h.id
        if len(kopf_ids[(h.resource, short)]) == 1:
            want = short
        elif len(kopf_ids[(h.resource, "\0" + suffixed(h))]) == 1:
            want = suffixed(h)
        else:
            want = kopf
        settled.append(h if want == h.id else dataclasses.replace(h, id=want))
    return settled


def result_key(handler: Handler) -> str:
    """Where a handler's result goes in ``.status``: its id with Kopf's field suffix (``fn/spec.size``),
    as Kopf stores it, even where opd's own id is the short one: operators read each other's results
    there (a field handler on ``status.summary/status.x`` watches the result of ``summary``'s)."""
    if handler.field is None:
        return handler.id
    suffix = "/" + ".".join(handler.field)
    return handler.id if handler.id.endswith(suffix) else handler.id + suffix


@functools.lru_cache(maxsize=1024)
def accepted_kwargs(fn: Callable[..., Any]) -> frozenset[str] | None:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def value_ok(present: bool, actual: Any, want: FilterValue | None, **kw: Any) -> bool:
    """One value against a filter: an exact value, PRESENT, ABSENT, or a callable(value, **kwargs)."""
    if want is None:
        return True
    if want is PRESENT:
        return present
    if want is ABSENT:
        return not present
    if callable(want):
        return present and bool(call_with(want, actual, **kw))
    return present and actual == want


def call_with(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a filter callback with only the keyword arguments it names (or all, with **kwargs)."""
    accepts = accepted_kwargs(fn)
    return fn(*args, **(kwargs if accepts is None else {k: v for k, v in kwargs.items() if k in accepts}))


def resolve_field(body: Mapping[str, Any] | None, path: tuple[str, ...]) -> tuple[bool, Any]:
    """(present, value) of a dotted field in a body."""
    node: Any = body
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _filter_ok(actual: Mapping[str, str], wanted: Mapping[str, FilterValue] | None, **kw: Any) -> bool:
    if not wanted:
        return True
    for key, want in wanted.items():
        if want is PRESENT:
            ok = key in actual
        elif want is ABSENT:
            ok = key not in actual
        elif callable(want):
            ok = key in actual and bool(call_with(want, actual[key], **kw))
        else:
            ok = actual.get(key) == want
        if not ok:
            return False
    return True


def matches(handler: Handler, body: Mapping[str, Any], kwargs: dict[str, Any]) -> bool:
    meta = body.get("metadata", {})
    if not _filter_ok(meta.get("labels") or {}, handler.labels, **kwargs):
        return False
    if not _filter_ok(meta.get("annotations") or {}, handler.annotations, **kwargs):
        return False
    if handler.field is not None and handler.value is not None:
        present, actual = resolve_field(body, handler.field)
        if not value_ok(present, actual, handler.value, **kwargs):
            return False
    return handler.when is None or bool(call_with(handler.when, **kwargs))


def _common_requirement(key: str, wants: list[FilterValue]) -> str | None:
    """The label requirement all handlers' filters on ``key`` imply, as selector syntax."""
    if all(isinstance(w, str) for w in wants) and len(set(wants)) == 1:
        return f"{key}={wants[0]}"
    if all(w is not ABSENT for w in wants):  # values, PRESENT and callables all need the label
        return key
    if all(w is ABSENT for w in wants):
        return f"!{key}"
    return None


class OperatorRegistry:
    """An isolated set of handlers; an operator runs exactly one."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def __repr__(self) -> str:
        return f"<OperatorRegistry with {len(self._handlers)} handlers>"

    def append(self, handler: Handler) -> None:
        """Add a handler. One function under several decorators is several registrations (each its
        own id where Kopf's differ, e.g. by field); the same id twice for one function is one handler
        that any of them selects (run once per cause, as Kopf's). Two different functions with one id
        for one resource and cause would share their progress on objects: refused."""
        handlers = settle_ids([*self._handlers, handler])
        new = handlers[-1]
        for h in handlers[:-1]:
            if h.id == new.id and h.resource == new.resource and h.reason == new.reason and h.fn is not new.fn:
                raise ValueError(f"duplicate handler id {new.id!r} for {new.resource} ({new.reason}): "
                                 f"{callable_id(h.fn)} and {callable_id(new.fn)}; give one of them another id=")
        self._handlers = handlers
        if self is _default:
            # A process-wide operator is being declared, to be run as Kopf's embedding shows it: maybe from a
            # thread of its own that asks the policy for its loop. Not done at import, nor for isolated registries.
            aiocompat.install()

    @property
    def handlers(self) -> tuple[Handler, ...]:
        return tuple(self._handlers)

    def resources(self) -> list[ResourceRef]:
        """The resources to watch: webhooks' resources are not watched for them."""
        return list(dict.fromkeys(h.resource for h in self._handlers
                                  if h.resource is not None and h.reason not in WEBHOOKS))

    def webhooks(self, *reasons: Reason) -> list[WebhookHandler]:
        """Admission handlers and converters (those of ``reasons``, or all), in registration order."""
        wanted = set(reasons or WEBHOOKS)
        return [h for h in self._handlers if isinstance(h, WebhookHandler) and h.reason in wanted]

    def operator_handlers(self, reason: Reason) -> list[Handler]:
        return [h for h in self._handlers if h.reason == reason]

    def for_resource(self, ref: ResourceRef, reasons: Iterable[Reason] | None = None) -> list[Handler]:
        wanted = set(reasons) if reasons is not None else None
        return [h for h in self._handlers if h.resource == ref and h.reason not in WEBHOOKS
                and (wanted is None or h.reason in wanted)]

    def label_selector(self, ref: ResourceRef) -> str | None:
        """Label requirements every handler of the resource shares: safe to filter server-side.

        Also when handlers hold finalizers: an object that leaves this selector while opd holds
        one is found by a second, narrow stream on the label opd sets with it (see processing)."""
        handlers = self.for_resource(ref)
        if not handlers or any(not h.labels for h in handlers):
            return None
        keys = set.intersection(*(set(h.labels or ()) for h in handlers))
        found = (_common_requirement(k, [(h.labels or {})[k] for h in handlers]) for k in sorted(keys))
        return ",".join(r for r in found if r) or None


_default = OperatorRegistry()
_default_registry: contextvars.ContextVar[OperatorRegistry] = contextvars.ContextVar(
    "opd_default_registry", default=_default
)


def get_default_registry() -> OperatorRegistry:
    return _default_registry.get()


def set_default_registry(registry: OperatorRegistry) -> None:
    """Make ``registry`` the default for decorators and operators in the current context."""
    _default_registry.set(registry)
