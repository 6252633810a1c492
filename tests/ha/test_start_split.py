"""Replicas started together over objects that exist already share them (issue #21 item 3), on the
real apiserver: three ``opd run --ha shards`` processes, each object's result naming the process
that handled it (``status.create_fn.by``: its pid), and a handler log counting every run."""

from __future__ import annotations

import asyncio
import collections
import re
import time
from pathlib import Path

from chaos.scenarios import QUICK, HaTimings, Replicas, Stage, results_by

from opd.localcluster import LocalControlPlane
from opd.testing.chaos import Kube, LoadGenerator, handlers_source, wait_until

OBJECTS = 300


async def test_three_replicas_started_together_over_existing_objects_each_handle_a_share(
        control_plane: LocalControlPlane, tmp_path: Path, crd: str) -> None:
    """Three replicas of 6 shards started at once over 900 existing objects: one handled all 900, the
    others none (the first claimed every shard before the others' member entries existed). Now each
    settles first: over 300 objects each handles 15-55 %, none is lost, none runs twice."""
    async with await Kube.connect(control_plane.kubeconfig) as kube:
        stage = Stage(control_plane, kube, tmp_path, QUICK)
        ns = await stage.namespace("startsplit")
        load = LoadGenerator(kube, ns, rate=300, concurrency=16)
        await load.create([f"pre-{i:03d}" for i in range(OBJECTS)])
        uids = set(load.uids.values())
        assert len(uids) == OBJECTS
        reps = Replicas(stage, ns, "startsplit", mode="shards", shards=6, timings=HaTimings(15.0, 10.0, 2.0),
                        source=lambda log: handlers_source(log, create=True))
        try:
            for name in ("p1", "p2", "p3"):
                reps.start(name)

            async def all_written() -> bool:
                return set(await results_by(stage, ns)) >= uids

            assert await wait_until(all_written, timeout=120, interval=0.5) is not None
            await asyncio.sleep(3.0)  # a second run (after a hand-over) would show by now
            by = await results_by(stage, ns)
            runs = reps.log.counts("create")
            names = reps.names()  # pid -> replica
            split = collections.Counter(names.get(pid, str(pid)) for uid, pid in by.items() if uid in uids)
            assert not [uid for uid in uids if runs[uid] != 1], runs.most_common(3)  # each run once
            assert sum(split.values()) == OBJECTS and set(split) <= {"p1", "p2", "p3"}, split
            shares = {name: split[name] / OBJECTS for name in ("p1", "p2", "p3")}
            assert all(0.15 <= share <= 0.55 for share in shares.values()), shares
            assert all("opd: ha: settled after" in op.output() for op in reps.procs.values())
            # The local API server (1.20) ignores shardSelector: the shard label is used, and said.
            assert all("label filtering:" in op.output() for op in reps.procs.values())
        finally:
            stage.stop_all()


async def test_a_replica_joining_a_busy_one_takes_its_share_of_the_backlog(
        control_plane: LocalControlPlane, tmp_path: Path, crd: str) -> None:
    """One replica holds both shards over a backlog (400 objects, handlers of 0.5 s: half a minute of
    work alone); a second joins: the shard it gets leaves the first at once for what is only
    queued there (what is in process finishes and writes first), so the second handles a good part
    of the backlog instead of waiting for it to drain; nothing is lost or run twice."""
    async with await Kube.connect(control_plane.kubeconfig) as kube:
        stage = Stage(control_plane, kube, tmp_path, QUICK)
        ns = await stage.namespace("backlog")
        load = LoadGenerator(kube, ns, rate=300, concurrency=16)
        await load.create([f"todo-{i:03d}" for i in range(400)])
        uids = set(load.uids.values())
        reps = Replicas(stage, ns, "backlog", mode="shards", shards=2, timings=HaTimings(4.0, 3.0, 1.0),
                        source=lambda log: handlers_source(log, create=True, delay=0.5))
        try:
            first = reps.start("b1")
            assert await wait_until(lambda: len(reps.log.uids("create")) >= 20, timeout=60) is not None
            joined = time.time()
            second = reps.start("b2")
            assert await wait_until(lambda: reps.log.uids("create") >= uids, timeout=180, interval=0.5) is not None
            await asyncio.sleep(2.0)
            runs = reps.log.counts("create-start")
            assert not [uid for uid in uids if runs[uid] != 1], runs.most_common(3)
            by = reps.runs_by(uids=uids)
            b2_first = min(e.at for e in reps.log.entries("create-start") if e.pid == second.pids[-1])
            done_at = max(e.at for e in reps.log.entries("create"))
            print(f"split {dict(by)}; b2's first run {b2_first - joined:.1f} s after it started; all done "
                  f"{done_at - joined:.1f} s after; hand-over: {re.findall(r'released backlog-.*', first.output())}")
            assert by["b2"] >= 0.2 * len(uids), by
            assert "work still in process after" not in first.output()  # the hand-over did not time out
        finally:
            stage.stop_all()
