"""``opd start``: the daemon in the foreground, as systemd runs it.

SIGTERM and SIGINT stop it gracefully (within the shutdown bound, then exit 0);
SIGHUP re-reads the config file and restarts only the plugins it changed.
"""

from __future__ import annotations

import asyncio
import signal

from loguru import logger

from opd.daemon.config import DaemonConfig
from opd.daemon.supervisor import Supervisor


async def serve(config: DaemonConfig) -> None:
    loop = asyncio.get_running_loop()
    stop, reload = asyncio.Event(), asyncio.Event()

    def on_stop(name: str) -> None:
        logger.info(f"opd: {name} received: stopping")
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    try:
        await Supervisor(config).run(stop, reload)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    logger.info("opd: stopped")


def start(config: DaemonConfig) -> None:
    asyncio.run(serve(config))
