"""Filtering by the server (issue #21 item 2, KEP-5866's sharded LIST/WATCH), on the real apiserver.

The local apiserver (1.20) ignores ``shardSelector``; a 1.36 one with ``ShardedListAndWatch`` is not
available here. So each replica of ``opd run --ha shards`` goes through a proxy of its own
(``opd.testing.proxy``, ``shards=``) that either passes the parameter on to the apiserver, which
ignores it (an older server: the fallback to labels), or emulates KEP-5866 in front of it: it
filters LIST items and WATCH events by the FNV-1a hash of ``metadata.uid`` (its own implementation,
not opd's) and echoes the selector in ``metadata.shardInfo``. What each proxy sent is what its
replica received."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from pathlib import Path

import pytest
from chaos.scenarios import QUICK, HaTimings, Replicas, Stage
from helpers.operators import create_kex, eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client
from loguru import logger as opd_logger

from opd.engine.watching import MAX_SHARD_INFO, Watcher, echoed_shards
from opd.ha import HaSettings, Replica
from opd.ha.replica import honours_shards
from opd.ha.shards import held_selector, selector, shard_of
from opd.kube.api import KubeClient
from opd.kube.credentials import Login, load_configuration
from opd.kube.discovery import Discovery
from opd.localcluster import LocalControlPlane
from opd.resources import ResourceRef
from opd.service.health import HaSnapshot, _ha_metrics
from opd.settings import WatchingSettings
from opd.testing.chaos import Kube, LoadGenerator, handlers_source, wait_until
from opd.testing.proxy import FaultProxy
from opd.testing.shardselect import ShardEmulation, fnv1a_64, parse_shard_selector

SHARDS = 6
LABEL = "opd.dev/shard"  # opd run's prefix
TIMINGS = HaTimings(4.0, 3.0, 1.0)


async def test_auto_on_a_server_without_kep5866_asks_once_then_uses_labels(
        control_plane: LocalControlPlane, tmp_path: Path, crd: str) -> None:
    """The fallback: each replica asks (a LIST of its first shard's Lease with a shardSelector), the
    1.20 apiserver answers without shardInfo, and the replica says so and uses the shard label; one
    configured to ``server`` (never a label) filters on the client instead, and writes no label."""
    async with await Kube.connect(control_plane.kubeconfig) as kube:
        stage = Stage(control_plane, kube, tmp_path, QUICK)
        ns = await stage.namespace("srvfallback")
        reps = Replicas(stage, ns, "fb", mode="shards", shards=SHARDS, timings=TIMINGS,
                        source=lambda log: handlers_source(log, create=True))
        proxies = {}
        try:
            for name in ("f1", "f2"):
                proxies[name], config = stage.proxy(name, shards=False)
                reps.start(name, kubeconfig=config)
            assert await wait_until(lambda: reps.balanced(["f1", "f2"]), timeout=60, interval=0.5)
            load = LoadGenerator(kube, ns, rate=100, concurrency=8)
            await load.create([f"obj-{i:02d}" for i in range(12)])
            uids = set(load.uids.values())

            async def labelled() -> bool:
                found = await stage.objects(ns)
                return all((o["metadata"].get("labels") or {}).get(LABEL) is not None for o in found.values()) \
                    and reps.log.uids("create") >= uids

            assert await wait_until(labelled, timeout=60, interval=0.5)
            for name, proxy in proxies.items():
                probe = selector(0, SHARDS)
                assert proxy.sharding.asked[probe] == 1, (name, proxy.sharding.asked)  # asked once, at start
                text = reps.procs[name].log.read_text()
                assert "does not honour shardSelector" in text and "label filtering" in text, text[-2000:]
            assert all(n == 1 for n in reps.log.counts("create").values())

            # Configured to "server" (no label ever written): on this server, client-side filtering.
            other = await stage.namespace("srvclient")
            solo = Replicas(stage, other, "sc", mode="shards", shards=SHARDS, timings=TIMINGS, filtering="server",
                            source=lambda log: handlers_source(log, create=True))
            proxy, config = stage.proxy("c1", shards=False)
            solo.start("c1", kubeconfig=config)
            assert await wait_until(lambda: solo.balanced(["c1"]), timeout=60, interval=0.5)
            few = LoadGenerator(kube, other, rate=100, concurrency=8)
            await few.create([f"obj-{i:02d}" for i in range(5)])
            assert await wait_until(lambda: solo.log.uids("create") >= set(few.uids.values()), timeout=60,
                                    interval=0.5)
            text = solo.procs["c1"].log.read_text()
            assert "configured not to write labels: client-side filtering" in text, text[-2000:]
            assert proxy.sharding.asked[selector(0, SHARDS)] == 1
            objects = await stage.objects(other)
            assert len(objects) == 5
            assert not [o for o in objects.values() if LABEL in (o["metadata"].get("labels") or {})]
        finally:
            reps.stop()
            stage.stop_all()


async def test_server_filtering_each_replica_receives_only_its_shards_and_writes_no_label(
        control_plane: LocalControlPlane, tmp_path: Path, crd: str) -> None:
    """Three replicas of 6 shards, each through its own KEP-5866 proxy: each object handled once; each
    object's events and list items sent to the one replica that holds its shard only; no label on any
    object, no labeller Lease; a replica stopped: its shards move, the others list them and handle
    the objects created meanwhile."""
    async with await Kube.connect(control_plane.kubeconfig) as kube:
        stage = Stage(control_plane, kube, tmp_path, QUICK)
        ns = await stage.namespace("srvshards")
        load = LoadGenerator(kube, ns, rate=100, concurrency=8)
        await load.create([f"pre-{i:02d}" for i in range(30)])  # listed at start
        reps = Replicas(stage, ns, "ss", mode="shards", shards=SHARDS, timings=TIMINGS,
                        source=lambda log: handlers_source(log, create=True))
        proxies: dict[str, FaultProxy] = {}
        try:
            for name in ("s1", "s2", "s3"):
                proxies[name], config = stage.proxy(name, shards=True)
                reps.start(name, kubeconfig=config)
            assert await wait_until(lambda: reps.balanced(["s1", "s2", "s3"]), timeout=60, interval=0.5)
            await load.create([f"obj-{i:02d}" for i in range(60)])
            first = set(load.uids.values())
            assert await wait_until(lambda: reps.log.uids("create") >= first, timeout=90, interval=0.5)
            await asyncio.sleep(2.0)  # a second run, or late events, would show by now
            holders = await reps.holders()
            owner = {int(lease.rsplit("-", 1)[1]): who for lease, who in holders.items()}
            assert sorted(collections.Counter(owner.values()).values()) == [2, 2, 2], owner
            runs = reps.log.counts("create")
            assert all(runs[u] == 1 for u in first), runs.most_common(3)
            by = reps.runs_by("create", first)
            assert sum(by.values()) == len(first) and all(by[n] > 0 for n in proxies), by
            # What each replica received: only the objects of its shards (the hand-overs at start
            # done, the shards have stayed put since the balance was seen).
            new = {u for n, u in load.uids.items() if n.startswith("obj-")}
            for name, proxy in proxies.items():
                got = {u for u in new if proxy.sharding.sent[u]}
                assert got == {u for u in new if owner[shard_of(u, SHARDS)] == name}, name
            assert all(p.sharding.held_back > 0 for p in proxies.values())  # the others' were not sent
            for name in proxies:
                text = reps.procs[name].log.read_text()
                assert "honours shardSelector (KEP-5866): server filtering" in text, text[-2000:]
                assert "did not apply the shardSelector" not in text

            # A replica stops: its two shards move to the others, which list them afresh.
            reps.procs["s3"].stop()
            gone = {k for k, who in owner.items() if who == "s3"}
            await load.create([f"late-{i:02d}" for i in range(30)])
            late = {u for n, u in load.uids.items() if n.startswith("late-")}
            assert await wait_until(lambda: reps.log.uids("create") >= late | first, timeout=90, interval=0.5)
            await asyncio.sleep(2.0)
            runs = reps.log.counts("create")
            assert all(runs[u] == 1 for u in late | first), runs.most_common(3)
            moved = {u for u in late if shard_of(u, SHARDS) in gone}
            assert moved and reps.runs_by("create", moved).keys() <= {"s1", "s2"}
            for name in ("s1", "s2"):  # asked for the ranges of the moved shards too
                asked = [parse_shard_selector(s) for s in proxies[name].sharding.asked]
                assert any(any(lo <= fnv1a_64(u) < hi for _, lo, hi in ranges) for ranges in asked for u in moved)
            # No label on any object: the server filters, nobody labels.
            objects = await stage.objects(ns)
            assert not [o for o in objects.values() if LABEL in (o["metadata"].get("labels") or {})]
            assert "ss-labeller" not in await reps.leases()
        finally:
            reps.stop()
            stage.stop_all()


async def test_a_replica_says_server_filtering_in_its_state_health_and_metrics(
        control_plane: LocalControlPlane, tmp_path: Path, namespace: str) -> None:
    """What /readyz and /metrics show of a replica whose server honours shardSelector (the proxy's)."""
    pki = control_plane.ca_file.parent
    with FaultProxy("127.0.0.1", control_plane.apiserver_port, shards=ShardEmulation(
            str(pki / "apiserver.crt"), str(pki / "apiserver.key"), str(control_plane.ca_file))) as proxy:
        config = control_plane.write_kubeconfig(tmp_path / "kubeconfig", server=f"https://{proxy.address}")
        replica = Replica(HaSettings(mode="shards", lease="st", namespace=namespace, identity="one", shards=3,
                                     lease_duration=4.0, renew_deadline=3.0, retry_period=1.0),
                          login=Login(kubeconfig=str(config)))
        await replica.start()
        try:
            state = replica.state()
            assert state is not None and state.filtering == "server" and not state.labeller
            shown = HaSnapshot(**dataclasses.asdict(state))
            assert shown.to_dict()["filtering"] == "server"  # /readyz
            metrics = {m.name: m for m in _ha_metrics(shown)}
            assert [s.labels["filtering"] for s in metrics["opd_ha_shard_filtering"].samples] == ["server"]
        finally:
            await replica.stop()
    assert proxy.sharding.asked[selector(0, 3)] == 1


async def watch_half(kubeconfig: Path, crd: str, namespace: str, api: client.ApiClient, said: list[str],
                     ) -> dict[str, str]:
    """A Watcher of the first of 2 shards (its shardSelector) through ``kubeconfig``; 10 objects
    created, listed or watched: name -> uid of what it delivered."""
    for i in range(4):
        await create_kex(api, namespace, f"pre-{i}")
    cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
    delivered: dict[str, str] = {}
    sink = opd_logger.add(lambda m: said.append(str(m)), level="WARNING")
    async with KubeClient(cfg, source=source) as kube:
        resource = await Discovery(kube).resolve(ResourceRef.parse(crd))
        assert resource is not None
        watcher = Watcher(kube, resource, namespace, settings=WatchingSettings(), shard_selector=selector(0, 2),
                          deliver=lambda kind, body: delivered.update({body["metadata"]["name"]:
                                                                       body["metadata"]["uid"]}))
        task = asyncio.create_task(watcher.run())
        try:
            await eventually(lambda: watcher.listed.is_set())
            uids = {}
            for i in range(6):
                uids[f"new-{i}"] = (await create_kex(api, namespace, f"new-{i}"))["metadata"]["uid"]
            mine = {n for n, u in uids.items() if shard_of(u, 2) == 0}
            await eventually(lambda: set(delivered) >= mine)
            await asyncio.sleep(1.0)  # the others' events would have come by now
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            opd_logger.remove(sink)
    return delivered


async def test_a_stream_asks_its_shard_selector_and_keeps_to_it_where_the_server_echoes_it(
        control_plane: LocalControlPlane, tmp_path: Path, api: client.ApiClient, crd: str, namespace: str) -> None:
    """Through the emulating proxy: the stream's LIST and WATCH bring only the objects of its range."""
    pki = control_plane.ca_file.parent
    with FaultProxy("127.0.0.1", control_plane.apiserver_port, shards=ShardEmulation(
            str(pki / "apiserver.crt"), str(pki / "apiserver.key"), str(control_plane.ca_file))) as proxy:
        config = control_plane.write_kubeconfig(tmp_path / "kubeconfig", server=f"https://{proxy.address}")
        said: list[str] = []
        delivered = await watch_half(config, crd, namespace, api, said)
    assert delivered and all(shard_of(uid, 2) == 0 for uid in delivered.values()), delivered
    assert proxy.sharding.held_back > 0 and set(proxy.sharding.asked) == {selector(0, 2)}
    assert not [m for m in said if "did not apply the shardSelector" in m], said


async def test_a_stream_whose_server_ignores_its_shard_selector_says_so_once_and_goes_on(
        kubeconfig: Path, api: client.ApiClient, crd: str, namespace: str) -> None:
    """The 1.20 apiserver directly: it ignores the parameter and sends every object; the stream says
    so once (its events are still checked against the shards held, by the processor) and goes on."""
    said: list[str] = []
    delivered = await watch_half(kubeconfig, crd, namespace, api, said)
    assert {shard_of(uid, 2) for uid in delivered.values()} == {0, 1}, delivered  # every object came
    assert sum("did not apply the shardSelector" in m for m in said) == 1, said


# -- parsing what the server says, and what opd asks ---------------------------------------------------------

def test_the_selector_of_the_shards_held_is_one_range_per_run_and_covers_exactly_them() -> None:
    """One range per run of adjacent shards, joined by ``||``; parsed by the proxy's own reading of the
    KEP, the ranges hold exactly the hashes of the shards held."""
    assert held_selector([0, 1, 2], 6).count("shardRange") == 1
    assert held_selector([0, 2, 3, 5], 6).count("||") == 2
    assert held_selector([5], 6).endswith("'0x10000000000000000')")
    uids = [f"{i:08x}-0000-4000-8000-{i * 7919:012x}" for i in range(600)]
    for held in ([], [0], [1, 4], [0, 1, 2, 3, 4, 5], [2, 3, 5]):
        ranges = parse_shard_selector(held_selector(held, 6))
        inside = {u for u in uids if any(lo <= fnv1a_64(u) < hi for _, lo, hi in ranges)}
        assert inside == {u for u in uids if shard_of(u, 6) in held}, held
    # Many runs: the narrowest gaps are asked too (a superset), the query stays bounded.
    many = held_selector(range(0, 1024, 2), 1024)
    assert many.count("shardRange") <= 32 and len(many) < 4096


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["metadata", "shardInfo", "selector", "items", "x"]), inner, max_size=4),
                    max_leaves=12))
