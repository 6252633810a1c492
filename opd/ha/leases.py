"""A coordination.k8s.io/v1 Lease as plain data, and its reads and writes with resourceVersion
preconditions: whoever writes a Lease with the version it has seen wins; anyone else gets 409.

Every Lease opd writes carries a label naming its group (the configured lease name), for people
and tools; opd itself finds them by name. Every name is known ahead (``<lease>``; ``<lease>-<i>``
and ``<lease>-members``), and each is read, watched and written by its name (a watch by
``fieldSelector=metadata.name``): RBAC holds every verb but create to them by ``resourceNames``.

A Lease is input from outside (anyone allowed to edit it, or a buggy peer): each record is bounded
in shape and size when it is read (``LeaseRecord.from_spec``, ``Lease.from_body``), never trusted
for more than that; what a record claims about time is bounded by the reader (``opd.ha.observing``).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opd.kube.api import MERGE_PATCH, KubeClient, NotFoundError
from opd.resources import Resource

LEASES = Resource(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease", namespaced=True)
GROUP_LABEL = "opd.dev/ha-group"
ROLE_LABEL = "opd.dev/ha-role"  # leader, shard or members
# On the members Lease (shards mode): one annotation per replica, "<prefix><digest of its identity>".
MEMBER_PREFIX = "members.opd.dev/"
# What a replica needs on Leases (for RBAC), each verb on its group's Leases by name but create: get
# and update hold the leader's or a shard's Lease, list and watch follow each Lease by name, patch
# keeps its member entry in the members Lease (and removes entries long expired).
VERBS = ("get", "list", "watch", "create", "update", "patch")

# Bounds on what a Lease read from the API may hold before opd looks at it.
MAX_NAME = 253
MAX_HOLDER = 253  # the longest identity opd.ha.settings accepts
MAX_INT32 = 2**31 - 1  # leaseDurationSeconds and leaseTransitions are int32 in the API
MAX_KEY = 317  # an annotation's or label's key: a 253-character prefix, '/', a 63-character name
MAX_VALUE = 4096  # an annotation's value opd reads (its own are under 600 characters)
MAX_ENTRIES = 2048  # annotations or labels read from one Lease
_MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def group_label(lease: str) -> str:
    """The label value naming a group: the lease's name, or a digest when it is too long for a label."""
    return lease if len(lease) <= 63 else "h-" + hashlib.sha1(lease.encode()).hexdigest()[:40]


def _int(value: Any, high: int = MAX_INT32) -> int:
    """A whole number from 0 to ``high`` out of anything (0 when it is not one)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float):
        value = int(value) if value == value and abs(value) < 2.0**63 else 0
    elif isinstance(value, str) and len(value) <= 20:
        try:
            value = int(value)
        except ValueError:
            return 0
    return min(max(value, 0), high) if isinstance(value, int) else 0


def _holder(value: Any) -> str:
    """A holder's identity: text, or '' when it is none; an overlong one is shortened to its start
    and a digest (still someone else, and still that one at every read)."""
    if not isinstance(value, str):
        return ""
    if len(value) <= MAX_HOLDER:
        return value
    return f"{value[:64]}...sha1:{hashlib.sha1(value.encode(errors='replace')).hexdigest()}"


def _time(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= 40 and _MICRO_TIME.fullmatch(value) else None


def _pairs(value: Any) -> dict[str, str]:
    """Labels or annotations: text to text, each bounded, at most MAX_ENTRIES (others are left out)."""
    if not isinstance(value, Mapping):
        return {}
    found: dict[str, str] = {}
    for key, inner in value.items():
        if len(found) >= MAX_ENTRIES:
            break
        if isinstance(key, str) and isinstance(inner, str) and len(key) <= MAX_KEY and len(inner) <= MAX_VALUE:
            found[key] = inner
    return found


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
    def from_spec(cls, spec: Any) -> LeaseRecord:
        """Whatever the spec holds: fields of the wrong type or shape count as absent, numbers are
        clamped to the API's int32 range, an overlong holder is shortened (see ``_holder``)."""
        if not isinstance(spec, Mapping):
            spec = {}
        return cls(holder=_holder(spec.get("holderIdentity")), duration=_int(spec.get("leaseDurationSeconds")),
                   acquired=_time(spec.get("acquireTime")), renewed=_time(spec.get("renewTime")),
                   transitions=_int(spec.get("leaseTransitions")))

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
    def from_body(cls, body: Any) -> Lease:
        """A Lease from whatever a response or watch event holds, bounded (see the module's doc)."""
        body = body if isinstance(body, Mapping) else {}
        meta = body.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        name, version = meta.get("name"), meta.get("resourceVersion")
        return cls(name=name if isinstance(name, str) and len(name) <= MAX_NAME else "",
                   record=LeaseRecord.from_spec(body.get("spec")),
                   version=version if isinstance(version, str) and len(version) <= 32 else "",
                   labels=_pairs(meta.get("labels")), annotations=_pairs(meta.get("annotations")))

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

    async def patch(self, name: str, patch: Mapping[str, Any], *, timeout: float) -> Lease:
        """A merge-patch (with ``metadata.resourceVersion`` in it: only if that is still the current
        one, else ConflictError); NotFoundError when the Lease is missing."""
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

    async def patch(self, name: str, patch: Mapping[str, Any], *, timeout: float) -> Lease:
        self.requests += 1
        body = await self.client.request("PATCH", self._path(name), body=patch, content_type=MERGE_PATCH,
                                         timeout=timeout)
        return Lease.from_body(body)
