"""Label filtering (issue #21 item 2), on the real apiserver: three replicas in one process (each its
own Replica, connection and operation) of 6 shards. The replica holding the labeller role writes
``<prefix>/shard`` on each new object; each replica watches only the labels of the shards it holds,
so that it receives only its shards' events, and each object is handled once. When the labeller
is killed (its Leases left to expire), the role moves and objects created meanwhile are handled.

The API server here (1.20) ignores KEP-5866's shardSelector: the replicas say so and use labels."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client

import opd
from opd.engine.operation import Operation
from opd.engine.watching import Watcher
from opd.ha import HaSettings, Replica, shard_of
from opd.ha.replica import honours_shards
from opd.kube.credentials import Login
from opd.orchestration import build_operation, run_tasks, spawn_operation
from opd.service.health import HaSnapshot
from opd.settings import OperatorSettings

SHARDS = 6
LABEL = "kopf.zalando.org/shard"


class Member:
    """One replica and its operation, in this loop; ``kill`` stops acting without releasing anything."""

    def __init__(self, name: str, kubeconfig: Path, namespace: str, crd: str,
                 handled: list[tuple[str, str]], filtering: str = "auto") -> None:
        self.name, self.kubeconfig, self.namespace = name, kubeconfig, namespace
        self.registry = opd.OperatorRegistry()

        @opd.on.create(crd, registry=self.registry)
        def created(uid: str, **_: Any) -> None:
            handled.append((name, uid))

        self.replica = Replica(HaSettings(mode="shards", lease="lab", namespace=namespace, identity=name,
                                          shards=SHARDS, lease_duration=4.0, renew_deadline=3.0, retry_period=1.0,
                                          filtering=filtering),
                               login=Login(kubeconfig=str(kubeconfig)))
        self.operation: Operation | None = None
        self.task: asyncio.Task[None] | None = None
        self.watchers: dict[int, Watcher] = {}  # every stream it ever had (they are replaced on relists)

    async def start(self) -> None:
        await self.replica.start()
        settings = OperatorSettings()
        settings.persistence.prefix = "kopf.zalando.org"
        self.operation = build_operation(registry=self.registry, settings=settings, namespaces=[self.namespace],
                                         login=Login(kubeconfig=str(self.kubeconfig)), ownership=self.replica.view())
        tasks = await spawn_operation(self.operation)
        self.task = asyncio.get_running_loop().create_task(run_tasks(tasks, stop_timeout=10))

    def look(self) -> None:
        cluster = self.operation.cluster if self.operation is not None else None
        for watcher in cluster.hub.watchers if cluster is not None else []:
            if watcher.resource.plural == "kopfexamples":
                self.watchers[id(watcher)] = watcher

    def events(self, labelling: bool = False) -> int:
        """Watch events received: on its shards' streams, or (``labelling``) on the labeller's streams of
        objects without the label (or labelled for another shard count)."""
        return sum(w.stats["events"] for w in self.watchers.values()
                   if (f"{LABEL}s notin" in (w.label_selector or "")) == labelling)

    def held(self) -> tuple[int, ...]:
        state = self.replica.state()
        return state.held if state is not None else ()

    def labeller(self) -> bool:
        state = self.replica.state()
        return state is not None and state.labeller

    async def kill(self) -> None:
        """As kill -9 would leave it: the Leases are not released (they expire), nothing more is done."""
        for task in self.replica._tasks:
            task.cancel()
        await asyncio.gather(*self.replica._tasks, return_exceptions=True)
        self.replica._tasks = []
        if self.replica.coordinator is not None:
            for claim in [*self.replica.coordinator.claims.values(), self.replica.coordinator.labeller]:
                if claim is not None:
                    claim.stop()  # its fence: it acts no more
        await self.stop()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        if self.operation is not None:
            self.operation.ownership.detach()  # type: ignore[attr-defined]
        if self.replica._tasks:
            await self.replica.stop()
        elif self.replica.client is not None:
            await self.replica.client.close()
            self.replica.client = None


async def test_label_filtering_each_replica_reads_only_its_shards_and_the_labeller_role_moves(
        api: client.ApiClient, crd: str, namespace: str, kubeconfig: Path) -> None:
    handled: list[tuple[str, str]] = []
    members = [Member(name, kubeconfig, namespace, crd, handled) for name in ("r1", "r2", "r3")]
    looking: asyncio.Task[None] | None = None
    try:
        for member in members:
            await member.start()

        async def look() -> None:
            while True:
                for member in members:
                    member.look()
                await asyncio.sleep(0.05)

        looking = asyncio.get_running_loop().create_task(look())

        def settled() -> bool:
            held = [m.held() for m in members]
            # 6 shards for 3: too few to lighten the labeller's share (opd.ha.shards.lighter).
            return sorted(len(h) for h in held) == [2, 2, 2] and sum(m.labeller() for m in members) == 1 \
                and all(m.operation is not None and m.operation.is_ready for m in members)

        await eventually(settled, timeout=60)
        assert {m.replica.state().filtering for m in members} == {"labels"}  # type: ignore[union-attr]
        await asyncio.sleep(1.5)  # the streams of the shards held have listed
        before = {m.name: m.events() for m in members}
        before_labelling = sum(m.events(labelling=True) for m in members)
        names = [f"obj-{i:03d}" for i in range(60)]
        uids = {}
        for name in names:
            uids[name] = (await create_kex(api, namespace, name))["metadata"]["uid"]
        # Labelled for another shard count (``shards`` was 3): labelled again, not left in a shard
        # that no replica reads them from.
        for i in range(6):
            uids[f"stale-{i}"] = (await create_kex(api, namespace, f"stale-{i}", labels={
                LABEL: "0", f"{LABEL}s": "3"}))["metadata"]["uid"]
        await eventually(lambda: {u for _, u in handled} >= set(uids.values()), timeout=60)
        await asyncio.sleep(1.5)  # a second run, or late events, would show by now
        runs = collections.Counter(u for _, u in handled)
        assert all(runs[u] == 1 for u in uids.values()), runs.most_common(3)
        # Each ran only objects of the shards it holds, and received only its shards' events.
        owner = {k: m.name for m in members for k in m.held()}
        assert all(owner[shard_of(u, SHARDS)] == who for who, u in handled), handled
        received = {m.name: m.events() - before[m.name] for m in members}
        total = sum(received.values())
        assert total > 0
        assert all(count <= 0.6 * total for count in received.values()), received  # ~1/3 each, not all
        # The labeller's own cost: each new object comes on its stream of unlabelled objects, and
        # leaves it (labelled): two events per object, on that one replica only.
        labelling = sum(m.events(labelling=True) for m in members) - before_labelling
        assert labelling <= 2 * len(uids) + 5, labelling
        assert sum(1 for m in members if m.events(labelling=True)) == 1
        objects = await client.CustomObjectsApi(api).list_namespaced_custom_object("kopf.dev", "v1", namespace, crd)
        labels = {o["metadata"]["uid"]: (o["metadata"].get("labels") or {}).get(LABEL) for o in objects["items"]}
        assert all(labels[u] == str(shard_of(u, SHARDS)) for u in uids.values()), labels
        counts = {o["metadata"]["uid"]: o["metadata"]["labels"].get(f"{LABEL}s") for o in objects["items"]}
        assert all(counts[u] == str(SHARDS) for u in uids.values()), counts

        # The labeller is killed; objects created now wait for their label until the role moves.
        labeller = next(m for m in members if m.labeller())
        state = labeller.replica.state()
        assert state is not None
        shown = HaSnapshot(**dataclasses.asdict(state)).to_dict()  # what /readyz shows
        assert shown["filtering"] == "labels" and shown["labeller"] is True
        await labeller.kill()
        rest = [m for m in members if m is not labeller]
        late = {}
        for i in range(12):
            late[f"late-{i:02d}"] = (await create_kex(api, namespace, f"late-{i:02d}"))["metadata"]["uid"]
        await eventually(lambda: sum(m.labeller() for m in rest) == 1, timeout=30)
        # 6 shards for 2: the new labeller gives up all but its lighter share, the other takes the rest.
        await eventually(lambda: sorted((m.labeller(), len(m.held())) for m in rest) == [(False, 5), (True, 1)],
                         timeout=60)
        await eventually(lambda: {u for _, u in handled} >= set(late.values()), timeout=60)
        await asyncio.sleep(1.5)
        runs = collections.Counter(u for _, u in handled)
        assert all(runs[u] == 1 for u in [*uids.values(), *late.values()]), runs.most_common(3)
        assert {who for who, u in handled if u in set(late.values())} <= {m.name for m in rest}
    finally:
        if looking is not None:
            looking.cancel()
        for member in members:
            await member.stop()


async def test_client_filtering_as_the_last_resort_every_replica_receives_every_event(
        api: client.ApiClient, crd: str, namespace: str, kubeconfig: Path) -> None:
    """Configured so (or nothing better offered): no label is written, no labeller, every replica
    receives every event and handles only its shards' objects; the state and health say which."""
    handled: list[tuple[str, str]] = []
    members = [Member(name, kubeconfig, namespace, crd, handled, filtering="client") for name in ("c1", "c2")]
    try:
        for member in members:
            await member.start()
        await eventually(lambda: sorted(len(m.held()) for m in members) == [3, 3]
                         and all(m.operation is not None and m.operation.is_ready for m in members), timeout=60)
        uids = [(await create_kex(api, namespace, f"obj-{i:02d}"))["metadata"]["uid"] for i in range(20)]
        await eventually(lambda: {u for _, u in handled} >= set(uids), timeout=60)
        await asyncio.sleep(1.0)
        for member in members:
            member.look()
        assert sorted(u for _, u in handled) == sorted(uids)  # each once
        events = [m.events() for m in members]
        assert all(count >= len(uids) for count in events), events  # each its own and the other's
        assert not any(m.labeller() for m in members)
        states = [m.replica.state() for m in members]
        assert {s.filtering for s in states if s is not None} == {"client"}
        shown = HaSnapshot(**dataclasses.asdict(states[0])).to_dict()  # what /readyz shows
        assert shown["filtering"] == "client" and shown["labeller"] is False
        objects = await client.CustomObjectsApi(api).list_namespaced_custom_object("kopf.dev", "v1", namespace, crd)
        assert not [o for o in objects["items"] if LABEL in (o["metadata"].get("labels") or {})]
        leases = await client.CoordinationV1Api(api).list_namespaced_lease(namespace)
        assert "lab-labeller" not in {lease.metadata.name for lease in leases.items}
    finally:
        for member in members:
            await member.stop()


def test_a_list_answer_tells_whether_the_server_applied_the_shard_selector() -> None:
    """KEP-5866: the applied selector is echoed in ListMeta.shardInfo; an older server sends none."""
    asked = "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"
    assert honours_shards({"kind": "LeaseList", "metadata": {"resourceVersion": "5", "shardInfo": {"selector": asked}},
                           "items": []}, asked)
    assert not honours_shards({"kind": "LeaseList", "metadata": {"resourceVersion": "5"}, "items": []}, asked)
    assert not honours_shards({"metadata": {"shardInfo": {"selector": "shardRange(other)"}}}, asked)
    assert not honours_shards({"metadata": {"shardInfo": "yes"}}, asked)
    assert not honours_shards(None, asked)
