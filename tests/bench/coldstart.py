"""Cold start: what opd costs before its first request (issue #22, goal: <= 0.5 CPU s to the first LIST).

Prints, as medians of ``--rounds`` fresh processes each:
- ``import opd``: the total of ``python -X importtime -c 'import opd'`` and the process's CPU
  seconds when the import is done (the interpreter's own start included);
- ``opd run HANDLERS -n default`` with one handler (``on.create("configmaps")``) against the local
  control plane: the process's CPU seconds (user + system, every thread, from its start) at the
  moment it sends its first LIST, and whether kubernetes_asyncio's models were imported by then;
- for reference, the raw aiohttp client of the bench (``kubeapi.Api``): its CPU seconds when it
  sends the same LIST.

Bytecode is cached as an installed package has it (``PYTHONDONTWRITEBYTECODE`` is dropped for the
children, and one uncounted process of each kind runs first). ``opd run`` is measured twice when the
official ``kubernetes`` package is installed: without it (``pip install opd`` does not bring it) and
with it (Kopf's default login configures it). The first LIST is caught by wrapping
``KubeClient._send`` in the child (the wrapper prints, then ends the process at once).

``--before DIR`` measures opd from another source tree too (e.g. ``git archive COMMIT opd | tar -x
-C DIR``), with this one's venv, alternating with this tree in every round: both meet the same
moments of a shared machine, and each ratio is taken within a round.

Usage: ``python tests/bench/coldstart.py [--rounds 5] [--before DIR] [--kubeconfig FILE]``; without
``--kubeconfig`` it starts (and stops) a local control plane of its own.

The bench's ``coldstart`` scenario (``run.py --scenarios coldstart``, :func:`run_coldstart`) runs the goal's
part of it on the bench's control plane: ``opd run`` without the ``kubernetes`` package and the raw client,
one fresh process of each per round, each round after the API server has come to rest.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from children import Child
from stage import Stage

HERE = Path(__file__).resolve().parent
HANDLERS = '''
import opd

@opd.on.create("configmaps")
def create_fn(**_):
    return {"message": "created"}
'''
# Runs `opd run` in this process, with KubeClient._send wrapped: the first GET of the configmaps
# list prints the CPU seconds spent so far and ends the process.
OPD_CHILD = '''
import os, sys, time, runpy
if os.environ.get("COLDSTART_WITHOUT_KUBERNETES"):
    sys.modules["kubernetes"] = None  # as where it is not installed (it is no dependency of opd)
import opd.kube.api as api  # imports opd, as `opd run` does first
imported = time.process_time()
first = []
original = api.KubeClient._send
async def _send(self, method, path, *args, **kwargs):
    first.append(first[0] if first else time.process_time())
    if method == "GET" and path.endswith("/configmaps"):
        models = "kubernetes_asyncio.client.models" in sys.modules
        print(f"FIRST-LIST cpu={time.process_time():.4f} models={int(models)} imported={imported:.4f} "
              f"first-request={first[0]:.4f}", flush=True)
        os._exit(0)
    return await original(self, method, path, *args, **kwargs)
api.KubeClient._send = _send
sys.argv = ["opd", "run", sys.argv[1], "-n", "default"]
runpy.run_module("opd", run_name="__main__")
'''
RAW_CHILD = '''
import asyncio, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from kubeapi import Api

async def main():
    async with Api(Path(sys.argv[1])) as api:
        print(f"FIRST-LIST cpu={time.process_time():.4f} models=0", flush=True)
        await api.request("GET", "/api/v1/namespaces/default/configmaps")

asyncio.run(main())
'''
IMPORT_CHILD = "import time; import opd; print(f'IMPORTED cpu={time.process_time():.4f}')"


def _env(tree: Path | None, kubeconfig: Path | None = None, *, kubernetes: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not kubernetes:
        env["COLDSTART_WITHOUT_KUBERNETES"] = "1"
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(tree)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def _run(argv: list[str], env: dict[str, str], pattern: str) -> tuple[re.Match[str], str]:
    # Not from this checkout's directory: ``python -c`` puts the working directory first on sys.path.
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False,
                          cwd=tempfile.gettempdir())
    found = re.search(pattern, done.stdout + done.stderr)
    if found is None:
        raise SystemExit(f"{argv[:3]}: no {pattern!r} in its output (exit {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return found, done.stderr


Figures = dict[str, list[float]]


def one_round(tree: Path | None, kubeconfig: Path, handlers: Path, kubernetes: bool, into: Figures) -> None:
    """One fresh process of each kind for ``tree``; its figures appended to ``into``."""
    found, _ = _run([sys.executable, "-X", "importtime", "-c", "import opd"], _env(tree),
                    r"import time:\s+\d+ \|\s+(\d+) \| opd\n")
    into.setdefault("importtime", []).append(int(found.group(1)) / 1e6)
    found, _ = _run([sys.executable, "-c", IMPORT_CHILD], _env(tree), r"IMPORTED cpu=([\d.]+)")
    into.setdefault("import_cpu", []).append(float(found.group(1)))
    argv = [sys.executable, "-c", OPD_CHILD, str(handlers)]
    for key, env in (("run", _env(tree, kubeconfig, kubernetes=False)),
                     *((("run_kubernetes", _env(tree, kubeconfig)),) if kubernetes else ())):
        found, _ = _run(argv, env, r"FIRST-LIST cpu=([\d.]+) models=(\d) imported=([\d.]+) first-request=([\d.]+)")
        cpu, imported, first = float(found.group(1)), float(found.group(3)), float(found.group(4))
        into.setdefault(key, []).append(cpu)
        into.setdefault(f"{key}_models", []).append(float(found.group(2)))
        # Where it went: importing opd; then to the first request (CLI, settings, credentials);
        # then to the first LIST (API discovery: one request per group version, TLS handshakes).
        into.setdefault(f"{key}_import", []).append(imported)
        into.setdefault(f"{key}_connect", []).append(first - imported)
        into.setdefault(f"{key}_discovery", []).append(cpu - first)


def measure(kubeconfig: Path, before: Path | None, rounds: int, workdir: Path) -> None:
    handlers = workdir / "handlers.py"
    handlers.write_text(HANDLERS)
    kubernetes = importlib.util.find_spec("kubernetes") is not None
    trees: dict[str, Path | None] = {"this tree": None, **({"before": before} if before is not None else {})}
    figures: dict[str, Figures] = {name: {} for name in trees}
    raw: list[float] = []
    raw_argv = [sys.executable, "-c", RAW_CHILD, str(kubeconfig), str(HERE)]
    for tree in trees.values():  # uncounted: bytecode written, the server's caches warm
        one_round(tree, kubeconfig, handlers, kubernetes, {})
    _run(raw_argv, _env(None), r"FIRST-LIST")
    load = os.getloadavg()[0]
    for _ in range(rounds):
        for name, tree in trees.items():
            one_round(tree, kubeconfig, handlers, kubernetes, figures[name])
        raw.append(float(_run(raw_argv, _env(None), r"FIRST-LIST cpu=([\d.]+)")[0].group(1)))
    load = max(load, os.getloadavg()[0])
    med = {name: {key: statistics.median(values) for key, values in f.items()} for name, f in figures.items()}
    print(f"medians of {rounds} rounds (one fresh process of each kind per round); load average up to {load:.1f}")
    for name, m in med.items():
        print(f"{name}: import opd {m['importtime']:.2f} s (-X importtime, wall clock), {m['import_cpu']:.2f} CPU s "
              f"at its end (interpreter start included); opd run, one handler: {m['run']:.2f} CPU s to its first "
              f"LIST (goal <= 0.5: {'met' if m['run'] <= 0.5 else 'missed'}), kubernetes_asyncio's models "
              f"{'imported' if max(figures[name]['run_models']) else 'not imported'} by then"
              + (f"; with the kubernetes package installed {m['run_kubernetes']:.2f} CPU s" if kubernetes else ""))
        print(f"  where opd run's went: {m['run_import']:.2f} s until opd is imported, {m['run_connect']:.2f} s more "
              f"until its first request, {m['run_discovery']:.2f} s more until its first LIST (API discovery)")
    print(f"raw aiohttp client (tests/bench/kubeapi.py): {statistics.median(raw):.2f} CPU s to its first LIST")
    now = med["this tree"]
    with_kubernetes = (f" ({now['run_kubernetes']:.2f} s with the official `kubernetes` package installed, which "
                       "Kopf's default login configures)") if kubernetes else ""
    was = ""
    if "before" in med:
        then = med["before"]
        pairs = zip(figures["this tree"]["run"], figures["before"]["run"], strict=True)
        ratio = statistics.median(new / old for new, old in pairs)
        was = (f" Before (`--before`, the same rounds): `import opd` {then['importtime']:.2f} s and "
               f"{then['import_cpu']:.2f} CPU s, `opd run` {then['run']:.2f} CPU s"
               + (f" ({then['run_kubernetes']:.2f} s with `kubernetes`)" if kubernetes else "")
               + f"; after/before within a round {ratio:.2f}.")
    print(textwrap.fill(
        f"Cold start (`tests/bench/coldstart.py`, medians of {rounds} rounds of fresh processes, load average up "
        f"to {load:.1f}): `import opd` takes {now['importtime']:.2f} s (`python -X importtime`, wall clock) "
        f"and {now['import_cpu']:.2f} CPU s with the interpreter's start; `opd run` with one handler has spent "
        f"{now['run']:.2f} CPU s when it sends its first LIST{with_kubernetes} (goal ≤ 0.5), the raw aiohttp "
        f"client {statistics.median(raw):.2f} s. Of opd's: {now['run_import']:.2f} s until opd is imported, "
        f"{now['run_connect']:.2f} s to its first request, {now['run_discovery']:.2f} s of API discovery (a request "
        f"per group version) before the LIST.{was}", width=100))


# -- the bench's scenario ----------------------------------------------------------------------------------------------
OPD_RUN, RAW = "opd run", "raw"
FIRST_LIST = re.compile(r"FIRST-LIST cpu=([\d.]+) models=(\d)(?: imported=([\d.]+) first-request=([\d.]+))?")
TIMEOUT = 120.0  # seconds for one process to reach its first LIST


def first_list(output: str) -> dict[str, Any] | None:
    """A child's figures from its FIRST-LIST line: CPU seconds then; for opd, where they went."""
    found = FIRST_LIST.search(output)
    if found is None:
        return None
    cpu = float(found[1])
    figures: dict[str, Any] = {"cpu_s": cpu, "models": bool(int(found[2]))}
    if found[3] is not None:
        imported, first = float(found[3]), float(found[4])
        figures |= {"import_s": imported, "connect_s": first - imported, "discovery_s": cpu - first}
    return figures


