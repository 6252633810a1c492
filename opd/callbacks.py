"""Combinators of filter callbacks (``when=``, and callables as label, annotation or field values),
as Kopf spells them: ``when=opd.not_(is_paused)``, ``labels={'app': opd.any_([is_a, is_b])}``.

Each takes callbacks and returns one callback that calls them with what it is given; every
callback takes only the keyword arguments it names, as handlers do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opd.registry import call_with

Callback = Callable[..., Any]


def not_(fn: Callback) -> Callback:
    """True when ``fn`` is not."""
    def negated(*args: Any, **kwargs: Any) -> bool:
        return not call_with(fn, *args, **kwargs)
    return negated


def all_(fns: Iterable[Callback]) -> Callback:
    """True when every one of ``fns`` is (checked in order, stopping at the first that is not)."""
    chosen = list(fns)

    def every(*args: Any, **kwargs: Any) -> bool:
        return all(call_with(fn, *args, **kwargs) for fn in chosen)
    return every


def any_(fns: Iterable[Callback]) -> Callback:
    """True when one of ``fns`` is (checked in order, stopping at the first that is)."""
    chosen = list(fns)

    def some(*args: Any, **kwargs: Any) -> bool:
        return any(call_with(fn, *args, **kwargs) for fn in chosen)
    return some


def none_(fns: Iterable[Callback]) -> Callback:
    """True when none of ``fns`` is."""
    return not_(any_(fns))
