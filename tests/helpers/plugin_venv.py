"""A fresh virtualenv with opd, the fixture plugins of tests/fixtures/plugins/ and the example
plugins of plugins/ installed,
for tests that run the installed ``opd`` command (built once per test session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "plugins"


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return result


def _pip_for(venv: Path) -> list[str]:
    """pip for ``venv``: this interpreter's own pip, when it can target another (pip >= 22.3).

    That spares the venv its own pip (ensurepip takes longer than installing opd's dependencies).
    """
    try:
        import pip

        usable = tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3)
    except (ImportError, ValueError):
        usable = False
    python = venv / "bin" / "python"
    if usable:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        return [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "--no-input"]
    _run([sys.executable, "-m", "venv", str(venv)])
    return [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]


def build_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with opd's runtime dependencies, opd and the fixture plugins.

    opd and the plugins are installed from copies (nothing is written into the work tree),
    editable and without build isolation: ~15 s with a warm pip cache.
    """
    started = time.monotonic()
    root = tmp_path_factory.mktemp("plugins-venv")
    venv = root / "venv"
    pip = _pip_for(venv)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    # setuptools new enough for pyproject's PEP 639 license, to build the editables below.
    _run([*pip, "install", "-q", "setuptools>=77", *deps])
    source = root / "opd"
    shutil.copytree(REPO / "opd", source / "opd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    fixtures = shutil.copytree(FIXTURES, root / "fixtures", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    examples = shutil.copytree(REPO / "plugins", root / "examples",
                               ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tests"))
    packages = [*sorted(fixtures.iterdir()), *sorted(examples.iterdir())]
    editables = [arg for d in packages if (d / "pyproject.toml").exists() for arg in ("-e", str(d))]
    _run([*pip, "install", "-q", "--no-build-isolation", "--no-deps", "-e", str(source), *editables])
    print(f"plugins venv built in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return venv


def opd_cmd(venv: Path, *args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("OPD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
    return subprocess.run([str(venv / "bin" / "opd"), *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, cwd=cwd)


