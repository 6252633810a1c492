"""Faults of the API: kube-apiserver killed and restarted, connections cut by a FaultProxy."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from opd.localcluster import LocalControlPlane
from opd.testing.chaos.processes import _Lifeline
from opd.testing.proxy import FaultProxy

_T = TypeVar("_T")


class ApiServerFaults:
    """kill -9 and restart kube-apiserver of a LocalControlPlane, awaitable.

    The work runs on a lifeline thread (see ``_Lifeline``), so the restarted apiserver is not
    killed when the awaiting test's loop ends. The restarted apiserver keeps flags, certificates
    and etcd data; its watch cache starts at the current revision, so a resumed watch from an
    older resourceVersion gets 410 Gone.
    """

    def __init__(self, control_plane: LocalControlPlane) -> None:
        self.control_plane = control_plane
        self.restarts = 0
        self.downtime: list[float] = []  # seconds each restart kept the API away

    async def _on_lifeline(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.wrap_future(_Lifeline.named("apiserver").submit(fn))

    async def kill(self) -> None:
        await self._on_lifeline(lambda: self.control_plane.kill_apiserver(signal.SIGKILL))

    async def start(self) -> None:
        await self._on_lifeline(self.control_plane.start_apiserver)

    async def restart(self, downtime: float = 0.0) -> float:
        """kill -9, stay down ``downtime`` seconds, start, wait until ready; returns the seconds it was away."""
        began = time.monotonic()
        await self.kill()
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self.start()
        took = time.monotonic() - began
        self.restarts += 1
        self.downtime.append(took)
        return took


@contextlib.asynccontextmanager
async def disconnected(proxy: FaultProxy, *, silent: bool = False) -> AsyncIterator[None]:
    """Cut whoever talks through ``proxy`` off the API for the duration of the block.

    New connections are refused; open ones are reset (or, with ``silent``, blackholed: no
    RST, no data, as when a NAT entry is dropped). On exit, new connections work again.
    """
    proxy.refuse_new(True)
    try:
        if silent:
            proxy.blackhole_all()
        else:
            proxy.reset_all()
        yield
    finally:
        proxy.refuse_new(False)
        if silent:
            proxy.reset_all()  # blackholed pairs would otherwise stay open forever
