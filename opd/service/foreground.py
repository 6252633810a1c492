"""``opd start``: the daemon in the foreground, as systemd runs it.

SIGTERM and SIGINT stop it gracefully (within the shutdown bound, then exit 0);
SIGHUP re-reads the config file: logging is set up again, only the plugins whose
configuration changed are restarted, and settings read only at start (``listen``,
``[kubernetes]``) are logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from loguru import logger

from opd.service.config import DaemonConfig
from opd.service.supervisor import Supervisor


async def serve(config: DaemonConfig, setup_logging: Callable[[DaemonConfig], None] | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop, reload = asyncio.Event(), asyncio.Event()

    def on_stop(name: str) -> None:
        logger.info(f"opd: {name} received: stopping")
        stop.set()

    def on_reload() -> None:
        logger.info("opd: SIGHUP received: reloading the configuration")
        reload.set()

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        await Supervisor(config, setup_logging=setup_logging).run(stop, reload)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    logger.info("opd: stopped")


def start(config: DaemonConfig, setup_logging: Callable[[DaemonConfig], None] | None = None) -> None:
    """Run the daemon until stopped. ``setup_logging`` is called again with each configuration a
    SIGHUP loads (the caller knows the command line's overrides; the daemon does not import opd.logs)."""
    asyncio.run(serve(config, setup_logging))
