"""Contender "opd": the same handler for opd, run as ``opd run -n NAMESPACE contender_opd.py``.

Kubernetes events are not posted (nor by the Kopf contender) unless ``BENCH_POSTING=1``; with
``BENCH_TICKER=FILE``, a 10 ms ticker on opd's event loop measures the loop's lag (see contenders.py);
``BENCH_WATCH_TIMEOUT=S`` sets the watch requests' server-side timeout; ``BENCH_FIRST_LIST=FILE`` notes the
CPU spent by the first LIST (firstlist.py); everything else is opd's default.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import firstlist  # a sibling: `opd run` puts this file's folder on sys.path

import opd

firstlist.install()  # loaded before the operator starts: before its first request

TICK = 0.010  # seconds between ticks: a tick later than that waited for the loop


async def ticker(path: Path) -> None:
    """Every second, one line: ``monotonic-time lag-ms lag-ms ...`` of that second's ticks.

    ``time.monotonic()`` is the machine's CLOCK_MONOTONIC: the bench compares it with its own.
    """
    lags: list[float] = []
    flushed = time.monotonic()
    with path.open("a") as out:
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            lags.append((now - before - TICK) * 1000)
            if now - flushed >= 1.0:
                out.write(f"{now:.3f} " + " ".join(f"{lag:.2f}" for lag in lags) + "\n")
                out.flush()
                lags.clear()
                flushed = now


@opd.on.startup()
async def configure(settings: opd.OperatorSettings, memo: opd.Memo, **_: object) -> None:
    settings.posting.enabled = os.environ.get("BENCH_POSTING") == "1"
    if os.environ.get("BENCH_WATCH_TIMEOUT"):
        settings.watching.server_timeout = int(os.environ["BENCH_WATCH_TIMEOUT"])
    ticks = os.environ.get("BENCH_TICKER")
    if ticks:
        # On opd's own loop (async startup handlers run there); kept in memo: a task needs a reference.
        memo["ticker"] = asyncio.get_running_loop().create_task(ticker(Path(ticks)))


@opd.on.create("kopfexamples")
def create_fn(**_: object) -> dict[str, str]:
    return {"message": "created"}
