"""opd's chaos scenarios: an operator must lose no event through the faults real clusters have.

    python tests/chaos/run.py [--quick] [--scenarios restarts,crash,...] [--keep DIR] [--kopf]

One local control plane (etcd + kube-apiserver) for all scenarios, each in its own namespace;
every operator is a child process (``opd run``). Every process started is stopped by its PID at
the end, also on Ctrl-C or SIGTERM. Prints a table with the targets; exit 1 if one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import scenarios
from scenarios import FULL, QUICK, SCENARIOS, Result, Stage

from opd.localcluster import LocalControlPlane
from opd.testing.chaos import Kube


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"the reduced sizes of the test suite ({QUICK.restart_objects} objects and "
                             f"{QUICK.restarts} restarts instead of {FULL.restart_objects} and {FULL.restarts}, ...)")
    parser.add_argument("--scenarios", type=_csv, default=list(SCENARIOS),
                        help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep every operator's log and handler log in DIR (default: a temporary folder)")
    parser.add_argument("--ha", choices=["leader", "shards"], default=None,
                        help="run every operator of the scenarios 1-9 as a replica with Leases (one replica: "
                             "leader election, or 4 shards), to see their targets hold with HA on")
    parser.add_argument("--ha-leader-timings", choices=["default", "fast"], default="default",
                        help="scenario 10's Lease timings: default (lease 15 s, renew deadline 10 s, retry 2 s: "
                             "opd's and client-go's) or fast (12 s, 8 s, 2 s); --quick has its own short ones")
    parser.add_argument("--kopf", action="store_true",
                        help="also put Kopf (its defaults) through the silent partition, for comparison: "
                             "reported, not judged (needs kopf installed, as tox -e bench has it)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario: {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})")
    if args.kopf and importlib.util.find_spec("kopf") is None:
        parser.error("--kopf: kopf is not installed in this environment (pip install kopf)")
    return args


async def run(args: argparse.Namespace, cp: LocalControlPlane, workdir: Path) -> list[Result]:
    async with await Kube.connect(cp.kubeconfig) as kube:
        stage = Stage(cp, kube, workdir, QUICK if args.quick else FULL)
        stage.ha = args.ha
        if not args.quick:
            stage.leader_timings = scenarios.FAST if args.ha_leader_timings == "fast" else scenarios.CLIENT_GO
        await stage.prepare()
        try:
            results = await scenarios.run_all(stage, [s for s in SCENARIOS if s in args.scenarios])
            if args.kopf:
                print("== partition, Kopf", flush=True)
                results.append(await scenarios.silent_partition(stage, kopf=True))
                print(results[-1].render(), flush=True)
        finally:
            stage.stop_all()
        results.append(scenarios.secrets_scan(stage))
        return results


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    # Started in the background by a non-interactive shell, SIGINT comes ignored: kill -INT must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="opd-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # No controller-manager: nothing here needs it, and the machine's CPU goes to the operator.
    cp = LocalControlPlane(controller_manager=False)
    started = time.monotonic()
    try:
        print(f"starting the local control plane ({'quick' if args.quick else 'full'} scale)...", flush=True)
        cp.start()
        results = asyncio.run(run(args, cp, workdir))
    except KeyboardInterrupt:
        print("\ninterrupted: every process started is stopped", file=sys.stderr)
        return 130
    finally:
        cp.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(scenarios.render(results))
    print(f"\n{scenarios.count(results)}; in {time.monotonic() - started:.0f} s"
          + (f"; logs kept in {args.keep}" if args.keep else ""))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
