"""Child processes of the benchmark: started in their own session, measured from /proc, stopped by PID."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_LIVE: set[Child] = set()  # what stop_all() must stop, also after Ctrl-C


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its own, not its children's), in seconds; 0.0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_bytes(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in bytes; empty once it is gone."""
    found: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def _die_with_parent() -> None:
    # A benchmark killed with SIGKILL must not leave operators running against a dead cluster.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Usage:
    cpu_s: float
    rss_mb: float
    peak_rss_mb: float


class Child:
    """One contender process; its output goes to a log file (a full pipe would stall it)."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.cwd = cwd  # None: the bench's own
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.followers: list[Child] = []  # processes that end with this one (a profiler attached to it)

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    def start(self) -> Child:
        with self.log.open("wb") as out:
            self.started_at = time.monotonic()
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the children in order.
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, cwd=self.cwd, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        _LIVE.add(self)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def usage(self) -> Usage:
        mem = memory_bytes(self.pid)
        return Usage(cpu_s=self.cpu_seconds(), rss_mb=mem.get("VmRSS", 0) / 2**20,
                     peak_rss_mb=mem.get("VmHWM", 0) / 2**20)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; then its followers get ``timeout`` to end by themselves."""
        _LIVE.discard(self)
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            self.wait_or_kill(timeout)
        for follower in self.followers:
            follower.wait_or_kill(timeout)
            _LIVE.discard(follower)

    def wait_or_kill(self, timeout: float) -> None:
        assert self.popen is not None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def describe_exit(self) -> str:
        code = self.popen.poll() if self.popen is not None else None
        return "running" if code is None else f"exited with code {code}"

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(f"    {line}" for line in text[-lines:]) or "    (no output)"


def stop_all() -> None:
    """Stop every child still running (on errors and Ctrl-C)."""
    for child in list(_LIVE):
        child.stop(timeout=5.0)
