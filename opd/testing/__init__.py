"""Testing aids: a real local control plane (etcd + kube-apiserver) for opd and plugin authors."""

from opd.testing.assets import Assets, find_assets, install
from opd.testing.controlplane import LocalControlPlane
from opd.testing.running import RunningOperator, RunningPlugin, eventually

__all__ = ["Assets", "LocalControlPlane", "RunningOperator", "RunningPlugin", "eventually", "find_assets", "install"]
