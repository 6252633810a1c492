"""Merge-patches to one object from several writers at once, sent as one request.

Twenty plugins handling the same new object would each send a PATCH at about the same
moment: twenty writes, twenty watch events that every plugin has to look at, and inside
the API server twenty updates of one object retrying on each other's conflicts. Instead,
one PATCH per object is in flight at a time; the patches that arrive meanwhile are merged
and go as the next one. Each writer gets the response of the request that carried its
patch. A lone writer pays nothing: its patch goes out at once, as before.

Patches merge only where a merge-patch composes: disjoint keys (dicts merge key by key;
any other value set by two patches is a clash), and none carries a resourceVersion
precondition (those go alone, in order). A merged request that the server refuses for a
reason one member may have caused is re-sent patch by patch, so that one writer's bad patch
fails only that writer. A patch that is not JSON at all (a set, NaN) never gets that far: each
is checked when handed over (unless its writer did: ``Checked``), and one that is not fails at
once, for its writer alone.

Fencing (replicas, ``opd.ha``): a writer may hand over a ``Fence``, which says how long from now
its write may still be in flight. It is checked when the patch *leaves*, not when it is queued: a
patch that waited behind another one past its replica's lease is refused (``Fenced``) and not
sent, and the others of its batch go without it; the request timeout of a fenced write ends at
the fence (a 60 s request timeout shrinks to the lease time left), so no answer is awaited past it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

# send(path, body, timeout): the timeout is None (the client's own) or the time left before a fence.
Send = Callable[[str, Mapping[str, Any], float | None], Awaitable[Any]]


class Fenced(Exception):
    """A write refused inside opd: this replica no longer owns the object (its lease ran out or was
    taken), so it was not sent, or its answer was not awaited past the fence."""


@dataclass(frozen=True)
class Fence:
    """How long a writer may still write: ``left()`` is the seconds from now during which its write
    may be in flight (math.inf: no limit; 0 or less: it may not be sent). Read when the patch leaves."""

    left: Callable[[], float]
    what: str  # the object, for the message

    def check(self) -> float:
        """The time left; raises Fenced when there is none."""
        left = self.left()
        if not left > 0:
            raise Fenced(f"{self.what}: no longer this replica's")
        return left


_Waiter = tuple[Mapping[str, Any], "asyncio.Future[Any]", Fence | None]


class PatchNotJSON(TypeError):
    """A patch that cannot be sent: some value in it has no strict JSON form."""


class Checked(dict[str, Any]):
    """A patch its writer has already checked is strict JSON (the engine checks each handler's output
    once, where a bad one can fail alone): not walked again before it is serialised to be sent."""


def _first_bad(value: Any, where: str) -> str:
    """Where in ``value`` the first value without a JSON form is (for the message)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if (not isinstance(key, str | int | float | bool) and key is not None) or (
                    isinstance(key, float) and not math.isfinite(key)):
                return where or "the top level"
            found = _first_bad(inner, f"{where}.{key}" if where else str(key))
            if found:
                return found
        return ""
    if isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            found = _first_bad(inner, f"{where}[{index}]")
            if found:
                return found
        return ""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return where or "the top level"
    return ""


def check_json(path: str, body: Mapping[str, Any]) -> None:
    """Raise PatchNotJSON, naming the patch and the field, unless ``body`` is strict JSON."""
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        try:
            field = _first_bad(body, "")
        except RecursionError:  # a value that contains itself
            field = ""
        at = f" at {field}" if field else ""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PatchNotJSON(f"the patch of {path} is not JSON{at}: {reason}") from None


def combine(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any] | None:
    """One merge-patch with the effect of applying ``a`` and ``b``; None when they set the same field."""
    merged = dict(a)
    for key, value in b.items():
        if key not in merged:
            merged[key] = value
            continue
        mine = merged[key]
        if not isinstance(mine, Mapping) or not isinstance(value, Mapping):
            return None
        inner = combine(mine, value)
        if inner is None:
            return None
        merged[key] = inner
    return merged


def has_precondition(patch: Mapping[str, Any]) -> bool:
    metadata = patch.get("metadata")
    return isinstance(metadata, Mapping) and "resourceVersion" in metadata


