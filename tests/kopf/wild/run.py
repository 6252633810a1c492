"""Kopf operators from the wild, run unmodified under Kopf and under opd, judged by their effects.

    python tests/kopf/wild/run.py [--frameworks kopf,opd] [--operators synator,...] [--keep DIR]

For each framework, one local control plane (etcd + kube-apiserver, no controller-manager: nothing
here needs one); each operator is started as ``python -m kopf run --standalone ...`` (for opd, with
tests/kopf/wild/shim first on PYTHONPATH, so that ``import kopf`` is opd), its scenario plays, and
it is stopped by its PID. Prints a table (operator, licence, Kopf, opd, why it failed) and the count
for the README. An operator whose dependencies are not installed is "not judged" and not counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opd.localcluster import LocalControlPlane

from wild_harness import FRAMEWORKS, Result, count_line, judge, run_script, table, verdict, why_not
from wild_kube import Kube
from wild_operators import all_operators

NAMESPACE = "wild"  # served by the namespaced operators


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [op.name for op in all_operators(NAMESPACE)]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frameworks", type=_csv, default=list(FRAMEWORKS), help="comma-separated: kopf, opd")
    parser.add_argument("--operators", type=_csv, default=names, help="comma-separated, of: " + ", ".join(names))
    parser.add_argument("--timeout", type=float, default=45.0, help="seconds each expected effect may take")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep the operators' logs in DIR")
    args = parser.parse_args(argv)
    for value, allowed, what in ((args.frameworks, FRAMEWORKS, "framework"), (args.operators, names, "operator")):
        unknown = [v for v in value if v not in allowed]
        if unknown:
            parser.error(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return args


def run_framework(framework: str, names: list[str], workdir: Path, timeout: float) -> list[Result]:
    operators = [op for op in all_operators(NAMESPACE) if op.name in names]
    if framework == "kopf" and importlib.util.find_spec("kopf") is None:
        return [Result(op.name, framework, None, "kopf is not installed here") for op in operators]
    cp = LocalControlPlane(controller_manager=False)
    results = []
    try:
        cp.start()
        kube = Kube(cp.server, cp.token, cp.ca_file)
        kube.namespace(NAMESPACE)
        for op in operators:
            print(f"== {op.name} under {framework}", flush=True)
            result = judge(op, framework, kube, cp.kubeconfig, workdir, timeout)
            print(f"   {verdict(result.ok)} in {result.seconds:.0f} s {result.why}", flush=True)
            results.append(result)
    finally:
        cp.stop()
    return results


def render(results: list[Result], frameworks: list[str]) -> str:
    by = {(r.operator, r.framework): r for r in results}
    licences = {op.name: op.licence for op in all_operators(NAMESPACE)}
    rows = [["operator", "licence", *frameworks, "why it failed"]]
    for name in dict.fromkeys(r.operator for r in results):
        cells = [by.get((name, fw)) for fw in frameworks]
        rows.append([name, licences[name], *[verdict(c.ok) if c else "-" for c in cells], why_not(cells)])
    return table(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(workdir: Path) -> list[Result]:
        results: list[Result] = []
        for framework in args.frameworks:
            results += run_framework(framework, args.operators, workdir, args.timeout)
        return results

    return run_script(args.keep, "opd-wild-", work, lambda rs: render(rs, args.frameworks),
                      lambda rs: count_line("wild operators", rs, args.frameworks))


if __name__ == "__main__":
    sys.exit(main())
