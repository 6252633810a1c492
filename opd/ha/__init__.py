"""Replicas coordinated through Kubernetes Leases (coordination.k8s.io/v1), no coordinator of opd's own.

- Leader mode: one replica holds a Lease and runs handlers; the others stand by with their watches
  running, and take over when the Lease is released or expires (client-go's leader election).
- Shards mode: every object belongs to one of S shards by a hash of its uid; each shard is a Lease;
  replicas learn of each other through one members Lease and share the shards out fairly. Every
  Lease is known, watched and written by its name, so RBAC names each one.

Each operation of a replica gets a ``View`` of what the replica owns: the engine's ``Ownership``.
"""

from opd.ha.coordination import Coordinator, State
from opd.ha.election import Claim, Timings
from opd.ha.grants import View
from opd.ha.leases import VERBS, KubeLeases, Lease, LeaseRecord, LeaseStore
from opd.ha.observing import Observations
from opd.ha.replica import Replica
from opd.ha.settings import MODES, HaSettings, default_identity
from opd.ha.shards import plan, shard_of, shares

__all__ = [
    "MODES",
    "VERBS",
    "Claim",
    "Coordinator",
    "HaSettings",
    "KubeLeases",
    "Lease",
    "LeaseRecord",
    "LeaseStore",
    "Observations",
    "Replica",
    "State",
    "Timings",
    "View",
    "default_identity",
    "plan",
    "shard_of",
    "shares",
]
