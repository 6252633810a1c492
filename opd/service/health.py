"""The daemon's HTTP endpoint: /healthz, /readyz (and /healthz/NAME, /readyz/NAME) and /metrics.

The server knows nothing of the supervisor. It reads a :class:`Snapshot` (plain data: states and
numbers) through a callable, and answers each endpoint with the named checks registered on it, in
the shape of controller-runtime's ``healthz.Checker``: a name and a callable that returns None when
all is well, and an error (a message, or an exception, returned or raised) when not. The snapshot's
plugins and watches are shown as detail; only the checks decide the status code, so one broken
plugin stays visible without making the daemon look dead.

Probe handlers run through :class:`Probes`: cached, one run at a time, bounded, errors reduced to
their type. Metrics are read from the snapshot when Prometheus scrapes: the hot path pays nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from loguru import logger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opd.errors import ConfigError
from opd.service.config import Listen

# aiohttp has no separate timeout for reading a request's head. Its keep-alive timer, though, starts
# when a connection opens and closes it if no complete request has arrived by then (and again after
# each response): with a short one, a client that sends half a request is dropped within it. The
# cost, a scraper reconnecting for each scrape, is nothing at health-check rates.
HEADER_TIMEOUT = 5.0
PROBE_TTL = 10.0  # seconds a plugin's probe results are reused
PROBE_TIMEOUT = 10.0  # seconds for all of one plugin's probes

Endpoint = Literal["healthz", "readyz"]
# None: passing; a message or an exception (returned or raised): failing.
Checker = Callable[[], str | BaseException | None]


@dataclass(frozen=True)
class Check:
    name: str
    check: Checker

    def run(self) -> str | None:
        """None if passing, else one line saying why."""
        try:
            verdict = self.check()
        except Exception as exc:
            verdict = exc
        if verdict is None:
            return None
        if isinstance(verdict, BaseException):
            return str(verdict) or type(verdict).__name__
        return " ".join(str(verdict).split()) or "failed"


# -- the snapshot: what the server reads --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceCounters:
    """One operator's processing of one resource."""

    runs: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (handler id, outcome) -> runs
    seconds: Mapping[str, float] = field(default_factory=dict)  # handler id -> seconds spent
    queue: Mapping[str, int] = field(default_factory=dict)  # depth, queued, active, delayed, workers
    backlog: tuple[int, int] = (0, 0)  # of its streams' first LISTs: objects fed to the queue, objects listed


@dataclass(frozen=True)
class WatchSnapshot:
    resource: str
    namespace: str | None
    selector: str | None
    listed: bool
    healthy: bool
    error: str | None  # the last failure's one line, until it recovers
    stats: Mapping[str, int] = field(default_factory=dict)  # lists, watches, events, gone, errors
    connection: str = "shared"  # or the name of the plugin whose own connection it is
    status: int | None = None  # the last failure's HTTP status, when the API server answered

    def to_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, "namespace": self.namespace, "selector": self.selector,
                "listed": self.listed, "healthy": self.healthy, "error": self.error, "status": self.status,
                "connection": self.connection}


@dataclass(frozen=True)
class PluginSnapshot:
    name: str
    status: str  # starting, ready, failed (crashed, waiting to restart), disabled, stopped
    ready: bool  # its watches have listed
    failure: str | None = None  # why it counts as failed for the daemon's readiness; None if it does not
    restarts: int = 0
    error: str | None = None  # one line, safe to show (an exception's type, not its message)
    isolation: str = "shared"
    resources: Mapping[str, ResourceCounters] = field(default_factory=dict)
    events_posted: int = 0
    patches: Mapping[str, int] = field(default_factory=dict)  # its own connection's, when isolated

    @property
    def backlog(self) -> tuple[int, int]:
        """Of its streams' first LISTs: (objects fed to its handlers' queues, objects listed)."""
        return (sum(r.backlog[0] for r in self.resources.values()), sum(r.backlog[1] for r in self.resources.values()))

    @property
    def queued(self) -> int:
        """Objects waiting in its queues."""
        return sum(r.queue.get("depth", 0) for r in self.resources.values())

    def to_dict(self) -> dict[str, Any]:
        fed, listed = self.backlog
        return {"status": self.status, "ready": self.ready, "failed": self.failure, "restarts": self.restarts,
                "error": self.error, "isolation": self.isolation,
                "backlog": {"listed": listed, "fed": fed, "queued": self.queued}}