async def one_process(stage: Stage, name: str, argv: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """A fresh process that ends itself at its first LIST; its figures, or the failure."""
    # Not from this checkout's directory: ``python -c`` puts the working directory first on sys.path.
    child = Child(name, argv, env=env, log=stage.log_path(f"coldstart-{name.replace(' ', '-')}.log"),
                  cwd=Path(tempfile.gettempdir())).start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while child.alive():
            if time.monotonic() > deadline:
                return stage.fail(what, f"no first LIST within {TIMEOUT:.0f}s", child)
            await asyncio.sleep(0.05)
        found = first_list(child.log.read_text(errors="replace"))
        return found if found is not None else stage.fail(what, f"no first LIST ({child.describe_exit()})", child)
    finally:
        child.stop()


async def run_coldstart(stage: Stage, rounds: int) -> list[dict[str, Any]]:
    """``opd run`` with one handler (as ``pip install opd`` has it: no ``kubernetes`` package) and the raw
    client: the CPU each has spent when it sends its first LIST, ``rounds`` fresh processes each."""
    handlers = stage.workdir / "coldstart_handlers.py"
    handlers.write_text(HANDLERS)
    kinds = {OPD_RUN: ([sys.executable, "-c", OPD_CHILD, str(handlers)],
                       _env(None, stage.kubeconfig, kubernetes=False)),
             RAW: ([sys.executable, "-c", RAW_CHILD, str(stage.kubeconfig), str(HERE)], _env(None))}
    for name, (argv, env) in kinds.items():  # uncounted: bytecode written, the server's caches warm
        if "error" in await one_process(stage, name, argv, env, f"coldstart {name}, the uncounted first"):
            return [{"scenario": "coldstart", "contender": name, "round": 0, "error": stage.failures[-1]}]
    results: list[dict[str, Any]] = []
    for round_ in range(1, rounds + 1):
        for name in (list(kinds) if round_ % 2 else list(reversed(kinds))):
            await stage.quiesce()
            what = f"  coldstart round {round_} {name}"
            result = {"scenario": "coldstart", "contender": name, "round": round_,
                      **await one_process(stage, name, *kinds[name], what.strip())}
            if "error" not in result:
                where = (f" (import {result['import_s']:.2f}s, to its first request {result['connect_s']:.2f}s, "
                         f"discovery {result['discovery_s']:.2f}s; kubernetes_asyncio's models "
                         f"{'imported' if result['models'] else 'not imported'})" if "import_s" in result else "")
                print(f"{what}: {result['cpu_s']:.2f} CPU s to its first LIST{where}", flush=True)
            results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another opd source tree, measured alternately with this one")
    parser.add_argument("--kubeconfig", type=Path, help="an API server's kubeconfig (default: start one)")
    args = parser.parse_args()
    tree = args.before.resolve() if args.before else None
    if tree is not None and not (tree / "opd" / "__init__.py").is_file():
        parser.error(f"--before {tree}: no opd/__init__.py there")
    with tempfile.TemporaryDirectory(prefix="opd-coldstart-") as tmp:
        if args.kubeconfig is not None:
            measure(args.kubeconfig, tree, args.rounds, Path(tmp))
            return 0
        from opd.localcluster import LocalControlPlane

        cp = LocalControlPlane(controller_manager=False)
        try:
            cp.start()
            measure(cp.write_kubeconfig(Path(tmp) / "kubeconfig"), tree, args.rounds, Path(tmp))
        finally:
            cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
