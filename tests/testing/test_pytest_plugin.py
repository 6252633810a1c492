"""opd's pytest fixtures are opt-in: a project that merely has opd and pytest installed (no
pytest-asyncio, which only ``opd[test]`` brings) runs its tests as if opd were not there, and
the README's opt-in line gives a plugin author the fixtures.

A fresh virtualenv with opd installed from a copy of this tree, as ``pip install opd pytest``
would (~20 s with a warm pip cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.plugin_venv import REPO, _pip_for, _run


def _pytest(venv: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPD_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, timeout=120, cwd=project, env=env)


@pytest.mark.timeout(600)
def test_opd_and_pytest_leave_an_unrelated_project_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("unrelated")
    venv = root / "venv"
    pip = _pip_for(venv)
    source = root / "opd"
    shutil.copytree(REPO / "opd", source / "opd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # setuptools new enough for pyproject's PEP 639 license, to build opd below.
    _run([*pip, "install", "-q", "setuptools>=77", "pytest"])
    _run([*pip, "install", "-q", "--no-build-isolation", str(source)])
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import pytest_asyncio"], capture_output=True).returncode != 0
    # The build script is package data: it moved with the local control plane.
    _run([python, "-c", "from opd.localcluster.build import build_script; assert build_script().is_file()"])

    project = root / "project"
    project.mkdir()
    (project / "test_unrelated.py").write_text("def test_nothing_to_do_with_opd():\n    assert 1 + 1 == 2\n")
    result = _pytest(venv, project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "opd" not in result.stdout + result.stderr

    # A plugin author opts in as the README says, with the test extra's pytest-asyncio.
    _run([*pip, "install", "-q", "pytest-asyncio>=0.24"])
    (project / "conftest.py").write_text('pytest_plugins = ["opd.testing.fixtures"]\n')
    fixtures = _pytest(venv, project, "--fixtures")
    assert fixtures.returncode == 0, fixtures.stdout + fixtures.stderr
    for name in ("control_plane", "kubeconfig", "api", "namespace"):
        assert f"\n{name} " in fixtures.stdout or f"\n{name} [" in fixtures.stdout, name


def test_every_test_that_uses_the_cluster_is_marked_apiserver(tmp_path: Path) -> None:
    """The marker comes from the fixtures a test uses (through any other fixture), not from remembering it:
    ``-m 'not apiserver'`` then runs exactly the tests that start no kube-apiserver."""
    (tmp_path / "conftest.py").write_text(
        'import pytest\npytest_plugins = ["opd.testing.fixtures"]\n\n'
        "@pytest.fixture\ndef cluster_user(kubeconfig):\n    return kubeconfig\n")
    (tmp_path / "test_x.py").write_text(
        "def test_direct(kubeconfig): pass\n"
        "def test_indirect(cluster_user): pass\n"
        "def test_pure(tmp_path): pass\n")
    argv = [sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", "-m", "apiserver", str(tmp_path)]
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "test_x.py::test_direct" in out.stdout and "test_x.py::test_indirect" in out.stdout, out.stdout + out.stderr
    assert "test_pure" not in out.stdout
