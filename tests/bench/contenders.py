"""The contenders: how each one is started as a child process for a namespace."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Contender:
    name: str
    script: str

    def argv(self, namespace: str) -> list[str]:
        script = str(HERE / self.script)
        if self.name == "kopf":
            return [sys.executable, "-m", "kopf", "run", "--standalone", "-n", namespace, script]
        if self.name == "opd":
            return [sys.executable, "-m", "opd", "run", "-n", namespace, script]
        return [sys.executable, script, namespace]

    def available(self) -> bool:
        return self.name != "kopf" or importlib.util.find_spec("kopf") is not None


RAW = Contender("raw", "contender_raw.py")
KOPF = Contender("kopf", "contender_kopf.py")
OPD = Contender("opd", "contender_opd.py")
ALL = {c.name: c for c in (RAW, KOPF, OPD)}
