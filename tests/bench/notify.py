"""A stand-in for systemd's notification socket: what ``opd start`` says on $NOTIFY_SOCKET, and when."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path


class NotifySocket:
    """A datagram socket bound at ``path``; each message kept with the ``time.monotonic()`` it came at."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[float, str]] = []
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NotifySocket:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _collect(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                await asyncio.sleep(0.005)  # the arrival time is what we measure: look often
                continue
            self.received.append((time.monotonic(), data.decode(errors="replace")))

    def first(self, field: str) -> float | None:
        """When a message with the line ``field`` (``READY=1``) first came."""
        return next((at for at, message in self.received if field in message.splitlines()), None)

    async def wait(self, field: str, *, timeout: float, alive: Callable[[], bool]) -> float | None:
        """When ``field`` came; None if it did not within ``timeout`` or the sender died first."""
        deadline = time.monotonic() + timeout
        while (at := self.first(field)) is None:
            if time.monotonic() > deadline or not alive():
                return None
            await asyncio.sleep(0.02)
        return at
