"""An operator as a child process, stopped by its PID, dying with its parent."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


class _Lifeline:
    """A daemon thread that starts child processes for the whole life of this process.

    Children get PR_SET_PDEATHSIG, so they die with a SIGKILLed runner; but that signal fires when
    the *thread* that forked them exits, and asyncio's executor threads exit with their loop (a
    pytest test's loop ends with the test). This thread never ends before the process does.
    """

    _instances: dict[str, _Lifeline] = {}
    _lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=f"opd-chaos-{name}", daemon=True).start()

    @classmethod
    def named(cls, name: str) -> _Lifeline:
        with cls._lock:
            if name not in cls._instances:
                cls._instances[name] = cls(name)
            return cls._instances[name]

    def _run(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future


try:  # loaded here, in the parent: a forked child of a threaded process should do as little as possible
    _prctl: Callable[..., int] | None = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A SIGKILLed runner must not leave operators behind.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    # The operator must not inherit the runner's systemd or opd settings.
    drop = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPD_") and k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


class OperatorProcess:
    """An operator run as a child process; every signal goes to its PID, never by name.

    By default ``python -m opd run HANDLERS -n NS... --kubeconfig KC --log-format text [-v]``; give
    ``argv`` to run anything else (``opd start --config ...``, your own script). Output of every
    start is appended to ``log``, each start after a marker line.
    """

    def __init__(self, handlers: Path | None = None, *, namespaces: Sequence[str] = (), kubeconfig: Path | None = None,
                 log: Path, verbose: bool = False, argv: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if argv is None:
            if handlers is None:
                raise ValueError("give a handlers file or a whole argv")
            argv = [sys.executable, "-m", "opd", "run", str(handlers), "--log-format", "text"]
            for namespace in namespaces:
                argv += ["-n", namespace]
            if kubeconfig is not None:
                argv += ["--kubeconfig", str(kubeconfig)]
            if verbose:
                argv.append("-v")
        self.argv = list(argv)
        self.log = Path(log)
        self.env = _clean_env(env)
        self.starts = 0
        self.pids: list[int] = []  # of every start, in order
        self._popen: subprocess.Popen[bytes] | None = None
        self._offset = 0  # where the current start's output begins in the log

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> OperatorProcess:
        if self.running:
            raise RuntimeError(f"the operator already runs as pid {self.pid}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"==== opd-chaos: start #{self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self._offset = out.tell()

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True, preexec_fn=_die_with_parent)

            self._popen = _Lifeline.named("operators").submit(spawn).result(30)
        self.starts += 1
        self.pids.append(self._popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def signal(self, sig: int) -> None:
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def sigkill(self) -> None:
        """kill -9, and reap it (a crash: no handler, no cleanup runs)."""
        self.signal(signal.SIGKILL)
        if self._popen is not None:
            self._popen.wait(30)

    def sigterm(self) -> None:
        """Ask for a graceful stop; ``wait_exit()`` measures how long it takes."""
        self.signal(signal.SIGTERM)

    def restart(self) -> OperatorProcess:
        """kill -9 (if still running) and start again at once, with the same arguments."""
        self.sigkill()
        return self.start()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent. Returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.sigkill()
        return self._popen.poll()

    async def wait_exit(self, timeout: float) -> float | None:
        """Seconds until the process exits, or None if it still runs after ``timeout``."""
        started = time.monotonic()
        while self._popen is not None and self._popen.poll() is None:
            if time.monotonic() - started > timeout:
                return None
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    # -- output ------------------------------------------------------------------------------------------------------
    def output(self, *, all_starts: bool = False) -> str:
        try:
            with self.log.open("rb") as f:
                if not all_starts:
                    f.seek(self._offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_output(self, pattern: str, timeout: float) -> float | None:
        """Seconds until ``pattern`` (a regex) shows in this start's output; None after ``timeout``."""
        started = time.monotonic()
        regex = re.compile(pattern)
        while not regex.search(self.output()):
            if time.monotonic() - started > timeout or not self.running:
                return None
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Until opd says every watch has listed its objects; raise with the output's tail if not."""
        took = await self.wait_for_output(r"opd: ready\b", timeout)
        if took is None:
            tail = "\n".join(self.output().splitlines()[-15:])
            state = "running" if self.running else f"exited with {self.returncode}"
            raise TimeoutError(f"operator not ready within {timeout:g}s ({state}); its output ends:\n{tail}")
        return took
