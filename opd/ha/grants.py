"""One operation's share of what this replica owns: the engine's ``Ownership``, kept in step.

The engine asks ``owns(uid)`` before it takes an event, before it runs handlers and before
every write. Here that is: the object's key (its shard; the one lease in leader mode) has been
*granted* to this operation, and the replica's lease for it is still valid now (a fence by
time, read from any thread), and, while the key is being handed over, the object was in
process when the hand-over began.

Events of objects that are not owned are dropped when they arrive, so a key gained means the
objects must be listed again: the operation subscribes its streams afresh, and the shared
watch gives each new subscription its own paged LIST, reconciled with the stream by
resourceVersion (see ``opd.engine.hub``). The grant and the new subscription happen in one
step of the operation's own loop, so no event falls between the two. This lists every object
of the resource, also those of keys held before (their handlers do not run again: nothing
changed since their markers were written); in exchange a standby keeps no bodies in memory.

With label filtering (``Keys.narrowed()``), the view is also the engine's ``Narrowing``: each
stream of the operation adds ``<label> in (<keys granted>)`` to its label selector, so that only
these shards' objects come at all; a key gained or lost lists again with the new clause. The
replica holding the labeller role has its operations write that label on objects without it.
With filtering by the server (``Keys.sharded()``), each stream asks KEP-5866's ``shardSelector`` of
the keys granted instead (``shards.held_selector``): no label, no labeller; a key gained or lost
lists again with the new selector.

A key lost stops everything of its objects here (queued states, retries, timers, daemons):
the operation ``disown``s them. A key handed over first stops taking new work, then waits
until none of its objects is in process, so the outcomes of handlers that ran are written
before another replica can start on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from opd.ha.shards import held_selector

if TYPE_CHECKING:
    from opd.engine.operation import Operation

T = TypeVar("T")
CALL_TIMEOUT = 60.0  # seconds for one call into an operation's loop (stopping daemons is bounded)


class Keys(Protocol):
    """What a view asks the replica (from any thread)."""

    def key_of(self, uid: str) -> int: ...

    def holds(self, key: int) -> bool: ...

    def granted(self) -> frozenset[int]: ...

    def left(self, key: int) -> float:
        """Seconds until this replica's hold on the key ends unless renewed (0: not held)."""
        ...


@runtime_checkable
class Labels(Keys, Protocol):
    """What a view also asks with label filtering (the coordinator has it; Keys without it: none)."""

    def narrowed(self) -> bool:
        """Whether the streams are narrowed to the keys' shard labels (label filtering)."""
        ...

    def labels(self) -> bool:
        """Whether this replica holds the labeller role now."""
        ...

    def sharded(self) -> bool:
        """Whether the streams ask the server for the keys' hash ranges (KEP-5866's shardSelector)."""
        ...

    def shard_count(self) -> int: ...


