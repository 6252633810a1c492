"""opd's local control plane: etcd and kube-apiserver on loopback, built once from Debian's
sources. Behind ``opd local-cluster`` and the test kit's ``control_plane`` fixture."""

from opd.localcluster.assets import Assets, find_assets
from opd.localcluster.build import install
from opd.localcluster.controlplane import LocalControlPlane

__all__ = ["Assets", "LocalControlPlane", "find_assets", "install"]