@dataclass(frozen=True)
class HaSnapshot:
    """This daemon as one replica of several ([ha]): its role and what it holds."""

    mode: str  # leader, shards
    identity: str
    lease: str
    namespace: str
    role: str  # leader or standby (leader mode); shards
    held: tuple[int, ...]  # the shards it holds (leader mode: (0,) while leading)
    shards: int
    members: int  # replicas it knows of (shards mode)
    requests: int = 0  # Lease requests sent
    filtering: str = "client"  # shards mode: how it gets only its shards' events (server, labels, client)
    labeller: bool = False  # whether it writes the shard labels (label filtering)

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"mode": self.mode, "role": self.role, "identity": self.identity,
                                 "lease": f"{self.namespace}/{self.lease}"}
        if self.mode == "shards":
            found.update(shards=list(self.held), of=self.shards, replicas=self.members, filtering=self.filtering,
                         labeller=self.labeller)
        return found

    def summary(self) -> str:
        if self.mode == "leader":
            return self.role
        return f"shards {','.join(map(str, self.held)) or 'none'} of {self.shards}"


@dataclass(frozen=True)
class Snapshot:
    running: bool  # the plugins were started and the daemon is not stopping
    plugins: Mapping[str, PluginSnapshot] = field(default_factory=dict)
    watchers: Sequence[WatchSnapshot] = ()
    patches: Mapping[str, int] = field(default_factory=dict)  # the shared connection's: requests, merged
    ha: HaSnapshot | None = None  # with [ha]

    @property
    def settled(self) -> bool:
        """Up, and every running plugin either ready or failed: when systemd hears READY=1."""
        running = [p for p in self.plugins.values() if p.status not in ("disabled", "stopped")]
        return self.running and all(p.ready or p.failure for p in running)

    def summary(self) -> str:
        """One line for systemd's STATUS= and the log: '2 of 3 plugin(s) ready; failed: foo (why)'."""
        running = [p for p in self.plugins.values() if p.status not in ("disabled", "stopped")]
        ready = sum(p.ready for p in running)
        text = f"{ready} of {len(running)} plugin(s) ready"
        failed = [f"{p.name} ({p.failure})" for p in running if p.failure and not p.ready]
        waiting = [p.name for p in running if not p.ready and not p.failure]
        if failed:
            text += "; failed: " + ", ".join(failed)
        if waiting:
            text += "; starting: " + ", ".join(waiting)
        if self.ha is not None:
            text += f"; {self.ha.summary()}"
        return text

    def backlog(self) -> str | None:
        """How far the running plugins are through their first LISTs' objects, while any has some left to feed:
        'backlog: 5000 of 20000 listed objects fed to the handlers, 1000 queued (2 plugin(s) behind)'."""
        running = [p for p in self.plugins.values() if p.status not in ("disabled", "stopped")]
        figures = [(p.backlog, p.queued) for p in running]
        behind = sum(1 for (fed, listed), _ in figures if fed < listed)
        if not behind:
            return None
        fed, listed = sum(f for (f, _), _ in figures), sum(n for (_, n), _ in figures)
        queued = sum(q for _, q in figures)
        return (f"backlog: {fed} of {listed} listed objects fed to the handlers, {queued} queued "
                f"({behind} plugin(s) behind)")

    def status(self) -> str:
        """systemd's STATUS=: the summary, and the backlog while there is one."""
        backlog = self.backlog()
        return self.summary() + (f"; {backlog}" if backlog else "")


# -- probes -------------------------------------------------------------------------------------------------------

ProbeRunner = Callable[[str], Awaitable[Mapping[str, Any]]]


class Probes:
    """Each plugin's probe results, reused for ``ttl`` seconds; one run at a time per plugin (requests
    arriving meanwhile share it), bounded by ``timeout``; a failure reported by its type alone."""

    def __init__(self, run: ProbeRunner, *, ttl: float = PROBE_TTL, timeout: float = PROBE_TIMEOUT) -> None:
        self._run = run
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}

    async def get(self, plugin: str) -> dict[str, Any]:
        cached = self._cache.get(plugin)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        task = self._running.get(plugin)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._probe(plugin), name=f"opd probe {plugin}")
            self._running[plugin] = task
            task.add_done_callback(lambda _: self._running.pop(plugin, None))
        # A client that goes away must not cancel the run the others wait for.
        return await asyncio.shield(task)

    async def _probe(self, plugin: str) -> dict[str, Any]:
        try:
            result = dict(await asyncio.wait_for(self._run(plugin), self.timeout))
        except Exception as exc:  # the message may carry a secret: the type only
            result = {"error": type(exc).__name__}
        self._cache[plugin] = (time.monotonic(), result)
        return result

    def forget(self, plugin: str) -> None:
        """Drop a plugin's cached results (it restarted)."""
        self._cache.pop(plugin, None)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the server ---------------------------------------------------------------------------------------------------