def batches(patches: list[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], list[int]]]:
    """Group patches, in order, into merged patches; each with the indexes of the patches it carries."""
    grouped: list[tuple[Mapping[str, Any], list[int]]] = []
    open_: tuple[Mapping[str, Any], list[int]] | None = None  # the batch that may still take more
    for index, patch in enumerate(patches):
        if has_precondition(patch):
            grouped.append((patch, [index]))
            open_ = None  # a later patch must not jump ahead of a preconditioned one
            continue
        merged = combine(open_[0], patch) if open_ is not None else None
        if open_ is not None and merged is not None:
            open_ = (merged, [*open_[1], index])
            grouped[-1] = open_
        else:
            open_ = (patch, [index])
            grouped.append(open_)
    return grouped


def _timeout(fences: list[Fence | None]) -> float | None:
    """The request's timeout: the shortest time left of its writers' fences (None: no fence).
    Raises Fenced when one has none left (a lone writer's, checked as it leaves)."""
    lefts = [fence.check() for fence in fences if fence is not None]
    shortest = min(lefts, default=math.inf)
    return None if shortest == math.inf else shortest


class PatchBatcher:
    def __init__(self, send: Send, *, split_on: Callable[[BaseException], bool], window: float = 0.0) -> None:
        self._send = send
        # How long the first patch of a quiet object waits for others: 0 for one operator alone; opd
        # start sets it for plugins sharing the client, which handle one event within milliseconds.
        self.window = window
        self._split_on = split_on  # a refusal of the merged patch that may be one member's fault
        self._busy: dict[str, list[_Waiter]] = {}  # path -> patches waiting for the one in flight
        self._flushers: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.merged = 0  # patches that went out inside another one's request

    async def patch(self, path: str, body: Mapping[str, Any], *, fence: Fence | None = None) -> Any:
        if not isinstance(body, Checked):
            check_json(path, body)  # before it can share a request: a bad patch fails its writer alone
        if fence is not None:
            fence.check()  # fenced already: not even queued
        waiting = self._busy.get(path)
        if waiting is not None:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            waiting.append((body, future, fence))
            return await future
        if self.window > 0:
            return await self._linger(path, body, fence)
        self._busy[path] = []
        try:
            self.requests += 1
            return await self._send(path, body, _timeout([fence]))
        finally:
            self._hand_over(path)

    async def _linger(self, path: str, body: Mapping[str, Any], fence: Fence | None) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._busy[path] = [(body, future, fence)]
        try:
            await asyncio.sleep(self.window)
        except asyncio.CancelledError:
            future.cancel()
            self._hand_over(path)  # the others still go
            raise
        waiting, self._busy[path] = self._busy[path], []
        await self._flush(path, waiting)
        return future.result()

    def _hand_over(self, path: str) -> None:
        """The request in flight for ``path`` is done: send what waited for it (or free the path)."""
        waiting = [waiter for waiter in self._busy.get(path, ()) if not waiter[1].done()]
        if not waiting:
            self._busy.pop(path, None)
            return
        self._busy[path] = []
        task = asyncio.get_running_loop().create_task(self._flush(path, waiting), name=f"opd patch {path}")
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush(self, path: str, waiting: list[_Waiter]) -> None:
        try:
            for _, members in batches([body for body, _, _ in waiting]):
                await self._send_batch(path, [waiting[i] for i in members])
        except BaseException as exc:  # cancelled: nobody may wait forever
            for _, future, _ in waiting:
                if not future.done():
                    future.set_exception(exc if not isinstance(exc, asyncio.CancelledError) else RuntimeError(
                        f"opd: the patch of {path} was not sent: shutting down"))
            raise
        finally:
            self._hand_over(path)

    async def _send_batch(self, path: str, members: list[_Waiter]) -> None:
        """Send these patches (mergeable, in order) as one request, checking each one's fence now."""
        going: list[_Waiter] = []
        for waiter in members:
            _, future, fence = waiter
            if future.done():  # its writer gave up (cancelled)
                continue
            try:
                if fence is not None:
                    fence.check()
            except Fenced as exc:
                future.set_exception(exc)
                continue
            going.append(waiter)
        if not going:
            return
        body = going[0][0]
        for more, _, _ in going[1:]:
            merged = combine(body, more)
            assert merged is not None  # a part of a batch merges as the whole did
            body = merged
        self.requests += 1
        self.merged += len(going) - 1
        try:
            response = await self._send(path, body, _timeout([fence for _, _, fence in going]))
        except Exception as exc:
            if len(going) > 1 and self._split_on(exc):
                for one in going:
                    await self._send_batch(path, [one])
                return
            for _, future, _ in going:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future, _ in going:
            if not future.done():
                future.set_result(response)

    async def close(self) -> None:
        for task in list(self._flushers):
            task.cancel()
        await asyncio.gather(*self._flushers, return_exceptions=True)
