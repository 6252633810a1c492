"""The daemon's HTTP endpoint: /healthz, /readyz (per plugin, per watch) and /metrics.

Metrics are read from the engine's plain counters when Prometheus scrapes, so
the hot path pays nothing for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opd.daemon.config import Listen
from opd.errors import ConfigError

if TYPE_CHECKING:
    from opd.daemon.supervisor import Supervisor


class _Collector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("opd_handler_runs", "Handler runs by outcome.",
                                   labels=["plugin", "resource", "handler", "outcome"])
        seconds = CounterMetricFamily("opd_handler_seconds", "Time spent in handlers.",
                                      labels=["plugin", "resource", "handler"])
        depth = GaugeMetricFamily("opd_queue_depth", "Objects waiting to be processed.", labels=["plugin", "resource"])
        ready = GaugeMetricFamily("opd_plugin_ready", "1 when the plugin's watches have listed.", labels=["plugin"])
        restarts = CounterMetricFamily("opd_plugin_restarts", "Plugin operator restarts after a crash.",
                                       labels=["plugin"])
        for name, runner in self.supervisor.runners.items():
            ready.add_metric([name], 1.0 if runner.ready.is_set() else 0.0)
            restarts.add_metric([name], runner.restarts)
            for processor in (runner.operation.processors.values() if runner.operation else ()):
                resource = str(processor.resource)
                depth.add_metric([name, resource], len(processor.queue))
                for (handler, outcome), count in processor.metrics.runs.items():
                    runs.add_metric([name, resource, handler, outcome], count)
                for handler, total in processor.metrics.seconds.items():
                    seconds.add_metric([name, resource, handler], total)
        events = CounterMetricFamily("opd_watch_events", "Watch events received.", labels=["resource", "namespace"])
        errors = CounterMetricFamily("opd_watch_errors", "Watch stream failures.", labels=["resource", "namespace"])
        streams = GaugeMetricFamily("opd_watch_streams", "Open watch streams (shared by all plugins).")
        watchers = self.supervisor.cluster.hub.watchers if self.supervisor.cluster else []
        streams.add_metric([], len(watchers))
        for watcher in watchers:
            labels = [str(watcher.resource), watcher.namespace or ""]
            events.add_metric(labels, watcher.stats["events"])
            errors.add_metric(labels, watcher.stats["errors"])
        yield from (runs, seconds, depth, ready, restarts, events, errors, streams)


class HealthServer:
    def __init__(self, supervisor: Supervisor, listen: Listen) -> None:
        self.supervisor = supervisor
        self.listen = listen
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(supervisor))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.listen.host, self.listen.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"[opd].listen {self.listen}: cannot listen there: {exc.strerror or exc}") from exc

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _json(self, ok: bool, body: object) -> web.Response:
        return web.Response(status=200 if ok else 503, text=json.dumps(body, indent=2, default=str),
                            content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        report = self.supervisor.report()
        return self._json(report["healthy"], {"healthy": report["healthy"], "plugins": report["plugins"]})

    async def _readyz(self, request: web.Request) -> web.Response:
        report = self.supervisor.report()
        for name, runner in self.supervisor.runners.items():
            if runner.operation is not None and runner.ready.is_set():
                report["plugins"][name]["probes"] = await runner.operation.probe()
        return self._json(report["ready"], report)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