class _RequestLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, but a client's malformed request is a DEBUG line, not an ERROR traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):  # straight to loguru: stdlib DEBUG records are dropped
            logger.debug(f"opd: health endpoint: malformed request ({type(exc_info).__name__}: "
                         f"{' '.join(exc_info.message.split())})")
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


class _Collector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        runs = CounterMetricFamily("opd_handler_runs", "Handler runs by outcome.",
                                   labels=["plugin", "resource", "handler", "outcome"])
        seconds = CounterMetricFamily("opd_handler_seconds", "Time spent in handlers.",
                                      labels=["plugin", "resource", "handler"])
        depth = GaugeMetricFamily("opd_queue_depth", "Objects waiting to be processed.", labels=["plugin", "resource"])
        active = GaugeMetricFamily("opd_queue_active", "Objects being processed now.", labels=["plugin", "resource"])
        ready = GaugeMetricFamily("opd_plugin_ready", "1 when the plugin's watches have listed (received their "
                                  "first LISTs; with indexes, indexed them).", labels=["plugin"])
        listed = GaugeMetricFamily("opd_backlog_listed", "Objects in the plugin's first LISTs (its backlog at "
                                   "start).", labels=["plugin", "resource"])
        fed = GaugeMetricFamily("opd_backlog_fed", "Of the objects in the plugin's first LISTs, those fed to its "
                                "handlers' queue so far.", labels=["plugin", "resource"])
        failed = GaugeMetricFamily("opd_plugin_failed", "1 when the plugin counts as failed (crashed, or "
                                   "its resources cannot be watched).", labels=["plugin"])
        restarts = CounterMetricFamily("opd_plugin_restarts", "Plugin operator restarts after a crash.",
                                       labels=["plugin"])
        posted = CounterMetricFamily("opd_events_posted", "Kubernetes Events posted.", labels=["plugin"])
        for name, plugin in snap.plugins.items():
            ready.add_metric([name], 1.0 if plugin.ready else 0.0)
            failed.add_metric([name], 1.0 if plugin.failure else 0.0)
            restarts.add_metric([name], plugin.restarts)
            posted.add_metric([name], plugin.events_posted)
            for resource, counters in plugin.resources.items():
                depth.add_metric([name, resource], counters.queue.get("depth", 0))
                fed.add_metric([name, resource], counters.backlog[0])
                listed.add_metric([name, resource], counters.backlog[1])
                active.add_metric([name, resource], counters.queue.get("active", 0))
                for (handler, outcome), count in counters.runs.items():
                    runs.add_metric([name, resource, handler, outcome], count)
                for handler, total in counters.seconds.items():
                    seconds.add_metric([name, resource, handler], total)
        events = CounterMetricFamily("opd_watch_events", "Watch events received.",
                                     labels=["resource", "namespace", "connection"])
        errors = CounterMetricFamily("opd_watch_errors", "Watch stream failures.",
                                     labels=["resource", "namespace", "connection"])
        lists = CounterMetricFamily("opd_watch_lists", "Complete LISTs (the first, and relists).",
                                    labels=["resource", "namespace", "connection"])
        streams = GaugeMetricFamily("opd_watch_streams", "Open watch streams (shared by all plugins).")
        streams.add_metric([], sum(1 for w in snap.watchers if w.connection == "shared"))
        for watcher in snap.watchers:
            labels = [watcher.resource, watcher.namespace or "", watcher.connection]
            events.add_metric(labels, watcher.stats.get("events", 0))
            errors.add_metric(labels, watcher.stats.get("errors", 0))
            lists.add_metric(labels, watcher.stats.get("lists", 0))
        patches = CounterMetricFamily("opd_patch_requests", "PATCH requests sent.", labels=["connection"])
        merged = CounterMetricFamily("opd_patches_merged", "Patches sent inside another one's request.",
                                     labels=["connection"])
        for connection, counts in [("shared", snap.patches),
                                   *((name, p.patches) for name, p in snap.plugins.items() if p.patches)]:
            patches.add_metric([connection], counts.get("requests", 0))
            merged.add_metric([connection], counts.get("merged", 0))
        yield from (runs, seconds, depth, active, ready, failed, restarts, posted, listed, fed, events, errors, lists,
                    streams, patches, merged)
        if snap.ha is not None:
            yield from _ha_metrics(snap.ha)


