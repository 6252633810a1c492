"""Giving memory back after a backlog.

Handling a backlog (a first LIST, a relist, many plugins on one stream) allocates far more
than the process keeps afterwards. CPython frees it, but glibc's allocator keeps the freed
pages in its heaps: the process's RSS stays at the backlog's peak for good. ``malloc_trim``
hands them back to the kernel. Asked once per large amount of work, when a queue has
drained (never on a hot path); a no-op where the C library has no such call (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

TRIM_AFTER = 1000  # objects processed (by all queues together) between two trims


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_trim = _malloc_trim()
trimming = _trim is not None
_work = 0
trims = 0  # how many times memory was given back (for tests and metrics)


def drained(processed: int) -> None:
    """A queue has drained after processing ``processed`` items: give freed memory back to the
    kernel once enough work has been done since the last time."""
    global _work, trims
    _work += processed
    if _work < TRIM_AFTER or _trim is None:
        return
    _work = 0
    trims += 1
    _trim(0)
