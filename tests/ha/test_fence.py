"""Replicas on the real apiserver when Leases and timing turn hostile (issue #18): two replicas given
one identity, a Lease edited by hand (a ghost holder claiming 2147483647 s; the holder cleared), and
a write that waited in the batcher past its replica's fence. Each checks what the apiserver holds:
which replica's writes reached an object, in the order the apiserver kept them."""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex
from kubernetes_asyncio import client
from loguru import logger

from opd.engine.applying import Applier, Plan
from opd.engine.events import EventPoster
from opd.engine.ownership import Fenced
from opd.engine.state import Storage
from opd.ha import HaSettings, Replica
from opd.ha.election import CLOCK
from opd.kube import credentials
from opd.kube.api import KubeClient
from opd.kube.batching import Fence
from opd.kube.credentials import Login
from opd.resources import Resource
from opd.settings import NetworkingSettings, PersistenceSettings, PostingSettings

KEX = Resource(group="kopf.dev", version="v1", plural="kopfexamples", kind="KopfExample", namespaced=True,
               subresources=frozenset({"status"}))
MARK = "ha-test.opd.dev/writer"


async def _connect(kubeconfig: Path) -> KubeClient:
    return await credentials.connect(Login(kubeconfig=str(kubeconfig)), NetworkingSettings())


class Writer:
    """One replica acting: while its view lets it, it writes its name into one ConfigMap (through
    the batcher, with the view's fence), every 50 ms."""

    def __init__(self, name: str, replica: Replica, kube: KubeClient, path: str) -> None:
        self.name, self.replica, self.kube, self.path = name, replica, kube, path
        self.view = replica.view()
        self.sent: list[float] = []  # monotonic: when each write left (and was answered)
        self.before_first: Callable[[], None] = lambda: None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Writer:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        fence = Fence(lambda: self.view.time_left("uid"), f"{self.name}'s object")
        while True:
            await asyncio.sleep(0.05)
            if not self.view.may_write("uid"):
                continue
            n += 1
            if not self.sent:
                self.before_first()
            began = time.monotonic()
            try:
                await self.kube.patch(self.path, {"metadata": {"annotations": {MARK: f"{self.name}-{n}"}}}, fence=fence)
            except Fenced:
                continue
            self.sent.append(began)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def _history(kube: KubeClient, namespace: str, name: str, into: list[str]) -> None:
    """Every writer the ConfigMap saw, in the apiserver's order, until cancelled."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    version = (await kube.get(path))["metadata"]["resourceVersion"]
    query = {"watch": "true", "fieldSelector": f"metadata.name={name}", "resourceVersion": version,
             "timeoutSeconds": 300}
    async for line in kube.stream(path, query, inactivity_timeout=600, connect_timeout=10, max_line=1 << 20):
        event = json.loads(line)
        mark = ((event.get("object") or {}).get("metadata") or {}).get("annotations", {}).get(MARK)
        if mark and (not into or into[-1] != mark):
            into.append(mark)


def _writers(history: list[str]) -> list[str]:
    """The writers in order, each run of one writer once: ['a', 'b'] is a hand-over."""
    runs: list[str] = []
    for mark in history:
        who = mark.rsplit("-", 1)[0]
        if not runs or runs[-1] != who:
            runs.append(who)
    return runs


class Stage:
    """Replicas, writers, and the history of the ConfigMap they write; all stopped at the end."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.replicas: list[Replica] = []
        self.writers: list[Writer] = []
        self.clients: list[KubeClient] = []
        self.history: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.path = f"/api/v1/namespaces/{namespace}/configmaps/written"

    async def begin(self) -> None:
        kube = await self.client()
        await kube.request("POST", f"/api/v1/namespaces/{self.namespace}/configmaps",
                           body={"metadata": {"name": "written"}, "data": {}})
        self.tasks.append(asyncio.get_running_loop().create_task(_history(kube, self.namespace, "written",
                                                                          self.history)))

    async def client(self) -> KubeClient:
        kube = await _connect(self.kubeconfig)
        self.clients.append(kube)
        return kube

    async def replica(self, identity: str, lease: str, timings: tuple[float, float, float] = (6.0, 4.0, 1.0),
                      writer: str | None = None) -> Replica:
        duration, deadline, period = timings
        replica = Replica(HaSettings(mode="leader", lease=lease, namespace=self.namespace, identity=identity,
                                     lease_duration=duration, renew_deadline=deadline, retry_period=period),
                          login=Login(kubeconfig=str(self.kubeconfig)))
        await replica.start()
        self.replicas.append(replica)
        if writer is not None:
            self.writers.append(Writer(writer, replica, await self.client(), self.path).start())
        return replica

    async def end(self) -> None:
        for writer in self.writers:
            await writer.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for replica in self.replicas:
            await replica.stop()
        for kube in self.clients:
            await kube.close()


