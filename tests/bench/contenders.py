"""The contenders: how each one is started as a child process for its namespaces.

Environment switches read by ``contender_opd.py`` (the bench sets them, people can too):
``BENCH_POSTING=1`` turns Kubernetes Event posting on (opd's default; off for the comparison with the
raw client, which posts none), and ``BENCH_TICKER=FILE`` runs a 10 ms ticker on opd's event loop that
writes how late each tick came to FILE (the loop lag under load); ``BENCH_WATCH_TIMEOUT=S`` sets
``settings.watching.server_timeout`` (whole seconds; opd's default 300 when unset).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
POSTING_ENV = "BENCH_POSTING"
TICKER_ENV = "BENCH_TICKER"
WATCH_TIMEOUT_ENV = "BENCH_WATCH_TIMEOUT"


@dataclass(frozen=True)
class Contender:
    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)  # added to the environment it runs in

    @property
    def framework(self) -> str:
        """raw, kopf or opd: what runs (opd+events is opd)."""
        return self.name.split("+")[0]

    def argv(self, namespaces: str | Sequence[str]) -> list[str]:
        script = str(HERE / self.script)
        spaces = [namespaces] if isinstance(namespaces, str) else list(namespaces)
        flags = [arg for namespace in spaces for arg in ("-n", namespace)]
        if self.framework == "kopf":
            return [sys.executable, "-m", "kopf", "run", "--standalone", *flags, script]
        if self.framework == "opd":
            return [sys.executable, "-m", "opd", "run", *flags, script]
        return [sys.executable, script, *spaces]

    def available(self) -> bool:
        return self.framework != "kopf" or importlib.util.find_spec("kopf") is not None


RAW = Contender("raw", "contender_raw.py")
KOPF = Contender("kopf", "contender_kopf.py")
OPD = Contender("opd", "contender_opd.py", {POSTING_ENV: "0"})  # posting off: the raw client posts none
OPD_EVENTS = Contender("opd+events", "contender_opd.py", {POSTING_ENV: "1"})  # opd as it comes: one Event per object
ALL = {c.name: c for c in (RAW, KOPF, OPD, OPD_EVENTS)}