class View:
    """Implements ``opd.engine.ownership.Ownership`` for one operation (one plugin's, or ``opd run``'s)."""

    def __init__(self, keys: Keys, *, on_detach: Callable[[View], None] | None = None) -> None:
        self.keys = keys
        self._on_detach = on_detach
        # Replaced whole, never mutated: read from the operation's thread, written in its loop.
        self.granted: frozenset[int] = keys.granted()
        self.draining: frozenset[int] = frozenset()
        self.allowed: frozenset[str] = frozenset()  # uids in process when their key began to drain
        self.stopping: frozenset[str] = frozenset()  # uids whose timers and daemons stop: may still write
        self.labels = keys if isinstance(keys, Labels) else None
        # Whether this replica holds the labeller role (label filtering).
        self.labeller = self.labels is not None and self.labels.labels()
        self.operation: Operation | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"View(granted={sorted(self.granted)})"

    def owns(self, uid: str) -> bool:
        key = self.keys.key_of(uid)
        if key not in self.granted or not self.keys.holds(key):
            return False
        return key not in self.draining or uid in self.allowed

    def may_write(self, uid: str) -> bool:
        if self.owns(uid):
            return True
        key = self.keys.key_of(uid)
        return uid in self.stopping and key in self.granted and self.keys.holds(key)

    def time_left(self, uid: str) -> float:
        """Until the fence of the object's key: the most a write to it may still be in flight."""
        return self.keys.left(self.keys.key_of(uid)) if self.may_write(uid) else 0.0

    def clause(self, label: str) -> str | None:
        """``Narrowing``: the shards granted, as a label requirement ('none' matches no object)."""
        if self.labels is None or not self.labels.narrowed():
            return None
        return f"{label} in ({','.join(map(str, sorted(self.granted))) or 'none'})"

    def shard_selector(self) -> str | None:
        """``Narrowing``: KEP-5866's shardSelector of the shards granted (filtering by the server)."""
        if self.labels is None or not self.labels.sharded():
            return None
        return held_selector(self.granted, self.labels.shard_count())

    def label_value(self, uid: str) -> str:
        return str(self.keys.key_of(uid))

    def shard_count(self) -> int:
        return self.labels.shard_count() if self.labels is not None else 1

    def attach(self, operation: Operation) -> None:
        """In the operation's loop, before it runs."""
        self.operation, self.loop = operation, asyncio.get_running_loop()
        if self.labeller:  # the role was held before this operation began
            operation.labelling(True)

    def detach(self) -> None:
        self.operation, self.loop = None, None
        if self._on_detach is not None:
            self._on_detach(self)

    # -- told by the replica (from its own loop) ---------------------------------------------------------------
    async def gain(self, keys: frozenset[int]) -> None:
        async def gain() -> None:
            new = keys - self.granted
            self.granted |= keys
            self.draining -= keys
            if new and self.operation is not None:
                self.operation.relist()
        await self._in_loop(gain)

    async def labelling(self, on: bool) -> None:
        async def labelling() -> None:
            self.labeller = on
            if self.operation is not None:
                self.operation.labelling(on)
        await self._in_loop(labelling)

    async def drain(self, keys: frozenset[int], reason: str) -> None:
        """Stop taking new work on these keys; what is in process goes on (and writes)."""
        async def drain() -> None:
            operation = self.operation
            if operation is None:
                self.draining |= keys
                return
            of_keys = self._of(keys)
            # Draining first, then what is in process: a handler starts (in an executor's thread) only
            # after it is marked started and ``owns`` said yes, so one that starts after this line is of
            # an object in ``busy`` (allowed: the hand-over waits for it), one that does not is dropped.
            self.draining |= keys
            busy, spawned = operation.busy(of_keys), operation.spawned(of_keys)
            # Objects in process go on; timers and daemons stop first, while their last outcomes may
            # still be written, but nothing new starts for them (an echo taken now would start one).
            self.allowed |= busy
            self.stopping |= spawned
            await operation.stop_spawned(spawned.__contains__, reason)
            self.stopping -= spawned
            # ...then what is queued or remembered of the objects that are not in process.
            await operation.disown(lambda uid: of_keys(uid) and uid not in busy, reason)
        await self._in_loop(drain)

    async def busy(self, keys: frozenset[int]) -> bool:
        """Whether objects of these keys that were in process when they began to drain still are."""
        async def busy() -> bool:
            mine = frozenset(uid for uid in self.allowed if self.keys.key_of(uid) in keys)
            operation = self.operation
            # Not allowed first, then those still in process allowed again (one that is done may not
            # start again): a handler that starts meanwhile (in a thread) is refused, or of one read.
            self.allowed -= mine
            still = operation.busy(mine.__contains__) if operation is not None else frozenset()
            self.allowed |= still
            return bool(still)
        return bool(await self._in_loop(busy))

    async def lose(self, keys: frozenset[int], reason: str) -> None:
        async def lose() -> None:
            self.granted -= keys
            self.draining -= keys
            self.allowed = frozenset(uid for uid in self.allowed if self.keys.key_of(uid) not in keys)
            if self.operation is not None:
                await self.operation.disown(self._of(keys), reason)
                if self.labels is not None and (self.labels.narrowed() or self.labels.sharded()):
                    # the lost shards' events stop coming
                    self.operation.relist()
        await self._in_loop(lose)

    # -- inside the operation's loop ---------------------------------------------------------------------------
    def _of(self, keys: frozenset[int]) -> Callable[[str], bool]:
        """Whether an object (by uid) is of these keys."""
        return lambda uid: self.keys.key_of(uid) in keys

    async def _in_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
        """Run in the operation's loop (its own thread's, for an isolated plugin); None when it is gone."""
        loop = self.loop
        if loop is None or loop is asyncio.get_running_loop():  # not attached yet: bookkeeping only
            return await make()
        coro = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # its loop is closed: the operation has ended
            coro.close()
            return None
        waiter: Awaitable[T] = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(waiter, CALL_TIMEOUT)
        except (TimeoutError, RuntimeError):
            return None