@pytest.fixture
async def stage(kubeconfig: Path, namespace: str) -> AsyncIterator[Stage]:
    made = Stage(kubeconfig, namespace)
    await made.begin()
    try:
        yield made
    finally:
        await made.end()


def _holds(replica: Replica) -> bool:
    return replica.coordinator is not None and replica.coordinator.holds(0)


async def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_two_replicas_given_one_identity_never_act_together(stage: Stage) -> None:
    """Both held the Lease at every step before (each took the other's record for its own)."""
    first = await stage.replica("twin", "shared", writer="first")
    assert await _until(lambda: _holds(first), 30)
    second = await stage.replica("twin", "shared", writer="second")
    both = 0
    ends = time.monotonic() + 8.0  # two lease durations: the second would have taken it by now
    while time.monotonic() < ends:
        both += _holds(first) and _holds(second)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # the last writes' events
    assert both == 0
    assert _holds(first) and not _holds(second)
    assert _writers(stage.history) == ["first"], stage.history  # what the apiserver holds: one writer only
    assert stage.writers[0].sent and not stage.writers[1].sent


async def test_a_leader_that_sees_its_identity_renewed_by_another_process_stops_and_says_so(
        stage: Stage, api: client.ApiClient, namespace: str) -> None:
    """Another process with the same identity (an older opd, a copied config) renews the Lease: the
    leader says so once and stops acting as the watch delivers it; it does not fight for it."""
    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="WARNING")
    try:
        leader = await stage.replica("same", "twinned", timings=(8.0, 6.0, 3.0), writer="leader")
        assert await _until(lambda: bool(stage.writers[0].sent), 30)
        leases = client.CoordinationV1Api(api)
        lease = await leases.read_namespaced_lease("twinned", namespace)
        lease.spec.renew_time = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
        written = await leases.replace_namespaced_lease("twinned", namespace, lease)
        renewed = time.monotonic()
        assert await _until(lambda: not _holds(leader), 5)
        await asyncio.sleep(4.0)  # past its next renewal: it must not write the Lease back
        assert not _holds(leader)
        assert not [t for t in stage.writers[0].sent if t > renewed + 0.5]  # no write after the fence
        after = await leases.read_namespaced_lease("twinned", namespace)
        assert after.metadata.resource_version == written.metadata.resource_version  # still the other's record
        lines = [line for line in said if "renewed by another process with this replica's identity 'same'" in line]
        assert len(lines) == 1, said
    finally:
        logger.remove(sink)


async def test_a_ghost_claiming_int32_max_seconds_is_replaced_within_twice_the_lease_duration(
        stage: Stage, api: client.ApiClient, namespace: str) -> None:
    """A Lease edited by hand to ``leaseDurationSeconds: 2147483647`` under holder "ghost" froze
    failover for good; the record's claim is now honoured up to 1.5 x the group's own duration."""
    now = datetime.datetime.now(datetime.UTC)
    await client.CoordinationV1Api(api).create_namespaced_lease(namespace, {
        "metadata": {"name": "haunted"},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2147483647, "acquireTime": now,
                 "renewTime": now, "leaseTransitions": 3}})
    duration = 6.0
    replica = await stage.replica("living", "haunted", timings=(duration, 4.0, 1.0))
    assert await _until(lambda: _holds(replica), 10 * duration)
    assert replica.coordinator is not None
    claim = replica.coordinator.claims[0]
    seen = replica.coordinator.seen.get("haunted")
    assert claim.acquired_at is not None and seen is not None
    assert claim.acquired_at - seen.since <= 2 * duration  # from when it first saw the ghost's record
    lease = await client.CoordinationV1Api(api).read_namespaced_lease("haunted", namespace)
    assert (lease.spec.holder_identity, lease.spec.lease_duration_seconds, lease.spec.lease_transitions) == (
        "living", 6, 4)


async def test_a_holder_cleared_by_hand_fences_the_old_holder_before_the_new_one_writes(
        stage: Stage, api: client.ApiClient, namespace: str) -> None:
    """Before: B led at once while A still counted itself leader until its next renewal, and both
    wrote. Now A stops as the watch delivers the edit, and leaves the Lease to B."""
    a = await stage.replica("a", "cleared", timings=(8.0, 6.0, 3.0), writer="a")
    assert await _until(lambda: _holds(a), 30)
    b = await stage.replica("b", "cleared", timings=(8.0, 6.0, 3.0), writer="b")
    assert await _until(lambda: bool(stage.writers[0].sent), 10)
    await asyncio.sleep(1.0)
    assert not _holds(b)
    a_at_b_first: list[bool] = []
    stage.writers[1].before_first = lambda: a_at_b_first.append(stage.writers[0].view.may_write("uid"))

    leases = client.CoordinationV1Api(api)
    lease = await leases.read_namespaced_lease("cleared", namespace)
    lease.spec.holder_identity = None  # as `kubectl edit` would
    await leases.replace_namespaced_lease("cleared", namespace, lease)
    assert await _until(lambda: bool(stage.writers[1].sent), 20)
    await asyncio.sleep(2.0)
    assert a_at_b_first == [False]  # A had stopped when B's first write left
    assert _writers(stage.history) == ["a", "b"], stage.history  # no write of A's after B's first
    assert _holds(b) and not _holds(a)


