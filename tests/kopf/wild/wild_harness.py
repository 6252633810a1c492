"""Running one operator from the wild under one framework: the process (``python -m kopf run``,
with the shim first on PYTHONPATH for opd), its log, and the verdict with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wild_kube import Kube, Missed, wait

HERE = Path(__file__).resolve().parent
SHIM = HERE / "shim"
FRAMEWORKS = ("kopf", "opd")


@dataclass
class Operator:
    """An operator from the wild: where it comes from, how it is started, what it must do."""

    name: str
    source: str  # repository (or package), path and commit (or version)
    licence: str
    args: list[str]  # after ``kopf run``: files or ``-m module``, and ``-n``/``-A``
    scenario: Callable[[Stage], None]
    setup: Callable[[Kube], None] | None = None  # before it starts: its CRDs, as its install applies them
    folder: Path | None = None  # its copy under tests/kopf/wild/ (cwd and PYTHONPATH), if copied
    needs: tuple[str, ...] = ()  # modules it imports: missing ones mean "not judged" (not installed)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    operator: str
    framework: str
    ok: bool | None  # None: not judged (a dependency is missing here)
    why: str = ""
    seconds: float = 0.0


class OperatorProcess:
    """``python -m kopf run --standalone ARGS`` as a child in its own session, stopped by its PID."""

    def __init__(self, operator: Operator, framework: str, kubeconfig: Path, log: Path) -> None:
        self.operator = operator
        self.framework = framework
        self.log_path = log
        paths = [str(operator.folder)] if operator.folder else []
        if framework == "opd":
            paths.insert(0, str(SHIM))  # ``import kopf`` finds opd
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), **operator.env}
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never in-cluster, whatever the caller's environment
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", *operator.args],
            cwd=str(operator.folder or HERE), env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def gone(self) -> str | None:
        """Why the operator is no longer running (it exited), or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        return f"the operator exited with {code}: {reason(self.output())}"

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


class Stage:
    """What a scenario gets: the API, a unique suffix for its names, and ``expect``."""

    def __init__(self, kube: Kube, process: OperatorProcess, timeout: float) -> None:
        self.kube = kube
        self.process = process
        self.timeout = timeout
        self.uid = uuid.uuid4().hex[:6]

    def expect(self, what: str, condition: Callable[[], object], timeout: float | None = None) -> object:
        return wait(condition, timeout or self.timeout, what, alive=self.process.gone)


# Lines that say what went wrong, in the order they are preferred as the reason.
_ERROR_LINE = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception|Exit)\b.*$|.*\b(?:ERROR|CRITICAL|Traceback)\b.*", re.M)


def reason(log: str, limit: int = 140) -> str:
    """The last line of the log that names an error (an exception's last line first), shortened."""
    lines = [m.group(0).strip() for m in _ERROR_LINE.finditer(log) if "Traceback" not in m.group(0)]
    line = lines[-1] if lines else (log.strip().splitlines() or ["(no output)"])[-1].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def judge(operator: Operator, framework: str, kube: Kube, kubeconfig: Path, workdir: Path,
          timeout: float) -> Result:
    """Start the operator, play its scenario, stop it: passed, or failed with one line why."""
    missing = [m for m in operator.needs if not _importable(m)]
    if missing:
        return Result(operator.name, framework, None, f"not installed here: {', '.join(missing)}")
    log = workdir / f"{operator.name}.{framework}.log"
    started = time.monotonic()
    try:
        if operator.setup is not None:
            operator.setup(kube)
    except Exception as exc:
        return Result(operator.name, framework, False, f"setup error: {exc}")
    process = OperatorProcess(operator, framework, kubeconfig, log)
    stage = Stage(kube, process, timeout)
    try:
        operator.scenario(stage)
        return Result(operator.name, framework, True, "", time.monotonic() - started)
    except Missed as exc:
        detail = str(exc)
        if "operator exited" not in detail:
            detail += f"; operator log: {reason(process.output())}"
        return Result(operator.name, framework, False, detail, time.monotonic() - started)
    except Exception as exc:  # the scenario's own request failed: say so, it is not the operator's verdict
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Result(operator.name, framework, False, f"scenario error at line {where.lineno}: {exc}",
                      time.monotonic() - started)
    finally:
        process.stop()


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
