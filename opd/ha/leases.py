"""A coordination.k8s.io/v1 Lease as plain data, and its reads and writes with resourceVersion
preconditions: whoever writes a Lease with the version it has seen wins; anyone else gets 409.

Every Lease opd writes carries a label naming its group (the configured lease name), so one
watch with a label selector sees a whole group: the leader's Lease, or the shards' and members'.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opd.kube.api import KubeClient, NotFoundError
from opd.resources import Resource

LEASES = Resource(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease", namespaced=True)
GROUP_LABEL = "opd.dev/ha-group"
ROLE_LABEL = "opd.dev/ha-role"  # leader, shard or member
SHARDS_ANNOTATION = "opd.dev/ha-shards"  # on a member's Lease: the shard count it runs with
# What a replica needs on Leases (for RBAC): list and watch follow the group, delete tidies members.
VERBS = ("get", "list", "watch", "create", "update", "delete")


def group_label(lease: str) -> str:
    """The label value naming a group: the lease's name, or a digest when it is too long for a label."""
    return lease if len(lease) <= 63 else "h-" + hashlib.sha1(lease.encode()).hexdigest()[:40]


def micro_time(moment: datetime.datetime) -> str:
    """The API's MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease's spec: who holds it, for how long, since when."""

    holder: str = ""  # empty: free (released, or never held)
    duration: int = 0  # leaseDurationSeconds
    acquired: str | None = None
    renewed: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(holder=str(spec.get("holderIdentity") or ""), duration=int(spec.get("leaseDurationSeconds") or 0),
                   acquired=spec.get("acquireTime"), renewed=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"leaseTransitions": self.transitions}
        if self.holder:
            spec["holderIdentity"] = self.holder
        if self.duration:
            spec["leaseDurationSeconds"] = self.duration
        if self.acquired:
            spec["acquireTime"] = self.acquired
        if self.renewed:
            spec["renewTime"] = self.renewed
        return spec


@dataclass(frozen=True)
class Lease:
    name: str
    record: LeaseRecord = field(default_factory=LeaseRecord)
    version: str = ""  # resourceVersion; empty for one not created yet
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Lease:
        meta = body.get("metadata") or {}
        return cls(name=str(meta.get("name")), record=LeaseRecord.from_spec(body.get("spec")),
                   version=str(meta.get("resourceVersion") or ""), labels=dict(meta.get("labels") or {}),
                   annotations=dict(meta.get("annotations") or {}))

    def body(self, namespace: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": namespace}
        if self.version:
            meta["resourceVersion"] = self.version  # the precondition of an update
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        return {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "metadata": meta, "spec": self.record.spec()}

    def version_number(self) -> int:
        try:
            return int(self.version)
        except ValueError:
            return -1

    def with_record(self, record: LeaseRecord) -> Lease:
        return replace(self, record=record)


class LeaseStore(Protocol):
    """Where Leases live: the API server (``KubeLeases``), or a test's dict."""

    namespace: str

    async def get(self, name: str, *, timeout: float) -> Lease | None: ...

    async def create(self, lease: Lease, *, timeout: float) -> Lease:
        """Raises ConflictError when it exists already."""
        ...

    async def update(self, lease: Lease, *, timeout: float) -> Lease:
        """Only if ``lease.version`` is still the current one; else ConflictError."""
        ...

    async def delete(self, lease: Lease, *, timeout: float) -> None:
        """Only if ``lease.version`` is still the current one; a missing one is not an error."""
        ...


class KubeLeases:
    """Leases of one namespace on the API server."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.requests = 0  # for the health snapshot: what coordination costs

    def _path(self, name: str | None = None) -> str:
        return LEASES.path(self.namespace, name)

    async def get(self, name: str, *, timeout: float) -> Lease | None:
        self.requests += 1
        try:
            body = await self.client.request("GET", self._path(name), timeout=timeout)
        except NotFoundError:
            return None
        return Lease.from_body(body)

    async def create(self, lease: Lease, *, timeout: float) -> Lease:
        self.requests += 1
        body = await self.client.request("POST", self._path(), body=replace(lease, version="").body(self.namespace),
                                         timeout=timeout)
        return Lease.from_body(body)

    async def update(self, lease: Lease, *, timeout: float) -> Lease:
        self.requests += 1
        body = await self.client.request("PUT", self._path(lease.name), body=lease.body(self.namespace),
                                         timeout=timeout)
        return Lease.from_body(body)

    async def delete(self, lease: Lease, *, timeout: float) -> None:
        self.requests += 1
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": lease.version}}
        with contextlib.suppress(NotFoundError):  # gone already: what a delete wants
            await self.client.request("DELETE", self._path(lease.name), body=options, timeout=timeout)
