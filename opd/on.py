"""Decorators that register handlers: ``@opd.on.create('kopfexamples')`` and friends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

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

F = TypeVar("F", bound=Callable[..., Any])


def _decorator(
    reason: Reason,
    resource: tuple[str, ...],
    *,
    group: str | None,
    version: str | None,
    kind: str | None,
    plural: str | None,
    id: str | None,
    registry: OperatorRegistry | None,
    labels: Mapping[str, FilterValue] | None,
    annotations: Mapping[str, FilterValue] | None,
    when: Callable[..., bool] | None,
    errors: ErrorsMode | str | None,
    timeout: float | None,
    retries: int | None,
    backoff: float | None,
    optional: bool = False,
) -> Callable[[F], F]:
    ref = ResourceRef.parse(*resource, group=group, version=version, plural=plural, kind=kind)

    def decorate(fn: F) -> F:
        target = registry if registry is not None else get_default_registry()
        target.append(Handler(
            fn=fn,
            id=id or fn.__name__,
            reason=reason,
            resource=ref,
            labels=labels,
            annotations=annotations,
            when=when,
            errors=ErrorsMode(errors) if errors is not None else ErrorsMode.TEMPORARY,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            optional=optional,
            accepts=accepted_kwargs(fn),
        ))
        return fn

    return decorate


def create(
    *resource: str,
    group: str | None = None, version: str | None = None, kind: str | None = None,
    plural: str | None = None, id: str | None = None, registry: OperatorRegistry | None = None,
    labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
    when: Callable[..., bool] | None = None, errors: ErrorsMode | str | None = None,
    timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
) -> Callable[[F], F]:
    """Run once when an object is first seen without opd's diff-base (i.e. newly created)."""
    return _decorator(Reason.CREATE, resource, group=group, version=version, kind=kind, plural=plural,
                      id=id, registry=registry, labels=labels, annotations=annotations, when=when,
                      errors=errors, timeout=timeout, retries=retries, backoff=backoff)


def update(
    *resource: str,
    group: str | None = None, version: str | None = None, kind: str | None = None,
    plural: str | None = None, id: str | None = None, registry: OperatorRegistry | None = None,
    labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
    when: Callable[..., bool] | None = None, errors: ErrorsMode | str | None = None,
    timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
) -> Callable[[F], F]:
    """Run when an object's spec, labels or annotations changed since it was last handled."""
    return _decorator(Reason.UPDATE, resource, group=group, version=version, kind=kind, plural=plural,
                      id=id, registry=registry, labels=labels, annotations=annotations, when=when,
                      errors=errors, timeout=timeout, retries=retries, backoff=backoff)


def resume(
    *resource: str,
    group: str | None = None, version: str | None = None, kind: str | None = None,
    plural: str | None = None, id: str | None = None, registry: OperatorRegistry | None = None,
    labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
    when: Callable[..., bool] | None = None, errors: ErrorsMode | str | None = None,
    timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
) -> Callable[[F], F]:
    """Run for each existing, already-handled object when the operator starts."""
    return _decorator(Reason.RESUME, resource, group=group, version=version, kind=kind, plural=plural,
                      id=id, registry=registry, labels=labels, annotations=annotations, when=when,
                      errors=errors, timeout=timeout, retries=retries, backoff=backoff)


def delete(
    *resource: str,
    group: str | None = None, version: str | None = None, kind: str | None = None,
    plural: str | None = None, id: str | None = None, registry: OperatorRegistry | None = None,
    labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
    when: Callable[..., bool] | None = None, errors: ErrorsMode | str | None = None,
    timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
    optional: bool = False,
) -> Callable[[F], F]:
    """Run when an object is being deleted; holds a finalizer unless ``optional``."""
    return _decorator(Reason.DELETE, resource, group=group, version=version, kind=kind, plural=plural,
                      id=id, registry=registry, labels=labels, annotations=annotations, when=when,
                      errors=errors, timeout=timeout, retries=retries, backoff=backoff, optional=optional)


def event(
    *resource: str,
    group: str | None = None, version: str | None = None, kind: str | None = None,
    plural: str | None = None, id: str | None = None, registry: OperatorRegistry | None = None,
    labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
    when: Callable[..., bool] | None = None,
) -> Callable[[F], F]:
    """Run for every watch event of matching objects; no state, no retries."""
    return _decorator(Reason.EVENT, resource, group=group, version=version, kind=kind, plural=plural,
                      id=id, registry=registry, labels=labels, annotations=annotations, when=when,
                      errors=ErrorsMode.IGNORED, timeout=None, retries=None, backoff=None)
