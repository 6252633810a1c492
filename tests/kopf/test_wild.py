"""The harness of tests/kopf/wild (the operators themselves run in ``tox -e kopf``): the kopf shim,
the verdict and its one-line reason, the table and the count, and one whole judgement of a small
operator of ours under opd against the local apiserver, passing and failing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WILD = Path(__file__).resolve().parent / "wild"
sys.path.insert(0, str(WILD))

import wild_harness as harness  # noqa: E402
from wild_harness import Operator, Result, Stage, judge, reason  # noqa: E402
from wild_kube import Kube, Missed, wait  # noqa: E402
from wild_operators import all_operators  # noqa: E402

from opd.localcluster import LocalControlPlane  # noqa: E402

# run.py is a script: loaded under a name of its own (tests/ has modules named like its siblings').
_spec = importlib.util.spec_from_file_location("wild_run", WILD / "run.py")
assert _spec and _spec.loader
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def _shim_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(harness.SHIM)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_the_shim_makes_import_kopf_give_opd() -> None:
    done = _shim_python(textwrap.dedent("""
        import kopf, kopf.on, opd
        from kopf import Body, Patch, TemporaryError
        from kopf.testing import KopfRunner
        assert kopf.on is opd.on and kopf.on.create is opd.on.create
        assert kopf.TemporaryError is opd.TemporaryError and KopfRunner is opd.testing.KopfRunner
        print("shim ok")
    """))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "shim ok"


def test_python_m_kopf_run_under_the_shim_is_opd_run() -> None:
    env = {**os.environ, "PYTHONPATH": str(harness.SHIM)}
    done = subprocess.run([sys.executable, "-m", "kopf", "run", "--help"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: kopf run" in done.stdout
    assert "--ha" in done.stdout  # opd's replicas flag: Kopf has none


def test_a_name_opd_lacks_fails_as_in_python() -> None:
    done = _shim_python("import kopf; kopf.NoSuchThing")
    assert done.returncode == 1
    assert "AttributeError" in done.stderr and "NoSuchThing" in done.stderr


def test_the_reason_is_the_exception_line_not_the_last_line() -> None:
    log = textwrap.dedent("""\
        INFO starting
        Traceback (most recent call last):
          File "handlers.py", line 3, in f
        AttributeError: module 'kopf' has no attribute 'AnnotationsDiffBaseStorage'
        INFO still running
    """)
    assert reason(log) == "AttributeError: module 'kopf' has no attribute 'AnnotationsDiffBaseStorage'"
    assert reason("INFO a\nINFO b\n") == "INFO b"
    assert reason("") == "(no output)"
    long = reason("ValueError: " + "x" * 500)
    assert len(long) == 140 and long.endswith("…")


def test_wait_says_at_once_why_the_operator_is_gone() -> None:
    with pytest.raises(Missed, match="Deployment x: the operator exited with 1"):
        wait(lambda: None, 300, "Deployment x", alive=lambda: "the operator exited with 1")


def test_the_table_and_the_count_leave_out_what_was_not_judged() -> None:
    results = [Result("synator", "kopf", True), Result("synator", "opd", False, "why one"),
               Result("dask", "kopf", True), Result("dask", "opd", True),
               Result("webapp", "kopf", None, "not installed here: kubernetes"),
               Result("webapp", "opd", None, "not installed here: kubernetes")]
    table = run.render(results, ["kopf", "opd"]).splitlines()
    assert table[0].split()[:4] == ["operator", "licence", "kopf", "opd"]
    assert table[1].split()[:4] == ["synator", "MIT", "runs", "FAILS"] and table[1].endswith("opd: why one")
    assert "not judged" in table[3]
    assert run.count_line("wild operators", results, ["kopf", "opd"]) == (
        "wild operators: Kopf runs 2 of 2, opd runs 1 of 2")


def test_unknown_operator_names_are_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--operators", "synator,nope"])
    assert "unknown operator: nope" in capsys.readouterr().err


def test_every_copied_operator_keeps_its_licence_and_its_files() -> None:
    for op in all_operators("wild"):
        assert op.licence in {"MIT", "Apache-2.0", "BSD-3-Clause"}, op.name
        if op.folder is not None:
            assert (op.folder / "LICENSE").is_file(), op.name
            files = [a for a in op.args if a.endswith(".py")]
            assert all((op.folder / f).is_file() for f in files), op.name


# A small operator of ours, written for Kopf (``import kopf``), judged the way the wild ones are.
COPIER = """
import kopf

@kopf.on.create("configmaps", labels={"wild-test": "copy"})
def copy(body, name, namespace, patch, **_):
    patch.metadata.setdefault("annotations", {})["copied"] = "yes"
"""


@pytest.mark.apiserver
def test_judge_passes_a_working_operator_and_fails_a_broken_one_with_its_error(
        control_plane: LocalControlPlane, tmp_path: Path) -> None:
    (tmp_path / "copier.py").write_text(COPIER)
    (tmp_path / "broken.py").write_text("import kopf\nkopf.settings_that_do_not_exist.x = 1\n")
    kube = Kube(control_plane.server, control_plane.token, control_plane.ca_file)
    ns = f"wild-{os.getpid()}"
    kube.namespace(ns)

    def scenario(stage: Stage) -> None:
        name = f"cm-{stage.uid}"
        stage.kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": ns, "labels": {"wild-test": "copy"}}})
        stage.expect("the annotation", lambda: stage.kube.get("v1", "configmaps", ns, name)
                     ["metadata"]["annotations"]["copied"] == "yes", timeout=60)

    good = Operator("copier", "ours", "MIT", ["-n", ns, "copier.py"], scenario, folder=tmp_path)
    result = judge(good, "opd", kube, control_plane.kubeconfig, tmp_path, 60)
    assert result.ok is True, result.why

    bad = Operator("broken", "ours", "MIT", ["-n", ns, "broken.py"], scenario, folder=tmp_path)
    result = judge(bad, "opd", kube, control_plane.kubeconfig, tmp_path, 60)
    assert result.ok is False
    assert "the operator exited" in result.why and "settings_that_do_not_exist" in result.why

    missing = Operator("absent", "ours", "MIT", ["x.py"], scenario, needs=("no_such_module_here",))
    result = judge(missing, "opd", kube, control_plane.kubeconfig, tmp_path, 60)
    assert result.ok is None and "no_such_module_here" in result.why


@pytest.mark.apiserver
def test_creating_into_a_collection_that_does_not_exist_fails_loudly(control_plane: LocalControlPlane) -> None:
    # A kind whose plural is not its name + "s" once went to a 404 that read as a creation.
    kube = Kube(control_plane.server, control_plane.token, control_plane.ca_file)
    with pytest.raises(RuntimeError, match="HTTP 404: no such collection for kind NoSuchThing"):
        kube.create({"apiVersion": "example.com/v1", "kind": "NoSuchThing",
                     "metadata": {"name": "x", "namespace": "default"}})
