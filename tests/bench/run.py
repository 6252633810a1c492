"""opd's benchmark suite: opd against a raw client (and Kopf) on a real local control plane, and the goals of
issues #15 and #22 with their measured values, met or missed.

    python tests/bench/run.py [--quick] [--rounds R] [--scenarios coldstart,backlog,live,paired,streams,idle,plugins]

Contenders alternate within each round (raw, opd; opd with Event posting and Kopf in the first rounds
only); every figure is a median over rounds with its range, and every ratio is taken within a round.
Every contender is a child process, measured from /proc and stopped by its PID; so are the control
plane's processes, also on Ctrl-C. Kopf is compared when it is installed (``tox -e bench``).
With the defaults the run takes about 42 minutes on 2 cores (--rounds 3: about 32); --quick about 7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import backlog
import children
import coldstart
import idle
import live
import many_plugins
import paired
import report
import streams
from contenders import ALL, Contender
from kubeapi import Api, ensure_crd
from stage import LoadWatch, Rounds, Stage

from opd.localcluster import LocalControlPlane

# idle reuses what the backlog handled
SCENARIOS = ("coldstart", "backlog", "live", "paired", "streams", "idle", "plugins")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(n) for n in _csv(text)]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def _two_sizes(text: str) -> tuple[int, int]:
    sizes = _ints(text)
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise argparse.ArgumentTypeError(f"expected two numbers N1,N2 with 0 < N1 < N2, got {text!r}")
    return sizes[0], sizes[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of every scenario (~7 min): N=1000, 2 rounds, 10 s of live load, "
                             "1 minute of idle streams with a 30 s watch timeout; its figures are not the goals' "
                             "sizes")
    parser.add_argument("--scenarios", type=_csv, default=list(SCENARIOS), help="comma-separated, of: "
                        + ", ".join(SCENARIOS))
    parser.add_argument("--contenders", type=_csv, default=list(ALL),
                        help="comma-separated, of: " + ", ".join(ALL) + " (opd+events: opd posting Events)")
    parser.add_argument("--rounds", type=_positive, default=None,
                        help="rounds of raw and opd in the cold start, backlog (each size), live and paired "
                             "scenarios (default 5, --quick: 2)")
    parser.add_argument("--kopf-rounds", type=int, default=1,
                        help="the first rounds Kopf joins, in backlog and live (default 1: it is slow)")
    parser.add_argument("--events-rounds", type=int, default=1,
                        help="the first backlog rounds opd+events joins, at the first size only (default 1)")
    parser.add_argument("--sizes", type=_ints, default=None,
                        help="backlog sizes N (default 5000,20000: the goals'; --quick: 1000)")
    parser.add_argument("--rate", type=float, default=200.0, help="live: objects created per second (default 200)")
    parser.add_argument("--paired-rate", type=float, default=paired.RATE,
                        help="paired: objects created per second, raw and opd both on them (default 100)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="live and paired: load duration (default 20, --quick: 10)")
    parser.add_argument("--streams", type=int, default=50,
                        help="idle cost: quiet watch streams (empty namespaces opd watches; default 50)")
    parser.add_argument("--watch-timeout", type=_positive, default=None,
                        help="idle cost: opd's watch server_timeout in seconds (default 300, opd's own; --quick: 30)")
    parser.add_argument("--idle-minutes", type=float, default=None,
                        help="idle cost: minutes of watching them, at least two watch timeouts (a WATCH is "
                             "counted as it ends; default two of them: 10, --quick: 1)")
    parser.add_argument("--idle-objects", type=_two_sizes, default=None, metavar="N1,N2",
                        help="idle memory: the two numbers of watched objects whose RSS difference is measured "
                             "(default 5000,20000, --quick: 1000,2000; a backlog size lets opd and Kopf reuse the "
                             "namespace they handled there; below ~5000 what listing leaves behind still grows)")
    parser.add_argument("--idle-kopf", action="store_true",
                        help="idle memory: Kopf's too (no goal needs it: ~2 min more)")
    parser.add_argument("--plugins", type=int, default=20,
                        help="idle memory and many plugins: plugins under opd start (default 20)")
    parser.add_argument("--plugin-objects", type=int, default=None,
                        help="many plugins: objects each plugin handles (default 2000, --quick: 500)")
    parser.add_argument("--plugin-rounds", type=_positive, default=1,
                        help="many plugins: rounds of 1 vs K plugins (default 1)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record a py-spy flame graph (CPU, --gil) of every opd contender into DIR")
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON to this file")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS] + [c for c in args.contenders if c not in ALL]
    if unknown:
        parser.error(f"unknown scenario or contender: {', '.join(unknown)}")
    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 5)
    args.sizes = args.sizes or ([1000] if quick else [5000, 20000])
    args.seconds = args.seconds or (10.0 if quick else 20.0)
    args.watch_timeout = args.watch_timeout or (30 if quick else 300)
    args.idle_minutes = args.idle_minutes or 2 * args.watch_timeout / 60
    if args.idle_minutes * 60 < 2 * args.watch_timeout:
        parser.error(f"--idle-minutes {args.idle_minutes:g}: at least two watch timeouts "
                     f"({2 * args.watch_timeout / 60:g} min with --watch-timeout {args.watch_timeout})")
    args.idle_objects = args.idle_objects or ((1000, 2000) if quick else (5000, 20000))
    args.plugin_objects = args.plugin_objects or (500 if quick else 2000)
    return args


def choose(names: list[str], wanted: set[str]) -> list[Contender]:
    """The chosen contenders among ``wanted``, in a fixed order; Kopf only when installed."""
    chosen = [ALL[name] for name in ALL if name in names and name in wanted]
    for contender in chosen:
        if not contender.available():
            print(f"note: {contender.name} is not installed here: not compared (tox -e bench installs it)")
    return [c for c in chosen if c.available()]


async def run_scenarios(args: argparse.Namespace, stage: Stage,
                        loads: dict[str, dict[str, float]]) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for scenario in [s for s in SCENARIOS if s in args.scenarios]:
        print(f"== {scenario}", flush=True)
        started = time.monotonic()
        async with LoadWatch() as load:
            if scenario == "coldstart":
                results[scenario] = await coldstart.run_coldstart(stage, args.rounds)
            elif scenario == "backlog":
                results[scenario] = await backlog.run_backlog(stage, choose(args.contenders, set(ALL)), args.sizes)
            elif scenario == "live":
                results[scenario] = await live.run_live(stage, choose(args.contenders, {"raw", "kopf", "opd"}),
                                                        args.rate, args.seconds)
            elif scenario == "paired":
                results[scenario] = await paired.run_paired(stage, args.paired_rate, args.seconds)
            elif scenario == "streams":
                results[scenario] = await streams.run_streams(stage, args.streams, args.idle_minutes,
                                                                 args.watch_timeout)
            elif scenario == "idle":
                results[scenario] = await idle.run_idle(
                    stage, choose(args.contenders, {"kopf", "opd"} if args.idle_kopf else {"opd"}),
                    args.idle_objects, args.plugins)
            else:
                results[scenario] = await many_plugins.run_plugins(stage, args.plugin_objects, args.plugins)
        loads[scenario] = load.summary()
        print(f"  ({scenario}: {time.monotonic() - started:.0f} s)", flush=True)
    return results


async def bench(args: argparse.Namespace, cp: LocalControlPlane, workdir: Path,
                loads: dict[str, dict[str, float]]) -> dict[str, list[dict[str, Any]]]:
    kubeconfig = cp.write_kubeconfig(workdir / "kubeconfig")
    async with Api(kubeconfig) as api:
        await ensure_crd(api)
        pids = {name: pid for name, pid in cp.pids.items() if name in ("kube-apiserver", "etcd")}
        rounds = Rounds(rounds=args.rounds, kopf=args.kopf_rounds, events=args.events_rounds,
                        plugins=args.plugin_rounds)
        stage = Stage(api=api, kubeconfig=kubeconfig, workdir=workdir, server_pids=pids, rounds=rounds,
                      profile_dir=args.profile)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        try:
            results = await run_scenarios(args, stage, loads)
        finally:
            children.stop_all()
        if stage.failures:
            results["failures"] = [{"error": f} for f in stage.failures]
        return results


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "args": {k: str(v) for k, v in vars(args).items()}}
    loads: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    # No controller-manager: its garbage collector would watch (and spend CPU on) every object we create.
    cp = LocalControlPlane(controller_manager=False)
    with tempfile.TemporaryDirectory(prefix="opd-bench-") as tmp:
        try:
            print(f"starting the local control plane (load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs)...", flush=True)
            cp.start()
            results = asyncio.run(bench(args, cp, Path(tmp), loads))
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process started", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            cp.stop()
    meta |= {"loadavg_end": os.getloadavg(), "loads": loads, "seconds": time.monotonic() - started}
    print(f"\nload average (1, 5, 15 min) at the start {meta['loadavg_start']}, at the end {meta['loadavg_end']}: "
          "other work on this machine shifts every number; compare contenders within one run\n")
    print(report.render(results, loads))
    print(report.summary(results))
    print(f"\nthe whole run took {meta['seconds'] / 60:.1f} min")
    if args.json is not None:
        report.write_json(args.json, meta, results)
        print(f"results written to {args.json}")
    return 1 if results.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
