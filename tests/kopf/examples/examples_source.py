"""Kopf's own examples, as Kopf publishes them: the ``examples/`` folder of Kopf's source
distribution on PyPI, fetched with pip at run time (pinned by version and SHA-256) and unpacked
unchanged. Nothing of Kopf's is kept in this repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "1.45.2"
SHA256 = "5baa180cfdebe1c5095d2a0a96d7d91825b6920541a0825c55719c36abb0054f"
SDIST = f"kopf-{VERSION}.tar.gz"
PREFIX = f"kopf-{VERSION}/examples/"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opd" / "kopf-examples"


class SourceError(Exception):
    """The examples could not be had: the message says why, in one line."""


def fetch(cache: Path | None = None) -> Path:
    """Kopf's sdist in the cache (downloaded once with pip), its digest checked."""
    folder = cache or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SDIST
    if not path.exists():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"kopf=={VERSION}", "-d", str(folder)], capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not path.exists():
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise SourceError(f"pip download kopf=={VERSION} (source distribution) failed: {last}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SourceError(f"{path}: SHA-256 {digest}, expected {SHA256} (Kopf {VERSION}'s sdist on PyPI)")
    return path


def unpack(sdist: Path, dest: Path) -> Path:
    """``examples/`` (and Kopf's LICENSE) from the sdist into ``dest``, byte for byte: dest/examples."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if (m.name.startswith(PREFIX) or m.name == f"kopf-{VERSION}/LICENSE") and (m.isfile() or m.isdir())]
        for member in members:
            member.name = member.name.removeprefix(f"kopf-{VERSION}/")
        tar.extractall(dest, members=members, filter="data")
    return dest / "examples"
