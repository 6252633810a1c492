"""Sub-handlers: handlers a change handler declares while it runs, each with its own progress.

A parent handler declares them with ``@opd.subhandler(id=...)`` (Kopf: ``@kopf.subhandler``,
``@kopf.on.this``) or runs them at once with ``await opd.execute(fns={...})``. Each gets the id
``<parent>/<id>``, its own progress record (retries, delays, errors, timeout), and its own result.
The functions themselves are not kept anywhere: until all its sub-handlers are done, the parent
is not done either, and runs again (on the next try) to declare them again; those already done
are skipped. So a parent should only read its inputs and declare, with no side effects.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opd.errors import OpdError, TemporaryError
from opd.registry import ErrorsMode, FilterValue, Handler, accepted_kwargs

F = TypeVar("F", bound=Callable[..., Any])
# Runs sub-handlers now (for execute()): their ids -> None when all are done, else the earliest retry delay.
RunNow = Callable[[list[Handler]], Awaitable["float | None"]]


@dataclass
class Children:
    """What one run of a parent handler declared."""

    parent: Handler
    run_now: RunNow | None = None
    declared: list[Handler] = field(default_factory=list)

    def add(self, fn: Callable[..., Any], id: str | None, **options: Any) -> Handler:
        child_id = f"{self.parent.id}/{id or getattr(fn, '__name__', 'subhandler')}"
        if any(h.id == child_id for h in self.declared):
            raise OpdError(f"sub-handler {child_id!r} is declared twice in one run of {self.parent.id!r}: "
                           "give each its own id=")
        errors = options.pop("errors", None)
        handler = Handler(fn=fn, id=child_id, reason=self.parent.reason, resource=self.parent.resource,
                          errors=ErrorsMode(errors) if errors is not None else ErrorsMode.TEMPORARY,
                          accepts=accepted_kwargs(fn), **options)
        self.declared.append(handler)
        return handler


current: contextvars.ContextVar[Children | None] = contextvars.ContextVar("opd_subhandlers", default=None)


def _children(what: str) -> Children:
    children = current.get()
    if children is None:
        raise OpdError(f"{what} works only inside a running create/update/delete/resume/field handler")
    return children


def subhandler(*, id: str | None = None, param: Any = None, errors: ErrorsMode | str | None = None,
               timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
               labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
               when: Callable[..., bool] | None = None, field: str | Sequence[str] | None = None,
               value: FilterValue | None = None) -> Callable[[F], F]:
    """Declare a sub-handler inside a change handler; it runs after the parent returns, if its
    filters (``labels``, ``annotations``, ``when``, ``field``/``value``: as a handler's) select the
    object; else it is skipped, and the parent is done without it (as Kopf's)."""
    children = _children("opd.subhandler")
    path = tuple(field.split(".")) if isinstance(field, str) else tuple(field) if field else None

    def decorate(fn: F) -> F:
        children.add(fn, id, param=param, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                     labels=labels, annotations=annotations, when=when, field=path, value=value)
        return fn

    return decorate


def register(fn: F, *, id: str | None = None, param: Any = None, errors: ErrorsMode | str | None = None,
             timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
             labels: Mapping[str, FilterValue] | None = None, annotations: Mapping[str, FilterValue] | None = None,
             when: Callable[..., bool] | None = None) -> F:
    """Kopf's ``kopf.register(fn, id=...)``: ``subhandler(id=...)(fn)``, for a loop of sub-handlers."""
    return subhandler(id=id, param=param, errors=errors, timeout=timeout, retries=retries, backoff=backoff,
                      labels=labels, annotations=annotations, when=when)(fn)


async def execute(*, fns: Mapping[str, Callable[..., Any]] | None = None,
                  handlers: Iterable[Handler] | None = None) -> None:
    """Run these functions as sub-handlers now, inside the parent (an async handler), each with its
    own progress; returns when all are done, else raises a TemporaryError: the parent runs again."""
    children = _children("opd.execute")
    batch = [children.add(fn, key) for key, fn in (fns or {}).items()]
    for handler in handlers or ():
        batch.append(children.add(handler.fn, handler.id, errors=handler.errors, timeout=handler.timeout,
                                  retries=handler.retries, backoff=handler.backoff))
    if children.run_now is None:  # pragma: no cover - the processor always sets it
        raise OpdError("opd.execute: no processor to run the sub-handlers")
    delay = await children.run_now(batch)
    if delay is not None:
        raise TemporaryError("sub-handlers not done yet", delay=delay)
