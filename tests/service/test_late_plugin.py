"""`opd start` with two plugins on one shared watch stream, the second starting 2 s after the first while
the LIST of a couple of thousand objects is still being delivered (throttled by the first plugin's queue):
both handle every object (issue #11, item 7).

The plugins are given to `opd start` without pip: a module and a ``.dist-info`` with their entry points in a
directory on the daemon's PYTHONPATH (as tests/bench/many_plugins.py does).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex
from kubernetes_asyncio import client

from opd.kube.api import KubeClient
from opd.kube.credentials import Login, load_configuration

N = 2000
DIST = "opd_late_plugins"
PLUGINS = '''"""Two plugins with one on.create handler each; the late one's startup takes 2 s."""
import asyncio

import opd


class Plugin:
    def __init__(self, delay):
        self.delay = delay

    @opd.hookimpl
    def opd_register(self, registry):
        delay = self.delay
        if delay:
            @opd.on.startup(registry=registry)
            async def start_late(**_):
                await asyncio.sleep(delay)  # the shared stream is listing meanwhile

        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(**_):
            return "done"

    @opd.hookimpl
    def opd_configure(self, settings):
        settings.posting.enabled = False
        # Its queue holds about 100 objects before a LIST waits for room: the shared list goes at its pace.
        settings.watching.list_page_size = 50


early = Plugin(0)
late = Plugin(2)
'''


def _write_plugins(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{DIST}.py").write_text(PLUGINS)
    info = root / f"{DIST}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST.replace('_', '-')}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[opd.plugins]\nearly = {DIST}:early\nlate = {DIST}:late\n")
    return root


def _start(tmp_path: Path, kubeconfig: Path, namespace: str) -> subprocess.Popen[bytes]:
    config = tmp_path / "opd.toml"
    config.write_text(f'[opd]\nnamespaces = ["{namespace}"]\nlog_format = "text"\nshutdown_timeout = 3\n\n'
                      f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n\n[plugins]\nenable = ["early", "late"]\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
    env.update(PYTHONPATH=str(_write_plugins(tmp_path / "plugins")), PYTHONUNBUFFERED="1")
    with (tmp_path / "opd.log").open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "opd", "start", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)


async def _create_many(api: client.ApiClient, namespace: str, n: int) -> None:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            await create_kex(api, namespace, f"kex-{i:05d}")

    await asyncio.gather(*(one(i) for i in range(n)))


async def _handled(kube: KubeClient, namespace: str) -> dict[str, int]:
    """How many objects carry each plugin's result (at .status.<plugin>.create_fn)."""
    counts = {"early": 0, "late": 0, "objects": 0}
    query: dict[str, Any] = {"limit": 500}
    while True:
        page = await kube.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfexamples", **query)
        for item in page["items"]:
            status = item.get("status") or {}
            counts["objects"] += 1
            for plugin in ("early", "late"):
                counts[plugin] += "create_fn" in (status.get(plugin) or {})
        if not page["metadata"].get("continue"):
            return counts
        query["continue"] = page["metadata"]["continue"]


@pytest.mark.timeout(600)
async def test_a_plugin_starting_late_handles_every_object(
    kubeconfig: Path, api: client.ApiClient, crd: str, namespace: str, tmp_path: Path
) -> None:
    await _create_many(api, namespace, N)
    cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
    async with KubeClient(cfg, source=source) as kube:
        proc = _start(tmp_path, kubeconfig, namespace)
        try:
            counts, last, changed = await _handled(kube, namespace), None, time.monotonic()
            # Until both are done, or nothing has changed for 20 s (the lost objects never come).
            while not (counts["early"] == counts["late"] == N) and time.monotonic() - changed < 20:
                assert proc.poll() is None, (tmp_path / "opd.log").read_text(errors="replace")[-3000:]
                await asyncio.sleep(2)
                counts = await _handled(kube, namespace)
                if counts != last:
                    last, changed = counts, time.monotonic()
            print(f"objects handled of {N}: {counts}")
            assert counts == {"objects": N, "early": N, "late": N}
            assert "Traceback" not in (tmp_path / "opd.log").read_text(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
