"""Where the control plane's binaries come from (the build that makes them: ``build.py``).

Order of lookup: an explicit folder (argument or ``OPD_CONTROL_PLANE_ASSETS``,
laid out like envtest's: ``etcd`` and ``kube-apiserver`` side by side), then
opd's cache folder, then etcd from ``PATH`` beside a cached ``kube-apiserver``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
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
