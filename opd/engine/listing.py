"""A LIST received at the API server's pace, fed to its consumers at theirs.

A LIST of many objects comes in pages. Fetching the next page only once the consumers' queues
have made room keeps memory bounded, but then the LIST is not received until the backlog is
nearly processed, and readiness (controller-runtime's: the caches are synced, the LIST received
and stored, not processed) would wait for the handlers. So the pages are fetched as fast as the
API server answers and kept, as the bytes it sent (a parsed object costs about five times
its JSON), up to a bound of bytes; the consumer takes them one by one as it makes room, each
parsed again then (orjson: about 7 µs per small object). The page the consumer will take next
is kept parsed.

The consumer starts once every page is in (or the bound is reached), as controller-runtime
starts its workers once the caches are synced: handlers at work on the first pages slow the
rest of the LIST down, on the one event loop and on the API server that serves their writes
(measured, ``opd start`` with 20 plugins over 5 000 new objects: READY=1 after 15.3 s when
feeding at once, the LIST alone taking 3.5 s).

:class:`ListProgress` counts one subscriber's LIST: objects received, how many there are (known
at the first page when the API server says how many remain, else once every page is in), and
how many were fed to the subscriber: the backlog figure of ``/metrics`` and STATUS=.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Items = list[dict[str, Any]]

LIST_BUFFER = 256 * 2**20  # bytes of pages kept ahead of a consumer, per LIST (20 000 small objects: ~20 MB)


@dataclass
class ListProgress:
    """How far one subscriber is through a LIST (its first one: what readiness and the backlog are about)."""

    received: int = 0  # objects in the pages received so far
    total: int | None = None  # objects in the LIST, once known
    fed: int = 0  # objects given to the subscriber (or skipped as unchanged or malformed)
    complete: bool = False  # every page received

    def restart(self) -> None:
        """The LIST starts over (a new snapshot): what was counted of the old one is void."""
        self.received, self.total, self.fed, self.complete = 0, None, 0, False

    def page(self, count: int, remaining: int | None, last: bool) -> None:
        """A page of ``count`` objects came; the API server says ``remaining`` more follow (when it knows)."""
        self.received += count
        if last:
            self.total, self.complete = self.received, True
        elif remaining is not None and remaining >= 0:
            self.total = self.received + remaining

    @property
    def listed(self) -> int:
        """Objects in the LIST: the API server's count when known, else those received so far."""
        return max(self.total or 0, self.received)


class PageBuffer:
    """Pages received ahead of their consumer, in order, bounded in bytes (one page always fits)."""

    def __init__(self, parse: Callable[[bytes], Items], limit: int = LIST_BUFFER) -> None:
        self._parse = parse  # bytes kept back to objects
        self.limit = limit
        self._pages: collections.deque[tuple[Items | None, bytes | None]] = collections.deque()
        self.size = 0  # bytes held
        self._changed = asyncio.Event()
        self._finished = False
        self._failure: BaseException | None = None
        self._full = False  # the producer waits for room

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def exhausted(self) -> bool:
        """Every page was received and taken: nothing more will come."""
        return self._finished and not self._pages

    async def received(self) -> None:
        """Until every page was received, the LIST failed, or the buffer is full (the producer waits for
        the consumer): what a consumer waits for before it takes the first page."""
        while not (self._finished or self._failure is not None or self._full):
            self._changed.clear()
            await self._changed.wait()

    async def put(self, items: Items, raw: bytes) -> None:
        """A page, parsed, with the bytes it came as; waits while the buffer is full."""
        while self._pages and self.size + len(raw) > self.limit:
            self._full = True
            self._changed.set()
            self._changed.clear()
            await self._changed.wait()
        self._full = False
        if self._pages:  # others are ahead of it: keep the compact form
            self._pages.append((None, raw))
            self.size += len(raw)
        else:  # taken next: no need to parse it again
            self._pages.append((items, None))
        self._changed.set()

    def finish(self) -> None:
        self._finished = True
        self._changed.set()

    def fail(self, exc: BaseException) -> None:
        """The LIST failed: the consumer gets this error once it has taken the pages before it."""
        self._failure = exc
        self._changed.set()

    async def get(self) -> Items | None:
        """The next page's objects; None once every page was taken. Raises the producer's failure."""
        while not self._pages:
            if self._failure is not None:
                raise self._failure
            if self._finished:
                return None
            self._changed.clear()
            await self._changed.wait()
        items, raw = self._pages.popleft()
        self._changed.set()
        if raw is not None:
            self.size -= len(raw)
            items = self._parse(raw)
        assert items is not None
        return items
