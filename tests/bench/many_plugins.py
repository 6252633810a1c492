"""Scenario 4, many plugins in one daemon: needs ``opd start`` (the plugin daemon), which is not built yet.

Deliberately no numbers until then: a stub that says so.
"""

from __future__ import annotations

from typing import Any

SKIPPED = "skipped: needs opd start (daemon)"


async def run_plugins() -> list[dict[str, Any]]:
    print(f"  plugins: {SKIPPED}", flush=True)
    return [{"scenario": "plugins", "skipped": SKIPPED}]
