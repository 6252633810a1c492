"""Building the control plane's binaries from Debian's sources: ``opd local-cluster install``.

The build script compiles for many minutes without a word of its own; a ticker repeats the
current step with the time elapsed, so a terminal or a CI log never looks hung.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from types import FrameType, TracebackType

from opd.errors import ControlPlaneError
from opd.localcluster.assets import KUBERNETES_VERSION, Assets, cache_dir, find_assets

# Seconds without a line before the current step is said again: lines come at least every 10 s.
PROGRESS_INTERVAL = 8.0


def build_script() -> Path:
    return Path(str(resources.files("opd.localcluster").joinpath("build-control-plane.sh")))


def what_it_installs(dest: Path) -> list[str]:
    """What the build leaves on the system, said before it starts (the README lists the same)."""
    return [
        "Debian packages: golang-go (golang-1.19-go on Debian 13), etcd-server, make, rsync, openssl,"
        " ca-certificates, golang-github-modern-go-reflect2-dev",
        "while it runs: an apt source for Debian bookworm (deb-src; deb too on Debian 13), removed afterwards",
        f"Kubernetes {KUBERNETES_VERSION}'s source package (~35 MB), unpacked (1.3 GB) and compiled"
        " in a temporary folder removed afterwards",
        f"the binaries in {dest}",
    ]


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


class _Progress:
    """Says each step with the time elapsed; after ``interval`` s without a line, says it again."""

    def __init__(self, say: Callable[[str], None], interval: float) -> None:
        self._say = say
        self._interval = interval
        self._started = time.monotonic()
        self._last = self._started
        self._step = "starting the build"
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="opd-build-progress", daemon=True)

    def __enter__(self) -> _Progress:
        self._ticker.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._ticker.join()

    @property
    def current(self) -> str:
        return self._step

    def step(self, text: str) -> None:
        with self._lock:
            self._step = text
            self._emit(text)

    def _emit(self, text: str) -> None:  # with the lock held
        now = time.monotonic()
        self._last = now
        self._say(f"==> [{_clock(now - self._started)}] {text}")

    def _tick(self) -> None:
        while not self._done.wait(min(1.0, self._interval / 4)):
            with self._lock:
                if time.monotonic() - self._last >= self._interval:
                    self._emit(f"{self._step} (still running)")


def _stop_build(proc: subprocess.Popen[str]) -> None:
    """Interrupted: SIGTERM the script's whole group (the compiler too, so the script's
    cleanup runs now rather than after the compile), SIGKILL it if that takes too long."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


@contextlib.contextmanager
def _signals_end_the_build() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit here, as Ctrl-C raises KeyboardInterrupt, so that a
    stopped ``install`` stops the build it started (in a session of its own, no signal to its
    group reaches it). Only the main thread may set handlers; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def install(
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    script: Path | None = None,
    interval: float = PROGRESS_INTERVAL,
) -> Assets:
    """Build the binaries from Debian's sources unless the cache has them already.

    ``script`` replaces the build script (tests); ``interval`` is the longest silence.
    """
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if not force:
        with contextlib.suppress(ControlPlaneError):
            assets = find_assets()
            say(f"==> already built: {assets.folder}")
            return assets
    dest = cache_dir()
    script = script or build_script()
    say(f"==> building the Kubernetes {KUBERNETES_VERSION} control plane into {dest}"
        " (once; 5-10 minutes on 2 cores). It puts on this system:")
    for line in what_it_installs(dest):
        say(f"      {line}")
    tail: list[str] = []
    with _signals_end_the_build():
        try:
            # A session of its own: an interruption stops the script and everything it started, as one.
            proc = subprocess.Popen(
                ["bash", str(script), str(dest)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise ControlPlaneError(f"cannot run the build script {script}: {exc.strerror}") from exc
        assert proc.stdout is not None
        with _Progress(say, interval) as ticker:
            try:
                for raw in proc.stdout:
                    line = raw.rstrip("\n")
                    if line.startswith("==> "):
                        ticker.step(line.removeprefix("==> "))
                    tail = [*tail[-20:], line]
                code = proc.wait()
            except BaseException:
                _stop_build(proc)
                raise
    if code != 0:
        said = next((t.removeprefix("error: ") for t in reversed(tail) if t.startswith("error: ")), None)
        reason = said or f"{ticker.current} (exit {code})"
        raise ControlPlaneError(f"building the control plane failed: {reason}")
    return find_assets()
