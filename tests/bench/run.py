"""opd's benchmark suite: opd against Kopf and against a raw client, on a real local control plane.

    python tests/bench/run.py [--quick] [--scenarios backlog,live,idle,plugins] [--sizes 1000,5000,20000]
                              [--contenders raw,kopf,opd] [--repeat R] [--profile DIR] [--json OUT]

Every contender is a child process, measured from /proc and stopped by its PID; so are the
control plane's processes, also on Ctrl-C. Kopf is compared when it is installed (``tox -e bench``).
The machine may be shared: compare contenders within one run, and use --repeat for medians.
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
import idle
import live
import many_plugins
import report
from contenders import ALL, Contender
from kubeapi import Api, ensure_crd
from stage import Stage

from opd.localcluster import LocalControlPlane

SCENARIOS = ("backlog", "live", "idle", "plugins")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="N up to 5000, 10 s of live load, idle memory at 5000 objects")
    parser.add_argument("--scenarios", type=_csv, default=list(SCENARIOS), help="comma-separated, of: "
                        + ", ".join(SCENARIOS))
    parser.add_argument("--sizes", type=lambda t: [int(n) for n in _csv(t)], default=None,
                        help="backlog sizes N (default 1000,5000,20000; --quick: 1000,5000)")
    parser.add_argument("--contenders", type=_csv, default=list(ALL), help="comma-separated, of: raw, kopf, opd")
    parser.add_argument("--rate", type=float, default=200.0, help="live: objects created per second")
    parser.add_argument("--seconds", type=float, default=None, help="live: load duration (default 30, --quick: 10)")
    parser.add_argument("--idle-objects", type=int, default=None, help="idle: objects (default 20000, --quick: 5000)")
    parser.add_argument("--plugins", type=int, default=20, help="plugins: how many, against one (default 20)")
    parser.add_argument("--plugin-objects", type=int, default=None,
                        help="plugins: objects each plugin handles (default 2000, --quick: 500)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of each backlog size and live load (tables show medians); a shared machine "
                             "is noisy")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record a py-spy flame graph (CPU, --gil) of every opd contender into DIR")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS] + [c for c in args.contenders if c not in ALL]
    if unknown:
        parser.error(f"unknown scenario or contender: {', '.join(unknown)}")
    args.sizes = args.sizes or ([1000, 5000] if args.quick else [1000, 5000, 20000])
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    args.idle_objects = args.idle_objects or (5000 if args.quick else 20000)
    args.plugin_objects = args.plugin_objects or (500 if args.quick else 2000)
    return args


def choose(names: list[str], wanted: set[str]) -> list[Contender]:
    """The chosen contenders among ``wanted``, in a fixed order; Kopf only when installed."""
    chosen = [ALL[name] for name in ALL if name in names and name in wanted]
    for contender in chosen:
        if not contender.available():
            print(f"note: {contender.name} is not installed here: not compared (tox -e bench installs it)")
    return [c for c in chosen if c.available()]


async def run_scenarios(args: argparse.Namespace, stage: Stage) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    everyone = {"raw", "kopf", "opd"}
    operators = {"kopf", "opd"}  # idle memory: the raw client is no operator to compare with
    for scenario in [s for s in SCENARIOS if s in args.scenarios]:
        print(f"== {scenario}", flush=True)
        if scenario == "backlog":
            results[scenario] = await backlog.run_backlog(stage, choose(args.contenders, everyone), args.sizes)
        elif scenario == "live":
            results[scenario] = await live.run_live(stage, choose(args.contenders, everyone), args.rate,
                                                    args.seconds)
        elif scenario == "idle":
            results[scenario] = await idle.run_idle(stage, choose(args.contenders, operators), args.idle_objects)
        else:
            results[scenario] = await many_plugins.run_plugins(stage, args.plugin_objects, args.plugins)
    return results


async def bench(args: argparse.Namespace, cp: LocalControlPlane, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    kubeconfig = cp.write_kubeconfig(workdir / "kubeconfig")
    async with Api(kubeconfig) as api:
        await ensure_crd(api)
        pids = {name: pid for name, pid in cp.pids.items() if name in ("kube-apiserver", "etcd")}
        stage = Stage(api=api, kubeconfig=kubeconfig, workdir=workdir, server_pids=pids, repeat=args.repeat,
                      profile_dir=args.profile)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        try:
            results = await run_scenarios(args, stage)
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
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "args": {k: str(v) for k, v in vars(args).items()}}
    # No controller-manager: its garbage collector would watch (and spend CPU on) every object we create.
    cp = LocalControlPlane(controller_manager=False)
    with tempfile.TemporaryDirectory(prefix="opd-bench-") as tmp:
        try:
            print("starting the local control plane...", flush=True)
            cp.start()
            results = asyncio.run(bench(args, cp, Path(tmp)))
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process started", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            cp.stop()
    meta["loadavg_end"] = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) at the start {meta['loadavg_start']}, at the end {meta['loadavg_end']}: "
          "other work on this machine shifts every number; compare contenders within one run\n")
    print(report.render(results))
    if args.json is not None:
        report.write_json(args.json, meta, results)
        print(f"results written to {args.json}")
    return 1 if results.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
