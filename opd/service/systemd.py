"""systemd's notification protocol (sd_notify), by hand: a few datagrams, no dependency.

Every function is a no-op returning False outside systemd (no ``$NOTIFY_SOCKET``), so the
daemon calls them unconditionally. A failed send is logged, never raised: losing a status
update must not stop the operators.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from loguru import logger


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=value`` fields in one datagram to ``$NOTIFY_SOCKET``; True if sent."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    if address.startswith("@"):  # Linux abstract namespace: a leading NUL instead of '@'
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        logger.warning(f"opd: systemd notification {fields[0].split('=')[0]} not sent: {exc}")
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline would start a new KEY=value field


def ready(status: str | None = None) -> bool:
    """Startup is done (Type=notify): systemd starts units ordered after this one."""
    return notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))


def reloading(status: str | None = None) -> bool:
    """A reload (SIGHUP) began; call ``ready()`` when it is done (needed by Type=notify-reload)."""
    stamp = f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    return notify("RELOADING=1", stamp, *([f"STATUS={_one_line(status)}"] if status else []))


def stopping(status: str | None = None) -> bool:
    """Shutdown began: systemd shows the unit as deactivating (and stops expecting watchdog pings)."""
    return notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))


def status(text: str) -> bool:
    """A one-line status, shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    """A keep-alive ping: without one every WatchdogSec, systemd kills and restarts the daemon."""
    return notify("WATCHDOG=1")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WatchdogSec, as sd_watchdog_enabled advises); None: no watchdog."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = int(env.get("WATCHDOG_PID", "") or os.getpid())
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():  # set for another process (e.g. inherited by a child)
        return None
    return usec / 2 / 1_000_000


async def watchdog_loop(is_healthy: Callable[[], bool | Awaitable[bool]], interval: float | None = None) -> None:
    """Ping the watchdog while ``is_healthy()`` says so; returns at once without a watchdog.

    An unhealthy daemon stops pinging, and systemd restarts it after WatchdogSec: a wedged
    operator is thereby restarted, which a live-but-stuck process would never do by itself.
    A health check that raises counts as unhealthy. Cancel the task to stop it.
    """
    interval = watchdog_interval() if interval is None else interval
    if interval is None:
        return
    while True:
        try:
            verdict = is_healthy()
            healthy = bool(await verdict) if inspect.isawaitable(verdict) else bool(verdict)
        except Exception as exc:
            logger.warning(f"opd: health check failed: {exc!r}; not pinging the watchdog")
            healthy = False
        if healthy:
            watchdog()
        await asyncio.sleep(interval)
