"""Replicas of the daemon ([ha]) on the real apiserver: two ``opd start`` supervisors, each in its
own thread and loop, with leader election. One leads and handles; the other stands by (its watches
listed, no handler run); /readyz, /metrics and STATUS= say which is which; stopping the leader
releases its Lease, and the standby leads within seconds, handling what came meanwhile.

The chaos scenarios (tests/chaos/scenarios.py, reduced in test_chaos.py) run ``opd run --ha`` as
processes: kill -9, SIGTERM, a blackholed leader, shards."""

from __future__ import annotations

import asyncio
import datetime
import math
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from chaos.scenarios import QUICK, HaTimings, Replicas, Stage
from helpers import daemon_plugins
from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client
from loguru import logger

import opd
from opd.engine import ownership as engine_ownership
from opd.engine.operation import Operation
from opd.ha import shard_of
from opd.kube.credentials import Login
from opd.localcluster import LocalControlPlane
from opd.orchestration import Memo
from opd.registry import OperatorRegistry
from opd.service import config as daemon_config
from opd.service.supervisor import Supervisor
from opd.settings import OperatorSettings
from opd.testing.chaos import Kube, LoadGenerator, handlers_source, wait_until

TIMINGS = "lease_duration = 4\nrenew_deadline = 3\nretry_period = 1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """A supervisor in a thread of its own, as ``opd start`` runs it; stopped as SIGTERM would."""

    def __init__(self, tmp_path: Path, kubeconfig: Path, namespace: str, identity: str,
                 isolation: str = "shared") -> None:
        self.port = _free_port()
        path = tmp_path / f"{identity}.toml"
        path.write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3
listen = "127.0.0.1:{self.port}"

[kubernetes]
kubeconfig = "{kubeconfig}"

[ha]
mode = "leader"
lease = "daemon"
lease_namespace = "{namespace}"
identity = "{identity}"
{TIMINGS}

[plugins.recorder_a]
label = "{identity}"
isolation = "{isolation}"
""")
        entry = metadata.EntryPoint("recorder_a", "helpers.daemon_plugins:recorder_a", "opd.plugins")
        self.supervisor = Supervisor(daemon_config.load(path), env={}, entry_points=[entry])
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"daemon-{identity}", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
            await self.supervisor.run(self.stop_event)

        try:
            asyncio.run(run())
        except BaseException as exc:
            self.error = exc

    def start(self) -> Daemon:
        self.thread.start()
        return self

    def stop(self) -> float:
        """Seconds the stop took."""
        began = time.monotonic()
        if self.loop is not None and self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the daemon did not stop"
        return time.monotonic() - began

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}{path}") as response:
            body = await (response.json() if path != "/metrics" else response.text())
            return response.status, body

    async def role(self) -> str | None:
        """Its role as /readyz says it, once it is ready."""
        try:
            status, body = await self.get("/readyz")
        except aiohttp.ClientError:
            return None
        return body.get("ha", {}).get("role") if status == 200 else None

    def is_(self, role: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await self.role() == role
        return check


@pytest.fixture
def daemons(tmp_path: Path, kubeconfig: Path, namespace: str, crd: str) -> Iterator[dict[str, Daemon]]:
    daemon_plugins.CALLS.clear()
    # The second runs its plugin in a thread of its own: its view of the Lease lives in another loop.
    made = {"one": Daemon(tmp_path, kubeconfig, namespace, "one"),
            "two": Daemon(tmp_path, kubeconfig, namespace, "two", isolation="thread")}
    try:
        yield made
    finally:
        for daemon in made.values():
            if daemon.thread.is_alive():
                daemon.stop()


def _handled_by(label: str) -> set[str]:
    return {name for who, name in daemon_plugins.CALLS if who == label}


async def _lease(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    lease = await client.CoordinationV1Api(api).read_namespaced_lease("daemon", namespace)
    return {"holder": lease.spec.holder_identity or "", "transitions": lease.spec.lease_transitions}


async def test_one_daemon_leads_the_other_stands_by_and_takes_over_when_it_stops(
        daemons: dict[str, Daemon], api: client.ApiClient, namespace: str) -> None:
    one, two = daemons["one"].start(), daemons["two"]
    await eventually(one.is_("leader"), timeout=30)
    two.start()
    await eventually(two.is_("standby"), timeout=30)  # ready: a warm standby passes /readyz

    for i in range(5):
        await create_kex(api, namespace, f"led-{i}")
    await eventually(lambda: len(_handled_by("one")) == 5, timeout=30)
    await asyncio.sleep(1.5)  # a standby that ran anything would show by now
    assert _handled_by("two") == set()
    assert (await _lease(api, namespace))["holder"] == "one"

    _, metrics = await one.get("/metrics")
    assert 'opd_ha_leader{identity="one",mode="leader"} 1.0' in metrics
    _, metrics = await two.get("/metrics")
    assert 'opd_ha_leader{identity="two",mode="leader"} 0.0' in metrics
    assert one.supervisor.snapshot().summary().endswith("; leader")  # STATUS= for systemd, and the log
    assert two.supervisor.snapshot().summary().endswith("; standby")

    stopped = time.monotonic()
    one.stop()  # as SIGTERM: the plugins stop, then the Lease is released
    await eventually(two.is_("leader"), timeout=10)
    took = time.monotonic() - stopped
    assert took < 3.0 + 3.0  # its own stop (plugins: up to 3 s) and the takeover (well under lease_duration)
    lease = await _lease(api, namespace)
    assert lease["holder"] == "two" and lease["transitions"] == 1

    for i in range(3):
        await create_kex(api, namespace, f"then-{i}")
    await eventually(lambda: _handled_by("two") == {f"then-{i}" for i in range(3)}, timeout=30)
    assert len(_handled_by("one")) == 5  # and none of the first five ran again
    two.stop()
    assert (await _lease(api, namespace))["holder"] == ""  # the last one released it too
    assert one.error is None and two.error is None


async def _in_both_shards(kube: Kube, namespace: str, stem: str) -> LoadGenerator:
    """Objects, at least two in each of two shards (uids are the server's: created until they are)."""
    load = LoadGenerator(kube, namespace, rate=50)
    while min(sum(1 for uid in load.uids.values() if shard_of(uid, 2) == k) for k in (0, 1)) < 2:
        await load.create([f"{stem}-{len(load.uids) + i}" for i in range(3)])
    return load


async def test_a_shard_moves_only_after_its_work_in_flight_is_done(control_plane: LocalControlPlane,
                                                                   tmp_path: Path, crd: str) -> None:
    """One replica holds both shards and runs slow handlers; a second joins: the first releases a
    shard only once those handlers have finished and written; the second runs none of them again."""
    async with await Kube.connect(control_plane.kubeconfig) as kube:
        stage = Stage(control_plane, kube, tmp_path, QUICK)
        ns = await stage.namespace("handover")
        reps = Replicas(stage, ns, "handover", mode="shards", shards=2, timings=HaTimings(4.0, 3.0, 1.0),
                        source=lambda log: handlers_source(log, create=True, delay=8.0))
        try:
            first = reps.start("h1")
            await first.wait_ready()
            assert await wait_until(lambda: reps.balanced(["h1"]), timeout=30) is not None
            load = await _in_both_shards(kube, ns, "slow")
            uids = set(load.uids.values())
            assert await wait_until(lambda: reps.log.uids("create-start") >= uids, timeout=30) is not None
            began = time.time()
            reps.start("h2")
            assert await wait_until(lambda: reps.balanced(["h1", "h2"]), timeout=60, interval=0.2) is not None
            moved = time.time()
            assert await wait_until(lambda: reps.log.uids("create") >= uids, timeout=30) is not None
            await asyncio.sleep(2.0)  # a second run would start now
            counts = reps.log.counts("create")
            assert all(counts[uid] == 1 for uid in uids), counts
            assert reps.runs_by(uids=uids) == {"h1": len(uids)}
            leases = await reps.leases()
            taken = {shard: datetime.datetime.fromisoformat(spec["acquireTime"]).timestamp()
                     for shard in (0, 1) if (spec := leases[f"handover-{shard}"]).get("holderIdentity") == "h2"}
            assert len(taken) == 1
            (shard, acquired), = taken.items()
            ends = [e.at for e in reps.log.entries("create") if shard_of(e.uid, 2) == shard]
            assert ends and acquired > max(ends)  # h2 took the shard after h1's handlers of it were done
            released = re.findall(r"released handover-\d after (\d+\.\d)s", first.output())
            assert released and float(released[0]) >= 1.0, first.output()[-2000:]
            assert moved - began < 20.0
        finally:
            stage.stop_all()


async def test_an_operator_relisting_before_its_first_list_is_done_still_gets_ready(
        kubeconfig: Path, namespace: str, crd: str, api: client.ApiClient) -> None:
    """A replica may gain ownership while its watches are still listing: the relist (new
    subscriptions) must carry the readiness the operator waits for (it waited forever before)."""
    handled: list[str] = []
    registry = OperatorRegistry()

    @opd.on.create("kopfexamples", registry=registry)
    def record(name: str, **_: Any) -> None:
        handled.append(name)

    await create_kex(api, namespace, "before")
    ready = asyncio.Event()
    operation = Operation(registry=registry, settings=OperatorSettings(), memo=Memo(), namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(kubeconfig)), on_ready=ready.set)
    running = asyncio.create_task(operation.run())
    try:
        while not operation.subscriptions:  # noqa: ASYNC110 - the very first loop turn it has them
            await asyncio.sleep(0)
        for _ in range(3):  # the readiness task begins to wait for them; their LIST is not back yet
            await asyncio.sleep(0)
        assert not any(sub.listed.is_set() for sub in operation.subscriptions.values())
        operation.relist()
        await asyncio.wait_for(ready.wait(), 15)
        await create_kex(api, namespace, "after")
        await eventually(lambda: sorted(handled) == ["after", "before"])
        await asyncio.sleep(1.0)
        assert sorted(handled) == ["after", "before"]  # listed twice, handled once
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def _daemon_source(log: Path) -> str:
    return handlers_source(log, create=False) + '''

@opd.daemon(RESOURCE)
async def watcher(uid, name, stopped, **_):
    record(LOG, "daemon-start", uid, name)
    await stopped.wait()
    record(LOG, "daemon-stop", uid, name)
    return {"stopped": os.getpid()}
'''


async def test_daemons_of_a_shard_handed_over_stop_and_write_before_it_moves(
        control_plane: LocalControlPlane, tmp_path: Path, crd: str) -> None:
    """A shard handed over stops its daemons first, while their last outcome may still be written
    (it was refused as no longer this replica's, and the daemon's task died of it); then the new
    owner starts them."""
    async with await Kube.connect(control_plane.kubeconfig) as kube:
        stage = Stage(control_plane, kube, tmp_path, QUICK)
        ns = await stage.namespace("daemons")
        reps = Replicas(stage, ns, "daemons", mode="shards", shards=2, timings=HaTimings(4.0, 3.0, 1.0),
                        source=_daemon_source)
        try:
            first = reps.start("d1")
            await first.wait_ready()
            assert await wait_until(lambda: reps.balanced(["d1"]), timeout=30) is not None
            load = await _in_both_shards(kube, ns, "daemon")
            uids = set(load.uids.values())
            assert await wait_until(lambda: reps.log.uids("daemon-start") >= uids, timeout=30) is not None
            second = reps.start("d2")
            assert await wait_until(lambda: reps.balanced(["d1", "d2"]), timeout=60, interval=0.2) is not None
            moved = {uid for uid in uids if f"daemons-{shard_of(uid, 2)}" in
                     {name for name, holder in (await reps.holders()).items() if holder == "d2"}}
            assert moved

            def started_by_d2() -> bool:
                return {e.uid for e in reps.log.entries("daemon-start") if e.pid == second.pids[-1]} >= moved

            assert await wait_until(started_by_d2, timeout=30) is not None
            stops = {e.uid: e for e in reps.log.entries("daemon-stop")}
            assert set(stops) == moved and all(e.pid == first.pids[-1] for e in stops.values())
            objects = {o["metadata"]["uid"]: o for o in (await stage.objects(ns)).values()}
            written = {uid for uid in moved if (objects[uid].get("status") or {}).get("watcher") == {
                "stopped": first.pids[-1]}}
            assert written == moved  # each stopped daemon's last outcome reached its object
            assert "no longer this replica's" not in first.output()
            assert "never retrieved" not in first.output()
        finally:
            stage.stop_all()

class _Flip:
    """An Ownership that owns everything until flipped (a fence, without a disown yet)."""

    def __init__(self) -> None:
        self.mine = True

    def owns(self, uid: str) -> bool:
        return self.mine

    def may_write(self, uid: str) -> bool:
        return self.mine

    def time_left(self, uid: str) -> float:
        return math.inf if self.mine else 0.0


async def test_a_timer_fenced_between_its_run_and_its_write_keeps_its_task(
        kubeconfig: Path, namespace: str, crd: str, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease lost while a timer runs: its write is refused inside opd (Fenced). The outcome is
    dropped and said; the timer's task must not die of it (an unretrieved exception: under opd
    start, a crash of the plugin)."""
    runs: list[float] = []
    registry = OperatorRegistry()

    @opd.on.timer("kopfexamples", interval=0.2, registry=registry)
    def tick(**_: Any) -> str:
        runs.append(time.monotonic())
        return "same"  # the same result each time: no change, no event, no disown

    ownership = _Flip()
    monkeypatch.setattr(engine_ownership, "_quiet_until", 0.0)  # no drop said by an earlier test of this process
    warned: list[str] = []
    sink = logger.add(lambda m: warned.append(m.record["message"]) if "dropped" in m.record["message"] else None,
                      level="WARNING")
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    operation = Operation(registry=registry, settings=OperatorSettings(), memo=Memo(), namespaces=[namespace],
                          clusterwide=False, login=Login(kubeconfig=str(kubeconfig)), ownership=ownership)
    running = asyncio.create_task(operation.run())
    try:
        await create_kex(api, namespace, "ticking")
        await eventually(lambda: len(runs) >= 3, timeout=20)
        ownership.mine = False
        flipped = len(runs)
        await asyncio.sleep(1.5)
        import gc
        gc.collect()  # a dead task's exception is reported when it is released
        await asyncio.sleep(0.1)
        assert len(runs) >= flipped + 3  # it keeps running (its outputs dropped) until disowned
        assert not errors
        assert len(warned) == 1, warned  # said once, not at every run
    finally:
        logger.remove(sink)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
