"""Where the control plane's binaries come from, and how they are built.

Order of lookup: an explicit folder (argument or ``OPD_CONTROL_PLANE_ASSETS``,
laid out like envtest's: ``etcd`` and ``kube-apiserver`` side by side), then
opd's cache folder, then etcd from ``PATH`` beside a cached ``kube-apiserver``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from opd.errors import ControlPlaneError

KUBERNETES_VERSION = "1.20.2"
ENV_ASSETS = "OPD_CONTROL_PLANE_ASSETS"


def cache_dir() -> Path:
    """The per-user folder the build installs into."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opd" / "control-plane" / KUBERNETES_VERSION


@dataclass(frozen=True)
class Assets:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None  # optional: GC and namespace deletion

    @property
    def folder(self) -> Path:
        return self.kube_apiserver.parent


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _from_folder(folder: Path) -> Assets | None:
    apiserver = folder / "kube-apiserver"
    etcd = folder / "etcd"
    if not _executable(apiserver):
        return None
    if not _executable(etcd):
        found = shutil.which("etcd")
        if found is None:
            return None
        etcd = Path(found)
    kcm = folder / "kube-controller-manager"
    kcm_found = kcm if _executable(kcm) else None
    return Assets(etcd=etcd, kube_apiserver=apiserver, kube_controller_manager=kcm_found)


def find_assets(folder: str | os.PathLike[str] | None = None) -> Assets:
    """Locate the binaries, or raise a ControlPlaneError that says what to do."""
    explicit = folder if folder is not None else os.environ.get(ENV_ASSETS)
    if explicit:
        found = _from_folder(Path(explicit))
        if found is None:
            raise ControlPlaneError(
                f"no etcd and kube-apiserver in {explicit} (from {ENV_ASSETS} or --assets): "
                "point it at a folder holding both, or unset it to use opd's own build"
            )
        return found
    found = _from_folder(cache_dir())
    if found is None:
        raise ControlPlaneError(
            f"the local control plane is not installed (looked in {cache_dir()}): "
            f"run 'opd local-cluster install' (Debian, root) or set {ENV_ASSETS}"
        )
    return found


def build_script() -> Path:
    return Path(str(resources.files("opd.testing").joinpath("build-control-plane.sh")))


def install(*, force: bool = False, progress: Callable[[str], None] | None = None) -> Assets:
    """Build the binaries from Debian's sources unless the cache has them already."""
    say = progress or (lambda line: print(line, file=sys.stderr))
    if not force:
        try:
            assets = find_assets()
        except ControlPlaneError:
            pass
        else:
            say(f"==> already installed: {assets.folder}")
            return assets
    dest = cache_dir()
    say(f"==> building Kubernetes {KUBERNETES_VERSION} control plane into {dest} (once; ~5 minutes)")
    try:
        proc = subprocess.Popen(
            ["bash", str(build_script()), str(dest)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    except OSError as exc:
        raise ControlPlaneError(f"cannot run the build script {build_script()}: {exc}") from exc
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("==>"):
            say(line)
        tail = [*tail[-20:], line]
    if proc.wait() != 0:
        reason = next((t for t in reversed(tail) if t.startswith("error:")), tail[-1] if tail else "")
        raise ControlPlaneError(f"building the control plane failed: {reason.removeprefix('error: ')}")
    return find_assets()
