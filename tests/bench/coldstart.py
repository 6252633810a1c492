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
with it (Kopf's default login configures it, so ``opd run`` imports it before connecting).

``--tree DIR`` measures opd from another source tree (e.g. ``git archive COMMIT opd | tar -x -C
DIR``) with this one's venv: a before/after from one script. The first LIST is caught by wrapping
``KubeClient._send`` in the child (the wrapper prints, then ends the process at once).

Usage: ``python tests/bench/coldstart.py [--rounds 5] [--tree DIR] [--kubeconfig FILE]``; without
``--kubeconfig`` it starts (and stops) a local control plane of its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

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
import opd.kube.api as api
original = api.KubeClient._send
async def _send(self, method, path, *args, **kwargs):
    if method == "GET" and path.endswith("/configmaps"):
        models = "kubernetes_asyncio.client.models" in sys.modules
        print(f"FIRST-LIST cpu={time.process_time():.4f} models={int(models)}", flush=True)
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


def import_figures(tree: Path | None, rounds: int) -> tuple[float, float]:
    """Medians: the importtime total of ``import opd`` (s) and the CPU seconds at its end."""
    totals, cpus = [], []
    _run([sys.executable, "-c", IMPORT_CHILD], _env(tree), r"IMPORTED")  # writes the bytecode if missing
    for _ in range(rounds):
        found, _ = _run([sys.executable, "-X", "importtime", "-c", "import opd"], _env(tree),
                        r"import time:\s+\d+ \|\s+(\d+) \| opd\n")
        totals.append(int(found.group(1)) / 1e6)
        cpus.append(float(_run([sys.executable, "-c", IMPORT_CHILD], _env(tree), r"IMPORTED cpu=([\d.]+)")[0].group(1)))
    return statistics.median(totals), statistics.median(cpus)


def first_list(argv: list[str], env: dict[str, str], rounds: int) -> tuple[float, bool]:
    """Median CPU seconds at the first LIST, and whether any round had imported the models by then."""
    cpus, models = [], False
    _run(argv, env, r"FIRST-LIST")  # uncounted: bytecode, the server's own caches
    for _ in range(rounds):
        found, _ = _run(argv, env, r"FIRST-LIST cpu=([\d.]+) models=(\d)")
        cpus.append(float(found.group(1)))
        models = models or found.group(2) == "1"
    return statistics.median(cpus), models


def measure(kubeconfig: Path, tree: Path | None, rounds: int, workdir: Path) -> None:
    handlers = workdir / "handlers.py"
    handlers.write_text(HANDLERS)
    total, import_cpu = import_figures(tree, rounds)
    argv = [sys.executable, "-c", OPD_CHILD, str(handlers)]
    bare, models = first_list(argv, _env(tree, kubeconfig, kubernetes=False), rounds)
    installed = importlib.util.find_spec("kubernetes") is not None
    kopfish, _ = first_list(argv, _env(tree, kubeconfig), rounds) if installed else (None, False)
    raw_cpu, _ = first_list([sys.executable, "-c", RAW_CHILD, str(kubeconfig), str(HERE)], _env(None), rounds)
    source = f"the tree {tree}" if tree is not None else "this tree"
    print(f"opd from {source}; medians of {rounds} fresh processes; load average {os.getloadavg()[0]:.1f}")
    print(f"import opd: {total:.2f} s (-X importtime total), {import_cpu:.2f} CPU s at its end (interpreter start "
          "included)")
    print(f"opd run, one handler: {bare:.2f} CPU s to its first LIST (goal <= 0.5: "
          f"{'met' if bare <= 0.5 else 'missed'}); kubernetes_asyncio's models "
          f"{'imported' if models else 'not imported'} by then")
    if kopfish is not None:
        print(f"opd run, one handler, the kubernetes package installed: {kopfish:.2f} CPU s to its first LIST")
    print(f"raw aiohttp client (tests/bench/kubeapi.py): {raw_cpu:.2f} CPU s to its first LIST")
    with_kubernetes = (f" ({kopfish:.2f} s where the official `kubernetes` package is installed: Kopf's default "
                       "login configures it, so opd imports it first)") if kopfish is not None else ""
    print(textwrap.fill(
        f"Cold start (`tests/bench/coldstart.py`, medians of {rounds} fresh processes): `import opd` takes "
        f"{total:.2f} s (`python -X importtime`) and {import_cpu:.2f} CPU s with the interpreter's start; `opd run` "
        f"with one handler has spent {bare:.2f} CPU s when it sends its first LIST{with_kubernetes} "
        f"(goal ≤ 0.5), the raw aiohttp client {raw_cpu:.2f} s.", width=100))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="an opd source tree to measure instead of this one")
    parser.add_argument("--kubeconfig", type=Path, help="an API server's kubeconfig (default: start one)")
    args = parser.parse_args()
    tree = args.tree.resolve() if args.tree else None
    if tree is not None and not (tree / "opd" / "__init__.py").is_file():
        parser.error(f"--tree {tree}: no opd/__init__.py there")
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
