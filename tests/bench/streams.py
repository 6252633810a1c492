"""Scenario 5, idle cost: opd watching S empty namespaces (S quiet watch streams) for at least two watch timeouts.

What the quiet streams cost the API server, from its own metrics: every request opd made as the API
server took it in (authenticated_user_requests, less the bench's scrape and the API server's own
loopback requests), and of those what apiserver_request_total shows by verb (it leaves out /version
and discovery, and counts a WATCH when it ends). New connections (a TLS handshake each) are counted by
a loopback TCP proxy between opd and the API server (``opd.testing.proxy.FaultProxy``, only relaying
here): kube-apiserver counts no handshakes.

A quiet stream costs a WATCH request each time its server-side timeout ends (opd's
``settings.watching.server_timeout``, 300 s unless ``--watch-timeout`` sets it for this run): the window
lasts at least two of them, so that every stream's re-opens fall in it (a window shorter than one timeout
sees none). Costs are reported per stream (the requests on the watched resource: WATCH, LIST) and per
cluster (the rest: opd's liveness probe, ``GET /version`` every ``probe_interval``, and discovery), never
one divided by the other's count.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from children import Child
from contenders import OPD, WATCH_TIMEOUT_ENV
from kubeapi import PLURAL, ServerCounts, create_namespace, server_counts
from stage import Stage, wait_quiet

from opd.testing.proxy import FaultProxy

READY_LINE = "opd: ready"  # opd's log line once every watch has listed its objects
READY_TIMEOUT = 120.0


def proxied_kubeconfig(source: Path, dest: Path, address: str) -> Path:
    """The bench's kubeconfig with the server at ``address`` (the proxy; the certificate names 127.0.0.1)."""
    config = json.loads(source.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://{address}"
    dest.write_text(json.dumps(config))
    dest.chmod(0o600)
    return dest


async def wait_log(child: Child, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.alive():
        try:
            if text in child.log.read_text(errors="replace"):
                return True
        except OSError:
            pass
        await asyncio.sleep(0.2)
    return False


def _on_resource(key: str) -> bool:
    """A key of apiserver_request_total ("VERB resource[/sub] code") for the watched resource."""
    return key.split(" ")[1].split("/")[0] == PLURAL


def costs(window: ServerCounts, accepted: int, streams: int, seconds: float) -> dict[str, Any]:
    """Per minute: in all, per quiet stream (the requests on the watched resource, divided by the streams)
    and per cluster (every other request: the liveness probe, discovery), from the difference of two
    scrapes around the window (no other scrape between them) and the connections the proxy accepted in it.
    """
    per_minute = 60 / seconds
    total = window.clients(own_scrapes=1)
    listed = sum(window.requests.values())
    watches = sum(count for key, count in window.requests.items() if key.startswith("WATCH "))
    on_streams = sum(count for key, count in window.requests.items() if _on_resource(key))
    return {"requests_per_min": total * per_minute, "unlisted_per_min": (total - listed) * per_minute,
            "watch_per_min": watches * per_minute, "connections_per_min": accepted * per_minute,
            "stream_requests_per_stream_min": on_streams * per_minute / streams,
            "cluster_requests_per_min": (total - on_streams) * per_minute,
            "watch_per_stream_min": watches * per_minute / streams,
            "connections_per_stream_min": accepted * per_minute / streams}


async def run_streams(stage: Stage, streams: int, minutes: float, watch_timeout: int) -> list[dict[str, Any]]:
    what = f"streams S={streams}"
    namespaces = [await create_namespace(stage.api, f"quiet-{i:03d}") for i in range(streams)]
    server = urlsplit(stage.api.server)
    proxy = FaultProxy(server.hostname or "127.0.0.1", server.port or 443)
    proxy.start()
    child: Child | None = None
    try:
        kubeconfig = proxied_kubeconfig(stage.kubeconfig, stage.log_path("kubeconfig-proxied"), proxy.address)
        await stage.quiesce()
        child = stage.spawn(OPD, namespaces, kubeconfig=kubeconfig, env={WATCH_TIMEOUT_ENV: str(watch_timeout)})
        if not await wait_log(child, READY_LINE, READY_TIMEOUT):
            return [{"scenario": "streams", "contender": "opd", "streams": streams,
                     **stage.fail(what, f"not ready within {READY_TIMEOUT:.0f}s", child)}]
        ready = time.monotonic() - child.started_at
        await wait_quiet(child.cpu_seconds, quiet=0.05, window=2.0, least=4.0, most=30.0)
        print(f"  {what}: opd ready in {ready:.1f}s; watching {streams} quiet namespaces for {minutes:g} min "
              f"(watch timeout {watch_timeout} s: {minutes * 60 / watch_timeout:.1f} of them)", flush=True)
        before, accepted, cpu, started = (await server_counts(stage.api), proxy.accepted, child.cpu_seconds(),
                                          time.monotonic())
        for _ in range(round(minutes * 60)):  # while nothing happens, looking at opd every second
            if not child.alive():
                break
            await asyncio.sleep(1.0)
        after = await server_counts(stage.api)  # nothing else scrapes in between: costs() counts on it
        seconds = time.monotonic() - started
        if not child.alive():
            return [{"scenario": "streams", "contender": "opd", "streams": streams,
                     **stage.fail(what, "opd exited while idle", child)}]
        window = after - before
        result = {"scenario": "streams", "contender": "opd", "streams": streams, "seconds": seconds,
                  "watch_timeout": watch_timeout,
                  "ready_s": ready, "open_watches": [before.watches_open.get(PLURAL, 0),
                                                     after.watches_open.get(PLURAL, 0)],
                  "cpu_s_per_min": (child.cpu_seconds() - cpu) / (seconds / 60),
                  "rss_mb": child.usage().rss_mb, "connections": proxy.accepted - accepted,
                  "requests": dict(sorted(window.requests.items())),
                  **costs(window, proxy.accepted - accepted, streams, seconds)}
        print(f"  {what}: {result['requests_per_min']:.1f} requests/min ({result['watch_per_min']:.1f} WATCH), "
              f"{result['connections_per_min']:.1f} new connections/min; per stream "
              f"{result['stream_requests_per_stream_min']:.2f} requests/min (its WATCH and LIST), per cluster "
              f"{result['cluster_requests_per_min']:.1f} requests/min (liveness probe, discovery)", flush=True)
        return [result]
    finally:
        if child is not None:
            child.stop()
        proxy.stop()
