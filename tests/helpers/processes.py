"""Programs a test starts (``opd start``, ``opd run``, Kopf) in a clean environment, killed by PID at the end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("OPD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
    return {**clean, **extra}


class Process:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
