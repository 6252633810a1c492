"""Decorators that register handlers: ``@opd.on.create('kopfexamples')`` and friends.

Every decorator registers into ``registry=`` or, without it, into the default
registry of the current context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opd.errors import ConfigError
from opd.registry import (
    ErrorsMode,
    FilterValue,
    Handler,
    OperatorRegistry,
    Reason,
    accepted_kwargs,
    get_default_registry,
)
from opd.resources import ResourceRef
from opd.subhandlers import subhandler

F = TypeVar("F", bound=Callable[..., Any])
Filters = Mapping[str, FilterValue] | None


def _register(reason: Reason, resource: tuple[str, ...] | None, *, group: str | None = None,
              version: str | None = None, kind: str | None = None, plural: str | None = None,
              singular: str | None = None, shortcut: str | None = None, category: str | None = None,
              id: str | None = None, registry: OperatorRegistry | None = None,
              errors: ErrorsMode | str | None = None, field: str | Sequence[str] | None = None,
              **options: Any) -> Callable[[F], F]:
    if category is not None:
        raise ConfigError(f"category={category!r}: opd selects resources by name, not by category: name the resource")
    if resource and len(resource) == 3 and resource[0] == "":  # Kopf's ('', 'v1', 'pods'): the core group
        resource = resource[1:]
    ref = None if resource is None else ResourceRef.parse(*resource, group=group, version=version,
                                                         plural=plural or singular or shortcut, kind=kind)
    for what in ("labels", "annotations"):
        for key, want in (options.get(what) or {}).items():
            if want is None:  # it would mean "absent" by accident: Kopf refuses it too
                raise ConfigError(f"{what}={{{key!r}: None}}: use opd.PRESENT (or opd.ABSENT) to ask for a "
                                  f"{what[:-1]} that is there (or not), whatever its value")
    path = tuple(field.split(".")) if isinstance(field, str) else tuple(field) if field else None

    def decorate(fn: F) -> F:
        target = registry if registry is not None else get_default_registry()
        target.append(Handler(
            fn=fn, id=id or fn.__name__, reason=reason, resource=ref, field=path,
            errors=ErrorsMode(errors) if errors is not None else ErrorsMode.TEMPORARY,
            accepts=accepted_kwargs(fn), **options,
        ))
        return fn

    return decorate


def create(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           registry: OperatorRegistry | None = None,
           labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
           field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           ) -> Callable[[F], F]:
    """Run once when an object is first seen without opd's diff-base (i.e. newly created)."""
    return _register(Reason.CREATE, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff)


def update(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           registry: OperatorRegistry | None = None,
           labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
           field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           ) -> Callable[[F], F]:
    """Run when spec, labels or annotations changed since last handled; with ``field=``,
    only when that field changed (``old``/``new``/``diff`` are then the field's)."""
    return _register(Reason.UPDATE, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff)


def resume(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           registry: OperatorRegistry | None = None,
           labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
           field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           ) -> Callable[[F], F]:
    """Run for each existing, already-handled object when the operator starts."""
    return _register(Reason.RESUME, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff)


def delete(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           registry: OperatorRegistry | None = None,
           labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
           field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           optional: bool = False) -> Callable[[F], F]:
    """Run when an object is being deleted; holds a finalizer unless ``optional``."""
    return _register(Reason.DELETE, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                     optional=optional)


def field(*resource: str, field: str, group: str | None = None, version: str | None = None,
          kind: str | None = None, plural: str | None = None, singular: str | None = None,
          shortcut: str | None = None, category: str | None = None, id: str | None = None, param: Any = None,
          registry: OperatorRegistry | None = None, labels: Filters = None, annotations: Filters = None,
          when: Callable[..., bool] | None = None, value: FilterValue | None = None,
          old: FilterValue | None = None, new: FilterValue | None = None, errors: ErrorsMode | str | None = None,
          timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
          ) -> Callable[[F], F]:
    """Run when one field changes (set on creation counts); ``old=``/``new=`` filter its values."""
    return _register(Reason.FIELD, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, old=old, new=new, errors=errors, timeout=timeout, retries=retries,
                     backoff=backoff)


def event(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
          plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
          category: str | None = None, id: str | None = None, param: Any = None,
          registry: OperatorRegistry | None = None,
          labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
          field: str | None = None, value: FilterValue | None = None) -> Callable[[F], F]:
    """Run for every watch event of matching objects; no state, no retries."""
    return _register(Reason.EVENT, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=ErrorsMode.IGNORED)


