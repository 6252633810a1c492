"""Running one operator from the wild under one framework: the process (``python -m kopf run``,
with the shim first on PYTHONPATH for opd), its log, and the verdict with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

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


# -- what the two scripts (wild/run.py, examples/run.py) share: the report and the run -----------------------------

def verdict(ok: bool | None) -> str:
    return "not judged" if ok is None else "runs" if ok else "FAILS"


def table(rows: list[list[str]]) -> str:
    """Rows of cells, every column but the last padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in rows)


def why_not(cells: list[Result | None]) -> str:
    return "; ".join(f"{c.framework}: {c.why}" for c in cells if c and c.ok is not True and c.why)


def count_line(title: str, results: list[Result], frameworks: list[str], *, unjudged: bool = False) -> str:
    """``<title>: Kopf runs K of J, opd runs O of J``: only judged ones count (``unjudged``: and say how
    many were not)."""
    parts = []
    for fw in frameworks:
        mine = [r for r in results if r.framework == fw]
        judged = [r for r in mine if r.ok is not None]
        text = f"{'Kopf' if fw == 'kopf' else 'opd'} runs {sum(bool(r.ok) for r in judged)} of {len(judged)}"
        if unjudged and len(judged) < len(mine):
            text += f" ({len(mine) - len(judged)} not judged)"
        parts.append(text)
    return f"{title}: " + ", ".join(parts)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up path as Ctrl-C


def run_script(keep: Path | None, prefix: str, work: Callable[[Path], list[Result]],
               render: Callable[[list[Result]], str], count: Callable[[list[Result]], str],
               failures: tuple[type[Exception], ...] = (), what: str = "") -> int:
    """A script's run: ``work`` in a folder (``keep``, or a temporary one removed after), SIGTERM and
    Ctrl-C ending it through the same clean-up, then its table and count line; 1 on one of
    ``failures`` (said in one line about ``what``), 130 when interrupted."""
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = keep or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        results = work(workdir)
    except failures as exc:
        print(f"error: {what}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every process started is stopped", file=sys.stderr)
        return 130
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(render(results))
    print(f"\n{count(results)} (in {time.monotonic() - started:.0f} s)" + (f"; logs kept in {keep}" if keep else ""))
    return 0
