"""Replicas started together over objects that exist already share them (issue #21 item 3), on the
real apiserver: three ``opd run --ha shards`` processes, each object's result naming the process
that handled it (``status.create_fn.by``: its pid), and a handler log counting every run."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from chaos.scenarios import QUICK, HaTimings, Replicas, Stage

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

            async def results() -> dict[str, int]:
                """uid -> the pid its result names, for the objects whose result is written."""
                found = {}
                for body in (await stage.objects(ns)).values():
                    by = ((body.get("status") or {}).get("create_fn") or {}).get("by")
                    if isinstance(by, int):
                        found[body["metadata"]["uid"]] = by
                return found

            async def all_written() -> bool:
                return set(await results()) >= uids

            assert await wait_until(all_written, timeout=120, interval=0.5) is not None
            await asyncio.sleep(3.0)  # a second run (after a hand-over) would show by now
            by = await results()
            runs = reps.log.counts("create")
            names = reps.names()  # pid -> replica
            split = collections.Counter(names.get(pid, str(pid)) for uid, pid in by.items() if uid in uids)
            assert not [uid for uid in uids if runs[uid] != 1], runs.most_common(3)  # each run once
            assert sum(split.values()) == OBJECTS and set(split) <= {"p1", "p2", "p3"}, split
            shares = {name: split[name] / OBJECTS for name in ("p1", "p2", "p3")}
            assert all(0.15 <= share <= 0.55 for share in shares.values()), shares
            assert all("opd: ha: settled after" in op.output() for op in reps.procs.values())
        finally:
            stage.stop_all()
