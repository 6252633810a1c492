"""Where a contender's startup ends: the CPU it has spent when it sends its first LIST of the bench's resource.

With ``BENCH_FIRST_LIST=FILE`` in its environment, a contender (raw, opd or Kopf: all three speak through
aiohttp) calls :func:`install` before its first request; the first GET of the resource's collection that
is not a watch then writes ``CPU-seconds monotonic-time`` to FILE: the process's CPU (every thread, user
and system, as /proc counts it) and the machine's CLOCK_MONOTONIC, which the bench compares with its own.
The hook removes itself at once: the requests after it pay nothing. The backlog subtracts that CPU from
what the contender has spent at its last result: the work without the imports, login and API discovery.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

FIRST_LIST_ENV = "BENCH_FIRST_LIST"
PLURAL = "kopfexamples"  # kubeapi.PLURAL; not imported from there: Kopf and opd load this file by path


def is_list(method: str, url: Any, params: Any = None, plural: str = PLURAL) -> bool:
    """A LIST of ``plural`` (a GET of its collection, not a watch of it), however the URL is given."""
    if method.upper() != "GET":
        return False
    parsed = URL(str(url))
    query = dict(parsed.query)
    if isinstance(params, str):
        query |= dict(URL("/?" + params).query)
    elif isinstance(params, Mapping):
        query |= {str(k): str(v) for k, v in params.items()}
    elif params is not None:  # pairs
        query |= {str(k): str(v) for k, v in params}
    return parsed.path.rstrip("/").endswith("/" + plural) and query.get("watch", "").lower() not in ("true", "1")


def read(path: Path) -> tuple[float, float] | None:
    """(CPU seconds, monotonic time) at the first LIST, as the contender wrote them; None if it did not."""
    try:
        cpu, at = path.read_text().split()
        return float(cpu), float(at)
    except (OSError, ValueError):
        return None


def install(plural: str = PLURAL) -> None:
    """Note the first LIST of ``plural`` into $BENCH_FIRST_LIST (nothing without it)."""
    target = os.environ.get(FIRST_LIST_ENV)
    if not target:
        return
    original = aiohttp.ClientSession._request

    async def _request(self: aiohttp.ClientSession, method: str, str_or_url: Any, **kwargs: Any) -> Any:
        if is_list(method, str_or_url, kwargs.get("params"), plural):
            cpu, at = time.process_time(), time.monotonic()  # before anything of the hook's own
            aiohttp.ClientSession._request = original  # type: ignore[method-assign]
            Path(target).write_text(f"{cpu:.4f} {at:.4f}\n")
        return await original(self, method, str_or_url, **kwargs)

    aiohttp.ClientSession._request = _request  # type: ignore[method-assign]
