"""In-memory indexes of objects (``@opd.index``), as Kopf has them.

An index is a read-only mapping of keys to stores; a store holds the values that the objects
indexed under that key gave (one per object). An indexing function returns a ``dict`` (exactly
a dict: its items are keys and values), any other value (kept under the key ``None``), or
``None`` (nothing changes). Every handler of the operator gets each index as a kwarg named
after it (the index wins over any framework kwarg of the same name).

Errors: ``errors='ignored'`` (the default for indexes) keeps the object's earlier values;
``'temporary'`` (or a TemporaryError) takes them out and leaves the object out for the
error's delay (default: ``backoff``, else 60 s); ``'permanent'`` (or a PermanentError) takes
them out for good.

The indexes are fed from the same watch streams as the handlers, by a queue of their own, so
that handlers can wait until every index has seen its resource listed once without ever
holding up the indexing itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Hashable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any

from loguru import logger

from opd.engine.execution import brief, execute
from opd.errors import PermanentError, TemporaryError
from opd.registry import Handler
from opd.settings import RetrySettings

DEFAULT_EXCLUSION = 60.0


class Store(Collection[Any]):
    """The values of one key: one per object indexed under it (never empty while in an index)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}  # uid -> value

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._values.values()))

    def __contains__(self, value: object) -> bool:
        return any(v == value for v in self._values.values())

    def __repr__(self) -> str:
        return repr(list(self._values.values()))


class Index(Mapping[Hashable, Store]):
    """Keys to stores; read-only for handlers."""

    def __init__(self) -> None:
        self._stores: dict[Hashable, Store] = {}
        self._keys: dict[str, list[Hashable]] = {}  # uid -> the keys it is under

    def __getitem__(self, key: Hashable) -> Store:
        return self._stores[key]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._stores))

    def __len__(self) -> int:
        return len(self._stores)

    def __repr__(self) -> str:
        return repr(self._stores)

    @property
    def objects(self) -> int:
        return len(self._keys)

    def put(self, uid: str, items: Mapping[Hashable, Any]) -> None:
        """The object's values, replacing whatever it had."""
        self.remove(uid)
        for key, value in items.items():
            self._stores.setdefault(key, Store())._values[uid] = value
        if items:
            self._keys[uid] = list(items)

    def remove(self, uid: str) -> None:
        for key in self._keys.pop(uid, ()):
            store = self._stores.get(key)
            if store is not None:
                store._values.pop(uid, None)
                if not store._values:
                    del self._stores[key]


class Indexes:
    """One operator's indexes, by name; ``ready`` once each indexed resource has been listed once."""

    def __init__(self, handlers: list[Handler], *, executor: Executor | None, retries: RetrySettings) -> None:
        self.handlers = handlers
        self.indexes: dict[str, Index] = {h.id: Index() for h in handlers}
        self.ready = asyncio.Event()
        if not handlers:
            self.ready.set()
        self._executor = executor
        self._retries = retries
        self._excluded: dict[tuple[str, str], float] = {}  # (index, uid) -> until (inf: for good)
        self._failing: dict[tuple[str, str], dict[str, Any]] = {}  # (index, uid) -> progress since it began failing

    def __bool__(self) -> bool:
        return bool(self.handlers)

    def kwargs(self) -> dict[str, Index]:
        return dict(self.indexes)

    def forget(self, handlers: list[Handler], uid: str) -> None:
        """The object is gone (or out of the scope): out of these indexes, no exclusions kept."""
        for handler in handlers:
            self.indexes[handler.id].remove(uid)
            self._excluded.pop((handler.id, uid), None)
            self._failing.pop((handler.id, uid), None)

    async def feed(self, handler: Handler, uid: str, kwargs: dict[str, Any], where: str) -> None:
        """Run one indexing function for one object's newest state."""
        key = (handler.id, uid)
        until = self._excluded.get(key)
        if until is not None:
            if until > time.time():
                return
            del self._excluded[key]
        record = self._failing.get(key) or {"started": time.time()}
        outcome = await execute(handler, record, kwargs, executor=self._executor, retries=self._retries)
        index = self.indexes[handler.id]
        if outcome.error is None:
            self._failing.pop(key, None)
            result = outcome.result
            if result is not None:
                index.put(uid, result if type(result) is dict else {None: result})
            return
        error = outcome.error
        text = f"opd: index {handler.id!r} for {where}: {type(error).__name__}: {brief(error)}"
        if outcome.success:  # errors='ignored': the earlier values stay (stale, but likely still good)
            logger.opt(exception=error if not isinstance(error, TemporaryError | PermanentError) else None).warning(
                f"{text}; its earlier values stay")
            return
        index.remove(uid)
        if outcome.final_failure:
            self._excluded[key] = float("inf")
            self._failing.pop(key, None)
            logger.error(f"{text}; left out of the index for good")
            return
        if isinstance(error, TemporaryError) and error.delay is not None:
            delay = error.delay
        else:
            delay = handler.backoff if handler.backoff is not None else DEFAULT_EXCLUSION
        self._excluded[key] = time.time() + delay
        self._failing[key] = outcome.record
        logger.warning(f"{text}; left out of the index for {delay:g}s")

