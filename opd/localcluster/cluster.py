"""The local control plane as a long-lived, per-user service: ``opd local-cluster ...``.

One fixed folder (0700, like everything in it) holds its data, kubeconfig and a
state file with the PIDs, so ``stop`` and ``status`` work from another shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from opd.errors import ControlPlaneError
from opd.localcluster.assets import cache_dir
from opd.localcluster.controlplane import LocalControlPlane
from opd.localcluster.credentials import private_dir, write_private


def state_dir() -> Path:
    return cache_dir().parent.parent / "local-cluster"


def _state_file() -> Path:
    return state_dir() / "state.json"


def _alive(pid: int, binary: str) -> bool:
    # A PID may be reused after a reboot: check it is still our binary.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return os.path.basename(cmdline) == os.path.basename(binary)


@dataclass(frozen=True)
class ClusterState:
    kubeconfig: Path
    server: str
    pids: dict[str, int]
    binaries: dict[str, str]

    def running(self) -> dict[str, int]:
        return {n: p for n, p in self.pids.items() if _alive(p, self.binaries.get(n, n))}


def read_state() -> ClusterState | None:
    try:
        raw = json.loads(_state_file().read_text())
        return ClusterState(
            kubeconfig=Path(raw["kubeconfig"]),
            server=raw["server"],
            pids={k: int(v) for k, v in raw["pids"].items()},
            binaries=dict(raw["binaries"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def start(*, detach: bool) -> LocalControlPlane | ClusterState:
    """Start the per-user cluster; with ``detach`` its processes outlive this one, and a
    cluster that already runs is fine (its state is returned): the command can be repeated."""
    current = read_state()
    if current is not None and current.running():
        if detach:
            return current
        raise ControlPlaneError(
            f"the local cluster is already running at {current.server} "
            f"(KUBECONFIG={current.kubeconfig}); 'opd local-cluster stop' first"
        )
    folder = state_dir()
    if folder.exists():
        shutil.rmtree(folder)
    private_dir(folder)
    cp = LocalControlPlane(workdir=folder, die_with_parent=not detach, keep_workdir=True)
    cp.start()
    assert cp.assets is not None
    binaries = {"etcd": str(cp.assets.etcd), "kube-apiserver": str(cp.assets.kube_apiserver)}
    if cp.assets.kube_controller_manager is not None:
        binaries["kube-controller-manager"] = str(cp.assets.kube_controller_manager)
    write_private(_state_file(), json.dumps({
        "kubeconfig": str(cp.kubeconfig),
        "server": cp.server,
        "pids": cp.pids,
        "binaries": binaries,
    }))
    return cp


def stop(timeout: float = 10.0) -> list[str]:
    """Stop a detached cluster by the PIDs in its state file; returns what was stopped."""
    current = read_state()
    if current is None:
        return []
    stopped = []
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        pid = current.running().get(name)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid, current.binaries[name]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, current.binaries[name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stopped.append(f"{name} (pid {pid})")
    _state_file().unlink(missing_ok=True)
    return stopped
