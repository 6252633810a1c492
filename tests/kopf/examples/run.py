"""Kopf's 18 examples, run unmodified under Kopf and under opd, judged by their effects.

    python tests/kopf/examples/run.py [--frameworks kopf,opd] [--examples 01-minimal,...] [--keep DIR]

The examples come from Kopf's source distribution on PyPI (examples_source.py: pip download, pinned by
version and SHA-256; nothing of Kopf's is kept here). For each framework, one local control plane
(no controller-manager); Kopf's ``examples/crd.yaml`` is applied as it is; each example is started as
``python -m kopf run --standalone --verbose example.py -n NS`` from its folder (12-embedded as
``python example.py``), under opd with tests/kopf/wild/shim first on PYTHONPATH (``import kopf`` is
opd); its scenario plays, and it is stopped by its PID. Prints a table and the count for the README.
An example whose imports are not installed is "not judged" and not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
WILD = HERE.parent / "wild"
sys.path[:0] = [str(HERE), str(WILD)]

import yaml  # noqa: E402
from examples_judged import EXAMPLES, Example, Play, free_port  # noqa: E402
from examples_source import SourceError, fetch, unpack  # noqa: E402
from wild_harness import SHIM, Result, count_line, reason, run_script, table, verdict, why_not  # noqa: E402
from wild_kube import Kube, Missed  # noqa: E402

from opd.localcluster import LocalControlPlane  # noqa: E402

FRAMEWORKS = ("kopf", "opd")


class ExampleProcess:
    """One example as a child in its own session, its output in a file, stopped by its PID."""

    def __init__(self, example: Example, folder: Path, framework: str, kubeconfig: Path, namespace: str,
                 log: Path, liveness: str) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never in-cluster
        if framework == "opd":
            env["PYTHONPATH"] = os.pathsep.join([str(SHIM), *[p for p in [env.get("PYTHONPATH")] if p]])
        if example.script:
            argv = [sys.executable, "example.py"]
        else:
            argv = [sys.executable, "-m", "kopf", "run", "--standalone", "--verbose", "example.py", "-n", namespace]
            argv += ["-n", "default"] if example.also_default else []
            argv += ["--liveness", liveness] if liveness else []
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=str(folder), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def gone(self) -> str | None:
        code = self.proc.poll()
        return None if code is None else f"the example exited with {code}: {reason(self.output())}"

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def judge(example: Example, examples: Path, framework: str, kube: Kube, kubeconfig: Path, workdir: Path,
          timeout: float) -> Result:
    missing = [m for m in example.needs if importlib.util.find_spec(m) is None]
    if missing:
        return Result(example.name, framework, None, f"not installed here: {', '.join(missing)}")
    uid = uuid.uuid4().hex[:6]
    namespace = f"ex{example.name[:2]}-{uid}"
    kube.namespace(namespace)
    liveness = f"http://127.0.0.1:{free_port()}/healthz" if example.liveness else ""
    started = time.monotonic()
    process = ExampleProcess(example, examples / example.name, framework, kubeconfig, namespace,
                             workdir / f"{example.name}.{framework}.log", liveness)
    play = Play(kube, namespace, uid, timeout, process.output, process.gone, process.signal, liveness)
    try:
        example.scenario(play)
        return Result(example.name, framework, True, "", time.monotonic() - started)
    except Missed as exc:
        detail = str(exc)
        if "exited with" not in detail:
            detail += f"; its log: {reason(process.output())}"
        return Result(example.name, framework, False, detail, time.monotonic() - started)
    except Exception as exc:  # the scenario's own request failed: said as such
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Result(example.name, framework, False, f"scenario error at line {where.lineno}: {exc}",
                      time.monotonic() - started)
    finally:
        process.stop()


def run_framework(framework: str, names: list[str], examples: Path, workdir: Path, timeout: float) -> list[Result]:
    chosen = [e for e in EXAMPLES if e.name in names]
    if framework == "kopf" and importlib.util.find_spec("kopf") is None:
        return [Result(e.name, framework, None, "kopf is not installed here") for e in chosen]
    cp = LocalControlPlane(controller_manager=False)
    results = []
    try:
        cp.start()
        kube = Kube(cp.server, cp.token, cp.ca_file)
        kube.crd(yaml.safe_load((examples / "crd.yaml").read_text()))
        for example in chosen:
            print(f"== {example.name} under {framework}", flush=True)
            result = judge(example, examples, framework, kube, cp.kubeconfig, workdir, timeout)
            print(f"   {verdict(result.ok)} in {result.seconds:.0f} s {result.why}", flush=True)
            results.append(result)
    finally:
        cp.stop()
    return results


def render(results: list[Result], frameworks: list[str]) -> str:
    by = {(r.operator, r.framework): r for r in results}
    rows = [["example", *frameworks, "why not"]]
    for name in dict.fromkeys(r.operator for r in results):
        cells = [by.get((name, fw)) for fw in frameworks]
        rows.append([name, *[verdict(c.ok) if c else "-" for c in cells], why_not(cells)])
    return table(rows)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [e.name for e in EXAMPLES]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frameworks", type=_csv, default=list(FRAMEWORKS), help="comma-separated: kopf, opd")
    parser.add_argument("--examples", type=_csv, default=names, help="comma-separated, of: " + ", ".join(names))
    parser.add_argument("--timeout", type=float, default=45.0, help="seconds each expected effect may take")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep the examples' logs in DIR")
    args = parser.parse_args(argv)
    for value, allowed, what in ((args.frameworks, FRAMEWORKS, "framework"), (args.examples, names, "example")):
        unknown = [v for v in value if v not in allowed]
        if unknown:
            parser.error(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work(workdir: Path) -> list[Result]:
        examples = unpack(fetch(), workdir / "kopf")
        results: list[Result] = []
        for framework in args.frameworks:
            results += run_framework(framework, args.examples, examples, workdir, args.timeout)
        return results

    return run_script(args.keep, "opd-examples-", work, lambda rs: render(rs, args.frameworks),
                      lambda rs: count_line("Kopf's examples", rs, args.frameworks, unjudged=True),
                      failures=(SourceError,), what="Kopf's examples")


if __name__ == "__main__":
    sys.exit(main())
