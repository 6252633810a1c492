"""Decorators that register handlers: ``@opd.on.create('kopfexamples')`` and friends.

Every decorator registers into ``registry=`` or, without it, into the default
registry of the current context.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from opd.errors import ConfigError
from opd.registry import (
    ErrorsMode,
    FilterValue,
    Handler,
    OperatorRegistry,
    Reason,
    WebhookHandler,
    accepted_kwargs,
    get_default_registry,
    handler_ids,
)
from opd.resources import ResourceRef
from opd.subhandlers import register as register  # Kopf has it as kopf.on.register too
from opd.subhandlers import subhandler

F = TypeVar("F", bound=Callable[..., Any])
Filters = Mapping[str, FilterValue] | None


def _register(reason: Reason, resource: tuple[str, ...] | None, *, group: str | None = None,
              version: str | None = None, kind: str | None = None, plural: str | None = None,
              singular: str | None = None, shortcut: str | None = None, category: str | None = None,
              id: str | None = None, registry: OperatorRegistry | None = None,
              errors: ErrorsMode | str | None = None, field: str | Sequence[str] | None = None,
              cls: type[Handler] = Handler, **options: Any) -> Callable[[F], F]:
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
        # Webhooks keep opd's ids: they name the webhooks in the API server's configuration.
        short, kopf = handler_ids(fn, id, path if reason != Reason.INDEX else None)
        if cls is not Handler:
            kopf = short
        target.append(cls(
            fn=fn, id=short, reason=reason, resource=ref, field=path,
            errors=ErrorsMode(errors) if errors is not None else ErrorsMode.TEMPORARY,
            accepts=accepted_kwargs(fn), short_id=short, kopf_id=kopf, **options,
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
           field: str | None = None, value: FilterValue | None = None, old: FilterValue | None = None,
           new: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           ) -> Callable[[F], F]:
    """Run when spec, labels or annotations changed since last handled; with ``field=``,
    only when that field changed (``old``/``new``/``diff`` are then the field's, and the
    ``old=``/``new=`` filters judge its values before and after, as Kopf's)."""
    return _register(Reason.UPDATE, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, old=old, new=new, errors=errors, timeout=timeout, retries=retries,
                     backoff=backoff)


def resume(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           registry: OperatorRegistry | None = None,
           labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
           field: str | None = None, value: FilterValue | None = None, errors: ErrorsMode | str | None = None,
           timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
           deleted: bool | None = None) -> Callable[[F], F]:
    """Run for each existing, already-handled object when the operator starts; with ``deleted=True``
    (Kopf's), also for one found already being deleted (with the delete handlers, while opd's
    finalizer holds it)."""
    return _register(Reason.RESUME, resource, group=group, version=version, kind=kind, plural=plural, id=id,
                     singular=singular, shortcut=shortcut, category=category, param=param,
                     registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                     value=value, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                     deleted=bool(deleted))


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


def this(*, id: str | None = None, param: Any = None, errors: ErrorsMode | str | None = None,
         timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
         labels: Filters = None, annotations: Filters = None, when: Callable[..., bool] | None = None,
         field: str | Sequence[str] | None = None, value: FilterValue | None = None) -> Callable[[F], F]:
    """Declare a sub-handler inside a running change handler (Kopf's ``on.this``): ``opd.subhandler``."""

    return subhandler(id=id, param=param, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                      labels=labels, annotations=annotations, when=when, field=field, value=value)


# -- webhooks: called by the API server (opd.webhooks), never by the engine's watch streams --------------------------

ADMISSION_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
MAX_WEBHOOK_TIMEOUT = 30  # seconds: the most the API server waits for a webhook


def _operations(operation: str | None, operations: Collection[str] | None) -> frozenset[str] | None:
    wanted = {o.upper() for o in [*([operation] if operation else []), *(operations or ())]}
    unknown = sorted(wanted - {*ADMISSION_OPERATIONS, "*"})
    if unknown:
        raise ConfigError(f"operation {unknown[0]!r}: expected one of {', '.join(ADMISSION_OPERATIONS)} (or '*')")
    return None if not wanted or "*" in wanted else frozenset(wanted)


def _webhook_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not 0 < timeout <= MAX_WEBHOOK_TIMEOUT:
        raise ConfigError(f"timeout={timeout!r}: a webhook's timeout is from 1 to {MAX_WEBHOOK_TIMEOUT} seconds "
                          "(the API server waits no longer)")
    return timeout


def _admission(reason: Reason, resource: tuple[str, ...], *, operation: str | None,
               operations: Collection[str] | None, persistent: bool | None, side_effects: bool | None,
               ignore_failures: bool | None, timeout: float | None, **common: Any) -> Callable[[F], F]:
    return _register(reason, resource, cls=WebhookHandler, operations=_operations(operation, operations),
                     persistent=bool(persistent), side_effects=bool(side_effects),
                     ignore_failures=bool(ignore_failures), timeout=_webhook_timeout(timeout),
                     errors=ErrorsMode.PERMANENT, **common)


def validate(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
             plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
             category: str | None = None, id: str | None = None, param: Any = None,
             operation: str | None = None, operations: Collection[str] | None = None,
             subresource: str | None = None, persistent: bool | None = None, side_effects: bool | None = None,
             ignore_failures: bool | None = None, timeout: float | None = None,
             registry: OperatorRegistry | None = None, labels: Filters = None, annotations: Filters = None,
             when: Callable[..., bool] | None = None, field: str | None = None, value: FilterValue | None = None,
             ) -> Callable[[F], F]:
    """A validating admission webhook: the API server asks it before it stores (or deletes, or
    connects to) an object. Raise ``opd.AdmissionError(message, code=)`` to refuse; append to
    ``warnings`` to warn the client. ``operation``/``operations`` (CREATE, UPDATE, DELETE,
    CONNECT; default all) and ``subresource`` ("status", "scale", "*") narrow the requests; label
    filters go to the API server as the webhook's ``objectSelector``. ``persistent``: stays in the
    managed configuration when opd stops; ``side_effects``: the handler has some (then never when
    ``dryrun``); ``ignore_failures``: the request is admitted when the webhook fails or is away;
    ``timeout``: seconds the API server waits (default 10, at most 30)."""
    return _admission(Reason.VALIDATE, resource, group=group, version=version, kind=kind, plural=plural,
                      singular=singular, shortcut=shortcut, category=category, id=id, param=param,
                      operation=operation, operations=operations, subresource=subresource, persistent=persistent,
                      side_effects=side_effects, ignore_failures=ignore_failures, timeout=timeout,
                      registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                      value=value)


def mutate(*resource: str, group: str | None = None, version: str | None = None, kind: str | None = None,
           plural: str | None = None, singular: str | None = None, shortcut: str | None = None,
           category: str | None = None, id: str | None = None, param: Any = None,
           operation: str | None = None, operations: Collection[str] | None = None,
           subresource: str | None = None, persistent: bool | None = None, side_effects: bool | None = None,
           ignore_failures: bool | None = None, timeout: float | None = None,
           registry: OperatorRegistry | None = None, labels: Filters = None, annotations: Filters = None,
           when: Callable[..., bool] | None = None, field: str | None = None, value: FilterValue | None = None,
           ) -> Callable[[F], F]:
    """A mutating admission webhook: fill ``patch`` (``patch.spec['x'] = 1``; ``None`` removes a
    key) and the object is stored with it. Refuses and warns as ``on.validate`` does, with the
    same options."""
    return _admission(Reason.MUTATE, resource, group=group, version=version, kind=kind, plural=plural,
                      singular=singular, shortcut=shortcut, category=category, id=id, param=param,
                      operation=operation, operations=operations, subresource=subresource, persistent=persistent,
                      side_effects=side_effects, ignore_failures=ignore_failures, timeout=timeout,
                      registry=registry, labels=labels, annotations=annotations, when=when, field=field,
                      value=value)


def convert(*resource: str, from_version: str, to_version: str, group: str | None = None,
            plural: str | None = None, kind: str | None = None, id: str | None = None, param: Any = None,
            timeout: float | None = None, registry: OperatorRegistry | None = None) -> Callable[[F], F]:
    """A converter of a custom resource's objects from one of its versions to another ("v1",
    or "group/v1"): it gets the object as ``body`` (and ``spec``, ``meta``...) in ``from_version``
    and returns it in ``to_version`` (or changes ``body`` in place and returns None); opd sets
    ``apiVersion`` and keeps ``metadata`` but for labels and annotations. The API server calls
    converters through the CRD's ``spec.conversion`` webhook, which opd sets (``settings.conversion``).
    Converters chain: v1 -> v2 and v2 -> v3 also convert v1 to v3. Raise to refuse a conversion."""
    source, target = from_version.rsplit("/", 1)[-1], to_version.rsplit("/", 1)[-1]
    if not source or not target or source == target:
        raise ConfigError(f"on.convert: from_version={from_version!r}, to_version={to_version!r}: "
                          "expected two different versions")

    def decorate(fn: F) -> F:
        return _register(Reason.CONVERT, resource, cls=WebhookHandler, group=group, plural=plural, kind=kind,
                         id=id or f"{fn.__name__}/{source}-{target}", param=param, registry=registry,
                         from_version=source, to_version=target, timeout=_webhook_timeout(timeout),
                         errors=ErrorsMode.PERMANENT)(fn)

    return decorate
