"""READY of ``opd start`` with K plugins over N objects that no plugin has handled yet (issue #22 item 3).

For each N (default 0, 5 000 and 20 000): a fresh namespace of N objects, then ``opd start`` with K
generated plugins (one ``on.create`` handler each, all on that one resource and namespace: one shared
stream), and READY=1 on a stand-in for systemd's socket, in seconds after its start; with what STATUS=
said then (the backlog figure). Beside it, how long this process takes to LIST those N objects alone
(pages of 500, as opd asks for them): the API server's answer time, under the same load. The daemon
is stopped once READY=1 came (its backlog is the backlog scenario's business, not this one's).

    python tests/bench/ready.py [--sizes 0,5000,20000] [--plugins 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import children
from backlog import prepare
from kubeapi import Api, ensure_crd, objects_path
from many_plugins import last_list, spawn_daemon, write_plugins
from notify import NotifySocket
from stage import Stage

from opd.localcluster import LocalControlPlane

READY_TIMEOUT = 300.0


async def list_seconds(api: Api, namespace: str) -> tuple[float, int]:
    """How long a paged LIST of the namespace's objects takes from here, and how many it held."""
    started, count = time.monotonic(), 0
    async for items, _ in api.list_all(objects_path(namespace)):
        count += len(items)
    return time.monotonic() - started, count


async def one(stage: Stage, plugins_dir: Path, names: list[str], n: int) -> None:
    namespace, creation = await prepare(stage, f"ready-{len(names)}-{n}", n)
    await stage.quiesce()
    listing, count = await list_seconds(stage.api, namespace)
    await stage.quiesce()
    async with NotifySocket(stage.log_path("notify.sock")) as systemd:
        child = spawn_daemon(stage, plugins_dir, names, namespace, notify_socket=systemd.path)
        try:
            ready_at = await systemd.wait("READY=1", timeout=READY_TIMEOUT, alive=child.alive)
            if ready_at is None:
                print(f"  N={n}: no READY=1 within {READY_TIMEOUT:.0f}s ({child.describe_exit()})\n{child.tail()}",
                      flush=True)
                return
            said = next(m for at, m in systemd.received if at == ready_at)
            status = next((line[7:] for line in said.splitlines() if line.startswith("STATUS=")), "")
            received = last_list(child.log, ready_at)
            inside = (f"; in the daemon the LIST took {received[1]:.2f}s and READY=1 came "
                      f"{received[0]:.2f}s after its last page" if received else "")
            print(f"  opd start, {len(names)} plugins, N={n} (created in {creation:.0f}s): READY=1 "
                  f"{ready_at - child.started_at:.2f}s after its start{inside}; a LIST of the {count} objects "
                  f"alone took {listing:.2f}s; STATUS={status}", flush=True)
        finally:
            child.stop()


async def bench(cp: LocalControlPlane, workdir: Path, sizes: list[int], count: int) -> None:
    kubeconfig = cp.write_kubeconfig(workdir / "kubeconfig")
    async with Api(kubeconfig) as api:
        await ensure_crd(api)
        pids = {name: pid for name, pid in cp.pids.items() if name in ("kube-apiserver", "etcd")}
        stage = Stage(api=api, kubeconfig=kubeconfig, workdir=workdir, server_pids=pids)
        plugins_dir = workdir / "plugins"
        names = write_plugins(plugins_dir, count)
        try:
            for n in sizes:
                await one(stage, plugins_dir, names, n)
        finally:
            children.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,5000,20000", help="comma-separated numbers of objects")
    parser.add_argument("--plugins", type=int, default=20)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    cp = LocalControlPlane(controller_manager=False)
    with tempfile.TemporaryDirectory(prefix="opd-bench-ready-") as tmp:
        try:
            print(f"starting the local control plane (load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs)...", flush=True)
            cp.start()
            asyncio.run(bench(cp, Path(tmp), sizes, args.plugins))
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process started", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            cp.stop()
    print(f"load average at the end: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