def test_shard_info_of_any_shape_is_read_bounded(answer: object) -> None:
    """Whatever a LIST's answer holds, reading its shardInfo raises nothing and yields a bounded string
    or None; only an exact echo counts as honoured."""
    echoed = echoed_shards(answer)
    assert echoed is None or (isinstance(echoed, str) and 0 < len(echoed) <= MAX_SHARD_INFO)
    asked = selector(0, 3)
    assert honours_shards(answer, asked) == (echoed == asked)


@pytest.mark.parametrize("info", [
    {"selector": "x" * (MAX_SHARD_INFO + 1)}, {"selector": ""}, {"selector": ["a"]}, "yes", ["selector"], None,
])
def test_shard_info_not_a_bounded_string_counts_as_none(info: object) -> None:
    assert echoed_shards({"metadata": {"resourceVersion": "1", "shardInfo": info}, "items": []}) is None
    assert echoed_shards({"metadata": {"shardInfo": {"selector": "s"}}}) == "s"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_the_proxy_refuses_what_is_not_a_shard_selector(text: str) -> None:
    """The emulation parses as strictly as a server: anything else is a ValueError (a 400), never a crash."""
    try:
        ranges = parse_shard_selector(text)
    except ValueError:
        return
    assert ranges and all(0 <= lo < hi <= 1 << 64 for _, lo, hi in ranges)