async def test_a_patch_waiting_past_the_fence_never_reaches_the_object(
        kubeconfig: Path, namespace: str, crd: str, api: client.ApiClient) -> None:
    """The issue's case: a patch queued (here: in the batcher's window) passed the check, then left
    after its replica's deadline. It is refused as it leaves now; the object is untouched."""
    created = await create_kex(api, namespace, "fenced")
    kube = await _connect(kubeconfig)
    kube.patches.window = 1.0  # every patch waits 1 s for others (as under `opd start`)
    deadline = CLOCK() + 0.3

    class UntilDeadline:
        def owns(self, uid: str) -> bool:
            return CLOCK() < deadline

        def may_write(self, uid: str) -> bool:
            return self.owns(uid)

        def time_left(self, uid: str) -> float:
            return max(0.0, deadline - CLOCK()) if self.owns(uid) else 0.0

    persistence = PersistenceSettings()
    applier = Applier(kube, KEX, persistence, Storage(persistence, has_status_subresource=True),
                      holding_label=False, ownership=UntilDeadline())
    try:
        with pytest.raises(Fenced):
            await applier.apply(Plan(patch={"metadata": {"annotations": {"late": "yes"}}}), created)
        assert CLOCK() > deadline
    finally:
        await kube.close()
    found = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfexamples", "fenced")
    assert found["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert "late" not in (found["metadata"].get("annotations") or {})


async def test_a_fenced_request_is_not_awaited_past_the_fence(kubeconfig: Path, namespace: str) -> None:
    """A 60 s request timeout shrinks to the lease time left: a request that cannot be answered
    in time (a watch-like long GET stands in for a slow write) ends at the fence, as Fenced."""
    kube = await _connect(kubeconfig)
    try:
        began = time.monotonic()
        with pytest.raises(Fenced, match="lease ran out"):
            # A list that waits on the server (a watch without events) until the fence ends it.
            await kube.request("GET", f"/api/v1/namespaces/{namespace}/configmaps",
                               query={"watch": "true", "timeoutSeconds": 30}, timeout=0.5, fenced=True)
        assert time.monotonic() - began < 10.0  # not the 30 s the server would have taken
        assert kube.recycles == 0  # the fence says nothing of the connection
    finally:
        await kube.close()
    assert math.isfinite(began)


class _FencedFor:
    """An Ownership that has lost one object (its fence passed) and keeps the rest."""

    def __init__(self, lost: str) -> None:
        self.lost = lost

    def owns(self, uid: str) -> bool:
        return uid != self.lost

    def may_write(self, uid: str) -> bool:
        return uid != self.lost

    def time_left(self, uid: str) -> float:
        return 0.0 if uid == self.lost else 30.0


async def test_an_event_about_an_object_this_replica_lost_is_not_sent(kubeconfig: Path, namespace: str) -> None:
    """Events are writes too: queued before the fence, checked when they leave (they went out before)."""
    kube = await _connect(kubeconfig)
    try:
        made = {}
        for name in ("kept", "lost"):
            made[name] = await kube.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                            body={"metadata": {"name": name}})
        lost = _FencedFor(made["lost"]["metadata"]["uid"])
        poster = EventPoster(kube, PostingSettings(batch_window=0.05), ownership=lost)
        task = asyncio.get_running_loop().create_task(poster.run())
        try:
            for body in made.values():
                poster.post(body, "Normal", "Checked", f"about {body['metadata']['name']}")

            async def involved() -> list[str]:
                events = await kube.get(f"/api/v1/namespaces/{namespace}/events")
                return sorted(e["involvedObject"]["name"] for e in events["items"] if e["reason"] == "Checked")

            assert await _until_value(involved, ["kept"], 15)
            await asyncio.sleep(1.0)  # the lost object's would have gone out with the kept one's
            assert await involved() == ["kept"]  # what the apiserver holds
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await kube.close()


async def _until_value(get: Callable[[], Any], wanted: Any, timeout: float) -> bool:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if await get() == wanted:
            return True
        await asyncio.sleep(0.1)
    return False
