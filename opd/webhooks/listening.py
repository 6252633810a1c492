"""The webhook server's listener, bounded: anyone who reaches the port can connect, so what one
client can hold is capped before anything it sends is read. Time: the TLS handshake, a request's
headers, its body. Connections: ``limit`` served at once, as many waiting unread, the rest closed.
Bytes: large bodies share one budget. Each refusal is one line to the client; aiohttp's reports of
what it could not parse are one debug line, never a traceback at ERROR.

The API server calls with bodies under 3 MiB and times out at 10 s by default (30 s at most); it
keeps connections alive and opens more under load.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from loguru import logger

from opd.engine.execution import brief
from opd.webhooks import bodies

MAX_BODY = bodies.MAX_BODY
HEADER_TIMEOUT = 10.0  # seconds for a TLS handshake, and for a request's headers once connected or idle
BODY_TIMEOUT = 10.0  # seconds from the headers to the body's last byte (a trickling client is cut)
LINGER = 2.0  # seconds an unread body (refused) is drained and dropped, so that its client reads why
MAX_CONNECTIONS = 128  # served at once; as many more wait unread, and more than that are closed
BODY_BUDGET = 4 * MAX_BODY  # bytes of large bodies held at once by all requests; more wait their turn
SMALL_BODY = 64 * 1024  # bytes: a body this small takes none of the budget (at most one per connection)

class Budget:
    """Bytes of request bodies held at once (in the server's loop): a request reserves its
    Content-Length (or the most a body may be) before reading, and waits while others hold the rest."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> int:
        size = min(size, self.total)
        while self.held + size > self.total:
            self._freed.clear()
            await self._freed.wait()
        self.held += size
        return size

    def give(self, size: int) -> None:
        self.held -= size
        self._freed.set()


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's reports of requests it could not parse (bad HTTP, a broken chunk, a client gone):
    anyone can cause them, so each is one line at debug level, never a traceback at ERROR.
    opd's own failures to answer are caught and said before aiohttp sees them."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        text = str(msg) % args if args else str(msg)
        self.debug(f"{text}: {brief(error)}" if error is not None else text)


class Listener(web.Server):
    """aiohttp's low-level server, with at most ``limit`` connections served at once. One more
    (after its TLS handshake) waits, unread, for one of them to end: at most ``limit`` wait, each
    no longer than the header timeout (aiohttp's keep-alive timer closes it); more are closed."""

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.served: set[RequestHandler] = set()
        self.waiting: dict[RequestHandler, asyncio.Transport] = {}  # oldest first
        self.refused = 0

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self.served) < self.limit:
            self.served.add(handler)
            super().connection_made(handler, transport)
        elif len(self.waiting) < self.limit:
            transport.pause_reading()
            self.waiting[handler] = transport
        else:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                logger.warning(f"opd: webhook server: {self.limit} connections served and {self.limit} waiting; "
                               f"one more closed ({self.refused} so far)")
            transport.close()

    def pre_shutdown(self) -> None:
        for transport in self.waiting.values():
            transport.close()
        super().pre_shutdown()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.waiting.pop(handler, None)
        if handler in self.served:
            self.served.discard(handler)
            super().connection_lost(handler, exc)
        while self.waiting and len(self.served) < self.limit:
            first = next(iter(self.waiting))
            transport = self.waiting.pop(first)
            if transport.is_closing():
                continue
            self.served.add(first)
            super().connection_made(first, transport)
            transport.resume_reading()


def refusal(status: int, message: str, **headers: str) -> web.Response:
    """One line to the client; the connection closes after it when the body was not read whole."""
    response = web.Response(status=status, text=" ".join(message.split()) + "\n", headers=headers)
    if status in (408, 413, 415, 503):
        response.force_close()
    return response