def timer(*resource: str, interval: float, initial_delay: float | None = 0.0, idle: float | None = None,
          sharp: bool | None = False,
          group: str | None = None, version: str | None = None, kind: str | None = None,
          plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
          category: str | None = None, id: str | None = None, param: Any = None,
          registry: OperatorRegistry | None = None,
          labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
          field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
          timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
          ) -> Callable[[F], F]:
    """Run every ``interval`` seconds per object (after ``initial_delay``; with ``idle``, only
    once the object has not changed for that long). Holds a finalizer while it runs. A failed
    run is retried as any handler's (``errors``, ``retries``, ``backoff``, ``timeout`` over its
    tries); a final failure ends that run only: the timer fires again at its next interval.
    ``interval`` counts from the end of a run; with ``sharp=True`` from its start (a steady beat)."""
    return _register(Reason.TIMER, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                     interval=interval, initial_delay=initial_delay or 0.0, idle=idle, sharp=bool(sharp))


def daemon(*resource: str, initial_delay: float | None = 0.0, cancellation_timeout: float | None = None,
           cancellation_backoff: float | None = None, cancellation_polling: float | None = None,
           group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           registry: OperatorRegistry | None = None,
           labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
            field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           ) -> Callable[[F], F]:
    """Run a long-lived function per object, restarted after errors as any handler is retried
    (``errors``, ``retries``, ``backoff``; ``timeout`` bounds its whole run); it gets ``stopped``
    (truthy once stopping, awaitable) and is stopped when the object is deleted or the
    operator stops: cancelled after ``cancellation_timeout``. Holds a finalizer. Its ``patch``
    is written when it returns or fails.

    Kopf's stopping options: with ``cancellation_backoff``, that is the wait between ``stopped``
    and the cancellation, and ``cancellation_timeout`` then bounds the wait for the cancelled
    daemon (Kopf's meaning); ``cancellation_polling`` is accepted and not needed (opd is told
    when a sync daemon's thread returns)."""
    del cancellation_polling
    return _register(Reason.DAEMON, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                     initial_delay=initial_delay or 0.0, cancellation_timeout=cancellation_timeout,
                     cancellation_backoff=cancellation_backoff)


def index(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
          plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
          category: str | None = None, id: str | None = None, param: Any = None,
          registry: OperatorRegistry | None = None,
          labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
          field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
          timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
          ) -> Callable[[F], F]:
    """An in-memory index of the resource's objects (Kopf's ``kopf.index``): the function returns
    ``{key: value}`` (or a value, kept under ``None``; or ``None``: no change) per object; every
    handler gets the index as a kwarg named after it. Errors are ignored unless ``errors=`` says."""
    return _register(Reason.INDEX, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors if errors is not None else ErrorsMode.IGNORED, timeout=timeout,
                     retries=retries, backoff=backoff)


def startup(*, id: str | None = None, param: Any = None, registry: OperatorRegistry | None = None,
            errors: ErrorsMode | str | None = None, timeout: float | None = None, retries: int | None = None,
            backoff: float | None = None) -> Callable[[F], F]:
    """Run once before the operator starts watching (``settings`` can still be tuned here)."""
    return _register(Reason.STARTUP, None, id=id, param=param, registry=registry, errors=errors, timeout=timeout,
                     retries=retries, backoff=backoff)


def cleanup(*, id: str | None = None, param: Any = None, registry: OperatorRegistry | None = None,
            errors: ErrorsMode | str | None = None, timeout: float | None = None, retries: int | None = None,
            backoff: float | None = None) -> Callable[[F], F]:
    """Run once when the operator stops (within the shutdown bound)."""
    return _register(Reason.CLEANUP, None, id=id, param=param, registry=registry, errors=errors, timeout=timeout,
                     retries=retries, backoff=backoff)


def probe(*, id: str | None = None, param: Any = None, registry: OperatorRegistry | None = None,
          errors: ErrorsMode | str | None = None, timeout: float | None = None, retries: int | None = None,
          backoff: float | None = None) -> Callable[[F], F]:
    """Contribute a value to the health endpoint's report (under ``id``). A probe runs once per
    request: ``errors``/``retries``/``backoff`` are accepted (Kopf spells them) and not used."""
    del errors, retries, backoff
    return _register(Reason.PROBE, None, id=id, param=param, registry=registry, timeout=timeout)


def login(*, id: str | None = None, param: Any = None, registry: OperatorRegistry | None = None,
          errors: ErrorsMode | str | None = None, timeout: float | None = None, retries: int | None = None,
          backoff: float | None = None) -> Callable[[F], F]:
    """Provide credentials: return an ``opd.Login``, Kopf's ``opd.ConnectionInfo``, or a
    kubernetes_asyncio ``Configuration`` (the first that returns one wins); without login
    handlers opd finds them itself. Retried as any handler is (``errors=``, ``retries=``...)."""
    return _register(Reason.LOGIN, None, id=id, param=param, registry=registry, errors=errors, timeout=timeout,
                     retries=retries, backoff=backoff)


def this(*, id: str | None = None, errors: ErrorsMode | str | None = None, timeout: float | None = None,
         retries: int | None = None, backoff: float | None = None) -> Callable[[F], F]:
    """Declare a sub-handler inside a running change handler (Kopf's ``on.this``): ``opd.subhandler``."""

    return subhandler(id=id, errors=errors, timeout=timeout, retries=retries, backoff=backoff)