def _ha_metrics(ha: HaSnapshot) -> Iterator[Metric]:
    labels = [ha.mode, ha.identity]
    leader = GaugeMetricFamily("opd_ha_leader", "1 while this replica holds the leader Lease ([ha] mode leader).",
                               labels=["mode", "identity"])
    leader.add_metric(labels, 1.0 if ha.role == "leader" else 0.0)
    held = GaugeMetricFamily("opd_ha_shards_held", "Leases this replica holds (shards; leader mode: 0 or 1).",
                             labels=["mode", "identity"])
    held.add_metric(labels, len(ha.held))
    replicas = GaugeMetricFamily("opd_ha_replicas", "Replicas this one knows of (shards mode).",
                                 labels=["mode", "identity"])
    replicas.add_metric(labels, ha.members)
    requests = CounterMetricFamily("opd_ha_lease_requests", "Lease requests sent (acquire, renew, release).",
                                   labels=["mode", "identity"])
    requests.add_metric(labels, ha.requests)
    yield from (leader, held, replicas, requests)
    if ha.mode == "shards":
        filtering = GaugeMetricFamily("opd_ha_shard_filtering", "How this replica gets only its shards' events "
                                      "(1 on its way: server, labels, or client: every event comes).",
                                      labels=["mode", "identity", "filtering"])
        filtering.add_metric([*labels, ha.filtering], 1.0)
        labeller = GaugeMetricFamily("opd_ha_labeller", "1 while this replica writes the shard labels.",
                                     labels=["mode", "identity"])
        labeller.add_metric(labels, 1.0 if ha.labeller else 0.0)
        yield from (filtering, labeller)


class HealthServer:
    def __init__(self, listen: Listen, snapshot: Callable[[], Snapshot], *, probe: ProbeRunner | None = None,
                 header_timeout: float = HEADER_TIMEOUT, probe_ttl: float = PROBE_TTL,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.listen = listen
        self.snapshot = snapshot
        self.probes = Probes(probe, ttl=probe_ttl, timeout=probe_timeout) if probe is not None else None
        self.header_timeout = header_timeout
        self.checks: dict[Endpoint, list[Check]] = {"healthz": [], "readyz": []}
        self.registry = CollectorRegistry(auto_describe=False)  # no process_* or python_* collectors
        self.registry.register(_Collector(snapshot))
        self._runner: web.AppRunner | None = None

    def add_check(self, endpoint: Endpoint, name: str, check: Checker) -> None:
        """Register a named check on /healthz or /readyz (and as /healthz/NAME or /readyz/NAME)."""
        if any(c.name == name for c in self.checks[endpoint]):
            raise ValueError(f"a check named {name!r} is already on /{endpoint}")
        self.checks[endpoint].append(Check(name, check))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/healthz/{name}", self._one)
        app.router.add_get("/readyz/{name}", self._one)
        app.router.add_get("/metrics", self._metrics)
        request_log = _RequestLog(logging.getLogger("aiohttp.server"), {})
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.header_timeout,
                                     logger=request_log)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.listen.host, self.listen.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"[opd].listen {self.listen}: cannot listen there: {exc.strerror or exc}") from exc

    async def stop(self) -> None:
        if self.probes is not None:
            await self.probes.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _json(self, ok: bool, body: object) -> web.Response:
        return web.Response(status=200 if ok else 503, text=json.dumps(body, indent=2, default=str),
                            content_type="application/json")

    def _verdicts(self, endpoint: Endpoint) -> tuple[bool, dict[str, str]]:
        failures = {c.name: c.run() for c in self.checks[endpoint]}
        return (all(f is None for f in failures.values()),
                {name: "ok" if why is None else f"failed: {why}" for name, why in failures.items()})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, checks = self._verdicts("healthz")
        snap = self.snapshot()
        return self._json(ok, {"status": "ok" if ok else "failed", "checks": checks,
                               "plugins": {n: p.to_dict() for n, p in snap.plugins.items()}})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, checks = self._verdicts("readyz")
        snap = self.snapshot()
        plugins = {n: p.to_dict() for n, p in snap.plugins.items()}
        if self.probes is not None:
            names = [n for n, p in snap.plugins.items() if p.ready]
            results = await asyncio.gather(*(self.probes.get(n) for n in names))
            for name, result in zip(names, results, strict=True):
                if result:
                    plugins[name]["probes"] = result
        body = {"status": "ok" if ok else "failed", "ready": snap.settled, "checks": checks,
                "plugins": plugins, "watchers": [w.to_dict() for w in snap.watchers]}
        if snap.ha is not None:  # a standby is ready too: warm, watching; the role says what it does
            body["ha"] = snap.ha.to_dict()
        return self._json(ok, body)

    async def _one(self, request: web.Request) -> web.Response:
        endpoint: Endpoint = "healthz" if request.path.startswith("/healthz/") else "readyz"
        name = request.match_info["name"]
        check = next((c for c in self.checks[endpoint] if c.name == name), None)
        if check is None:
            raise web.HTTPNotFound(text=f"no check named {name!r} on /{endpoint}\n")
        why = check.run()
        return web.Response(status=200 if why is None else 503,
                            text="ok\n" if why is None else f"failed: {why}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
