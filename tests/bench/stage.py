"""What every scenario shares: the API, where logs go, starting contenders, waiting on the observer."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from children import Child, cpu_seconds
from contenders import Contender
from kubeapi import Api, Observer, create_object


@dataclass(frozen=True)
class Rounds:
    """How many rounds each contender runs: raw and opd in every round, the others in the first few."""

    rounds: int = 1  # backlog and live: raw and opd, alternating
    kopf: int = 1  # Kopf joins the first rounds only: it is slow, and only its ratio to opd is a goal
    events: int = 1  # opd with Event posting on, in the backlog's first rounds
    plugins: int = 1  # many plugins: 1 vs K plugins

    def lineup(self, contenders: list[Contender], round_: int) -> list[Contender]:
        """Who runs in round ``round_`` (1-based), each round starting with another contender."""
        extra = {"kopf": self.kopf, "opd+events": self.events}
        present = [c for c in contenders if round_ <= extra.get(c.name, self.rounds)]
        return rotated(present, round_ - 1)

    def schedule(self, contenders: list[Contender]) -> list[tuple[int, Contender]]:
        """Every (round, contender) run, in order."""
        most = max([self.rounds, *(self.kopf for c in contenders if c.name == "kopf"),
                    *(self.events for c in contenders if c.name == "opd+events")], default=0)
        return [(r, c) for r in range(1, most + 1) for c in self.lineup(contenders, r)]


@dataclass
class Stage:
    api: Api
    kubeconfig: Path
    workdir: Path
    server_pids: dict[str, int]  # kube-apiserver and etcd: their CPU is the cost a contender causes
    # (contender, N) -> a namespace whose N objects that contender has handled: idle memory reuses them.
    handled: dict[tuple[str, int], str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rounds: Rounds = field(default_factory=Rounds)
    profile_dir: Path | None = None  # py-spy flame graphs of every opd contender go here
    _count: int = 0

    def spawn(self, contender: Contender, namespaces: str | list[str], *, kubeconfig: Path | None = None,
              env: dict[str, str] | None = None) -> Child:
        self._count += 1
        first = namespaces if isinstance(namespaces, str) else f"{namespaces[0]}-and-{len(namespaces) - 1}"
        label = f"{self._count:03d}-{contender.name.replace('+', '-')}-{first}"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig), "PYTHONUNBUFFERED": "1",
               **contender.env, **(env or {})}
        child = Child(contender.name, contender.argv(namespaces), env=env,
                      log=self.workdir / f"{label}.log").start()
        if self.profile_dir is not None and contender.framework == "opd":
            # BENCH_PROFILE_FORMAT=raw: collapsed stacks that cpu_breakdown.py reads (else a flame graph)
            raw = os.environ.get("BENCH_PROFILE_FORMAT") == "raw"
            self._profile(child, self.profile_dir / f"{label}.{'txt' if raw else 'svg'}")
        return child

    def log_path(self, name: str) -> Path:
        """A file in the work folder, numbered like the contenders' logs."""
        self._count += 1
        return self.workdir / f"{self._count:03d}-{name}"

    def _profile(self, child: Child, svg: Path) -> None:
        """Sample where the contender spends its CPU (--gil: only the thread that holds the GIL)."""
        argv = [py_spy(), "record", "--pid", str(child.pid), "--gil", "--nonblocking", "--rate", "200",
                "--format", "raw" if svg.suffix == ".txt" else "flamegraph", "--output", str(svg)]
        child.followers.append(Child("py-spy", argv, env=dict(os.environ), log=svg.with_suffix(".log"))
                               .start())
        print(f"  profiling {child.name} (PID {child.pid}) into {svg}", flush=True)

    def server_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.server_pids.values())

    async def quiesce(self) -> None:
        """Let the API server and etcd finish what the last contender (or creating objects) left them,
        so that it is not billed to the next contender."""
        if not await wait_quiet(self.server_cpu, quiet=0.15, most=60.0):
            print("  note: the API server is still busy after 60s; going on", flush=True)

    def fail(self, what: str, why: str, child: Child | None = None) -> dict[str, Any]:
        """Record and print a failed run (with the contender's last output lines)."""
        message = f"{what}: {why}"
        self.failures.append(message)
        print(f"  FAILED {message}", flush=True)
        if child is not None:
            print(f"  {child.name} ({child.describe_exit()}), last output:\n{child.tail()}", flush=True)
        return {"error": message}


def py_spy() -> str:
    """py-spy from PATH or from this interpreter's environment."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


async def wait_quiet(cpu_seconds: Callable[[], float], *, quiet: float, window: float = 1.0, least: float = 0.0,
                     most: float = 60.0) -> bool:
    """Whether a process (or several: ``cpu_seconds`` adds them up) came to use under ``quiet`` of a core
    over one window, within ``most`` seconds and not before ``least`` seconds."""
    started = time.monotonic()
    before = cpu_seconds()
    while time.monotonic() - started < most:
        await asyncio.sleep(window)
        now = cpu_seconds()
        if (now - before) / window < quiet and time.monotonic() - started >= least:
            return True
        before = now
    return False


class LoadWatch:
    """The machine's 1-minute load average, sampled every few seconds while a scenario runs: it counts the
    bench's own processes too (about 1.5-2 while a contender works), so what stands above that is other work."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> LoadWatch:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"min": min(self.samples), "max": max(self.samples),
                "mean": sum(self.samples) / len(self.samples)} if self.samples else {}


def rotated(contenders: list[Contender], round_: int) -> list[Contender]:
    """Each round starts with another contender: a busy neighbour on the machine hurts none of them always."""
    shift = round_ % max(1, len(contenders))
    return contenders[shift:] + contenders[:shift]


async def wait_results(observer: Observer, child: Child, count: int, *, stall: float = 60.0) -> str | None:
    """Wait until ``count`` objects carry the result; None then, else why not (exit, or no progress)."""
    progress, progressed_at = len(observer.seen), time.monotonic()
    while not await observer.wait(lambda: len(observer.seen) >= count, timeout=0.5):
        if not child.alive():
            return f"{child.describe_exit()} with {len(observer.seen)}/{count} results"
        if len(observer.seen) != progress:
            progress, progressed_at = len(observer.seen), time.monotonic()
        elif time.monotonic() - progressed_at > stall:
            return f"no progress for {stall:.0f}s at {progress}/{count} results"
    return None


async def wait_ready(stage: Stage, observer: Observer, child: Child, namespace: str, *,
                     probe: str = "probe", timeout: float = 120.0) -> str | None:
    """A contender is ready when a probe object created now gets its result (its watch is listed)."""
    await create_object(stage.api, namespace, probe)
    deadline = time.monotonic() + timeout
    while not await observer.wait(lambda: probe in observer.seen, timeout=0.5):
        if not child.alive():
            return f"{child.describe_exit()} before it was ready"
        if time.monotonic() > deadline:
            return f"probe object not handled within {timeout:.0f}s"
    return None
