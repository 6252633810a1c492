"""The daemon: every enabled plugin as an isolated operator, on one cluster connection.

Plugins share the watch streams (one per resource and namespace) unless a plugin
asks for ``isolation = "thread"``: then it runs the seed's "multiple operators"
way, with its own thread, event loop and connection. A plugin whose operator
crashes is restarted with backoff; the others never notice.

A broken plugin stays its own problem: the daemon says READY=1 once every plugin
has either listed its objects or *failed* (crashed, or its resources cannot be
watched: not served, refused with 401/403/404, or not listed within the ready
timeout), and pings systemd's watchdog while its event loop runs, whatever the
plugins do. Failed plugins are named in STATUS=, /healthz, /readyz and the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from loguru import logger

from opd.engine.cluster import Cluster
from opd.engine.operation import Service
from opd.engine.status import connection
from opd.errors import ConfigError, OpdError
from opd.ha import HaSettings, Replica, default_identity
from opd.kube.credentials import Login
from opd.service import config as daemon_config
from opd.service import plugins as daemon_plugins
from opd.service import systemd
from opd.service.config import DaemonConfig
from opd.service.counters import connection_counters, operation_counters
from opd.service.health import HaSnapshot, HealthServer, PluginSnapshot, Snapshot, WatchSnapshot
from opd.service.plugins import Plugin, Status
from opd.service.runner import PluginRunner, track_tasks
from opd.settings import OperatorSettings
from opd.webhooks.hosting import Webhooks
from opd.webhooks.server import SharedMount, WebhookServer

PATCH_WINDOW = 0.02  # seconds; see Supervisor._start_plugins
READY_TIMEOUT_ENV = "OPD_READY_TIMEOUT"
READY_TIMEOUT = 60.0  # seconds; a plugin not listed by then counts as failed (see _diagnose)
MONITOR_INTERVAL = 0.5  # seconds between looks at the plugins' states


# -- the daemon ---------------------------------------------------------------------------------------------------


def _ready_timeout(env: Mapping[str, str]) -> float:
    raw = env.get(READY_TIMEOUT_ENV, "").strip()
    if not raw:
        return READY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"${READY_TIMEOUT_ENV}: expected a number of seconds above 0, got {raw!r}")
    return value


def ha_settings(config: DaemonConfig) -> HaSettings | None:
    """[ha] as opd.ha's settings; None when it is off."""
    h = config.ha
    if h.mode == "off":
        return None
    return HaSettings(mode=h.mode, lease=h.lease, namespace=h.lease_namespace,
                      identity=h.identity or default_identity(), lease_duration=h.lease_duration,
                      renew_deadline=h.renew_deadline, retry_period=h.retry_period, shards=h.shards,
                      filtering=h.filtering)


# Settings that the running daemon cannot change: they are read once, at start.
_RESTART_ONLY = [("opd", "listen"),
                 *(("kubernetes", f.name) for f in dataclasses.fields(daemon_config.KubernetesSection)),
                 *(("webhooks", f.name) for f in dataclasses.fields(daemon_config.WebhooksSection)),
                 *(("ha", f.name) for f in dataclasses.fields(daemon_config.HaSection))]


class Supervisor:
    def __init__(self, config: DaemonConfig, *, env: Mapping[str, str] | None = None,
                 entry_points: Sequence[metadata.EntryPoint] | None = None,
                 setup_logging: Callable[[DaemonConfig], None] | None = None) -> None:
        self.config = config
        self.env = env
        self.entry_points = entry_points  # None: the installed ones
        self.setup_logging = setup_logging  # called again with each reloaded configuration
        self.ready_timeout = _ready_timeout(os.environ if env is None else env)
        self.runners: dict[str, PluginRunner] = {}
        self.discovery: daemon_plugins.Discovery | None = None
        self.cluster: Cluster | None = None
        self.health: HealthServer | None = None
        self.replica: Replica | None = None  # with [ha]: this daemon as one replica of several
        hooks = config.webhooks  # every plugin's webhooks on one server, a path each; it listens once needed
        self.webhook_server = WebhookServer(addr=hooks.listen.host, port=hooks.listen.port, host=hooks.host,
                                            url=hooks.url, service=hooks.service, cert_dir=hooks.cert_dir)
        self.started = asyncio.Event()
        self.announced = False  # READY=1 sent
        self._stopping = False
        self._monitor_task: asyncio.Task[None] | None = None

    @property
    def login(self) -> Login:
        return Login(**dataclasses.asdict(self.config.kubernetes))

    def ready(self) -> bool:
        """Every plugin has listed its objects (received its first LISTs; their handling may go on)."""
        return bool(self.runners) and all(r.ready.is_set() for r in self.runners.values())

    def settled(self) -> bool:
        """Up, and every plugin either ready or failed: READY=1 for systemd, 200 for /readyz."""
        return self.snapshot().settled

    def alive(self) -> bool:
        """What the watchdog asks: the supervisor's loop runs (this is called from it) and so does its
        monitor. Plugins are not asked: a broken one is restarted, not the daemon."""
        return self.started.is_set() and not self._stopping and self._monitor_task is not None and (
            not self._monitor_task.done())

    def healthy(self) -> bool:
        return self.alive()

    # -- the snapshot everything reads ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        plugins: dict[str, PluginSnapshot] = {}
        watchers: list[WatchSnapshot] = []
        for plugin in self.discovery.plugins if self.discovery else []:
            runner = self.runners.get(plugin.name)
            if runner is None:
                failed = plugin.status is Status.FAILED
                # Its error's type only ("Type: message (where)"): the message may hold a secret.
                error = ((plugin.error or "").split(":", 1)[0] or "error") if failed else None
                plugins[plugin.name] = PluginSnapshot(
                    name=plugin.name, status=str(plugin.status), ready=False, isolation=plugin.config.isolation,
                    failure=f"cannot load: {error}" if failed else None, error=error)
                continue
            operation, own = runner.operation, runner.cluster if runner.isolated else None
            resources, posted = operation_counters(operation.snapshot() if operation is not None else None)
            own_watchers, own_patches = connection_counters(connection(own) if own else None, runner.name)
            watchers += own_watchers
            plugins[plugin.name] = PluginSnapshot(
                name=plugin.name, status=runner.state, ready=runner.ready.is_set(),
                failure=None if runner.ready.is_set() else runner.failure, restarts=runner.restarts,
                error=runner.error_type, isolation=plugin.config.isolation, resources=resources,
                events_posted=posted, patches=own_patches)
        shared, patches = connection_counters(connection(self.cluster) if self.cluster else None, "shared")
        running = self.started.is_set() and not self._stopping
        state = self.replica.state() if self.replica is not None else None
        return Snapshot(running=running, plugins=plugins, watchers=[*shared, *watchers], patches=patches,
                        ha=HaSnapshot(**dataclasses.asdict(state)) if state is not None else None)

    def report(self) -> dict[str, Any]:
        """The supervisor's state as plain data (plugins as ``opd plugins`` names them)."""
        snap = self.snapshot()
        return {"ready": self.ready(), "settled": snap.settled, "healthy": self.healthy(),
                "summary": snap.summary(), "plugins": {n: p.to_dict() for n, p in snap.plugins.items()},
                "watchers": [w.to_dict() for w in snap.watchers]}

    # -- starting and running ---------------------------------------------------------------------------------

    def _load(self, config: DaemonConfig) -> daemon_plugins.Discovery:
        found = daemon_plugins.load_all(config, self.env, self.entry_points)
        for warning in found.warnings:
            logger.warning(f"opd: {warning}")
        found.check(daemon_plugins.strict_mode(self.env))
        return found

    def _runner(self, plugin: Plugin, config: DaemonConfig) -> PluginRunner:
        home = asyncio.get_running_loop()  # where the webhook server lives, whatever thread a plugin runs in
        runner = PluginRunner(plugin, login=self.login, shutdown_timeout=config.opd.shutdown_timeout,
                              services=lambda: self._webhooks(plugin.name, home), replica=self.replica)
        assert self.cluster is not None
        self.runners[plugin.name] = runner
        runner.start(self.cluster)
        if self.health is not None and self.health.probes is not None:
            self.health.probes.forget(plugin.name)
        return runner

    def _webhooks(self, plugin: str, home: asyncio.AbstractEventLoop) -> list[Service]:
        """A plugin's webhooks, on the daemon's one server (started by the first plugin that has some)."""
        return [Webhooks(server=SharedMount(self.webhook_server, plugin, home=home), owner=plugin,
                         managed=self.config.webhooks.managed or None,
                         excluded=self.config.webhooks.excluded_namespaces)]

    def _start_plugins(self, found: daemon_plugins.Discovery) -> None:
        assert self.cluster is not None
        for plugin in found.loaded():
            self._runner(plugin, self.config)
        # Plugins on the shared client handle each event within milliseconds of each other: their
        # patches of one object share a request when the first waits a little (bench: 20 plugins,
        # from 9.6 PATCHes per object to about 1). One plugin alone has no one to wait for.
        sharing = sum(1 for r in self.runners.values() if not r.isolated)
        self.cluster.client.patches.window = PATCH_WINDOW if sharing > 1 else 0.0
        logger.info(f"opd: running {len(self.runners)} plugin(s): {', '.join(self.runners) or 'none'}")

    def _health_server(self) -> HealthServer | None:
        listen = self.config.opd.listen
        if listen is None:
            return None
        server = HealthServer(listen, self.snapshot, probe=self._probe)

        def supervisor() -> str | None:
            return None if self.alive() else "the supervisor is not running"

        def plugins() -> str | None:
            snap = self.snapshot()
            return None if snap.settled else snap.summary()

        server.add_check("healthz", "supervisor", supervisor)
        server.add_check("readyz", "supervisor", supervisor)
        server.add_check("readyz", "plugins", plugins)
        return server

    async def _probe(self, name: str) -> Mapping[str, Any]:
        runner = self.runners.get(name)
        operation = runner.operation if runner is not None else None
        if runner is None or operation is None:
            return {}
        return await runner.in_its_loop(operation.probe, timeout=3600)  # Probes bounds it

    async def run(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        """Until ``stop`` is set; each time ``reload`` is set, re-read the config file."""
        self.discovery = self._load(self.config)
        # The shared connection takes the daemon's settings; each plugin keeps its own for the rest.
        base = OperatorSettings()
        base.shutdown.timeout = self.config.opd.shutdown_timeout
        self.cluster = await Cluster.connect(self.login, base)
        untrack = track_tasks(asyncio.get_running_loop())
        tasks: list[asyncio.Task[Any]] = []
        self.health = self._health_server()
        try:
            if self.health is not None:
                await self.health.start()
                logger.info(f"opd: health and metrics on http://{self.config.opd.listen}/")
            ha = ha_settings(self.config)
            if ha is not None:  # before the plugins: each one's operation gets a view of what it owns
                self.replica = Replica(ha, login=self.login, networking=base.networking)
                await self.replica.start()
            self._start_plugins(self.discovery)
            self._monitor_task = asyncio.get_running_loop().create_task(self._monitor(), name="opd monitor")
            tasks.append(self._monitor_task)
            self.started.set()
            tasks.append(asyncio.get_running_loop().create_task(
                systemd.watchdog_loop(self.alive), name="opd watchdog"))
            while not stop.is_set():
                waiters = {asyncio.ensure_future(stop.wait())}
                if reload is not None:
                    waiters.add(asyncio.ensure_future(reload.wait()))
                _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending:
                    waiter.cancel()
                if reload is not None and reload.is_set() and not stop.is_set():
                    reload.clear()
                    await self.reload()
        finally:
            self._stopping = True
            systemd.stopping("stopping plugins")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
            if self.replica is not None:  # the plugins' work is done: the others may take over now
                await self.replica.stop()
            if self.health is not None:
                await self.health.stop()
            await self.webhook_server.stop()
            await self.cluster.close()
            untrack()

    # -- watching the plugins: readiness, STATUS= -------------------------------------------------------------

    async def _diagnose(self, runner: PluginRunner) -> str | None:
        """Why the plugin counts as failed, or None (ready, or still starting within the bound)."""
        if runner.ready.is_set():
            return None
        if runner.crashed:
            return f"crashed: {runner.error_type}; restarting" if runner.state == "failed" else (
                f"crashed: {runner.error_type}")
        operation = runner.operation
        # What the engine says cannot be served (a resource not served or ambiguous, a watch refused
        # with 401/403/404): the status decides, as data; the bound holds for everything else.
        try:
            unservable = operation.snapshot().unservable if operation is not None else ()
        except Exception:  # a bug of the engine's: said, and the bound still holds (the monitor goes on)
            logger.opt(exception=True).error(f"opd: reading the status of plugin {runner.name!r} failed")
            unservable = ()
        if unservable:
            return unservable[0]
        waited = time.monotonic() - runner.started_at
        return f"not ready within {self.ready_timeout:g}s" if waited >= self.ready_timeout else None

    async def _monitor(self) -> None:
        """Keeps each plugin's verdict; says READY=1 once settled, and STATUS= whenever it changes."""
        said: dict[str, str | None] = {}
        status: str | None = None
        said_summary: str | None = None
        while True:
            for runner in list(self.runners.values()):
                runner.failure = await self._diagnose(runner)
                if runner.failure != said.get(runner.name) and self.runners.get(runner.name) is runner:
                    if runner.failure and not runner.failure.startswith("crashed"):  # crashes say so themselves
                        logger.bind(plugin=runner.name).warning(  # the engine logged the cause
                            f"opd: plugin {runner.name!r} counts as failed: {runner.failure}")
                    elif said.get(runner.name) and runner.ready.is_set():
                        logger.bind(plugin=runner.name).info(f"opd: plugin {runner.name!r} recovered")
                    said[runner.name] = runner.failure
            snap = self.snapshot()
            summary, line = snap.summary(), snap.status()  # the line adds the backlog, while there is one
            if not self.announced and snap.settled:
                self.announced = True
                logger.info(f"opd: {line}")
                systemd.ready(line)
            elif self.announced and line != status:
                if summary != said_summary:  # the log says what changed, not every step of the backlog
                    logger.info(f"opd: {line}")
                systemd.status(line)
            status, said_summary = (line, summary) if self.announced else (None, None)
            await asyncio.sleep(MONITOR_INTERVAL)

    # -- SIGHUP -----------------------------------------------------------------------------------------------

    def _needs_restart(self, old: DaemonConfig, new: DaemonConfig) -> list[str]:
        changed = []
        for section, key in _RESTART_ONLY:
            if getattr(getattr(old, section), key) != getattr(getattr(new, section), key):
                changed.append(f"[{section}].{key}")
        return changed

    async def reload(self) -> None:
        """Re-read the config: logging at once; restart only the plugins whose configuration changed;
        say which changes need a restart of the daemon (they keep their running values until then)."""
        systemd.reloading("reloading the configuration")
        path = self.config.path
        try:
            new = daemon_config.load(path) if path is not None else self.config
            found = self._load(new)
        except OpdError as exc:
            logger.error(f"opd: reload refused, keeping the running configuration: {exc}")
            systemd.ready("reload refused")
            return
        if self.setup_logging is not None:
            self.setup_logging(new)
        logger.debug(f"opd: configuration re-read from {path} ([opd].log_level = {new.opd.log_level!r})")
        restart = self._needs_restart(self.config, new)
        if restart:
            logger.warning(f"opd: needs a restart: {', '.join(restart)} changed; "
                           "the running values stay until opd restarts")
        new = dataclasses.replace(new, kubernetes=self.config.kubernetes, webhooks=self.config.webhooks,
                                  opd=dataclasses.replace(new.opd, listen=self.config.opd.listen))
        new = dataclasses.replace(new, ha=self.config.ha)  # [ha]: the replica keeps its Leases until a restart
        for running in self.runners.values():  # read at shutdown: applies to the running plugins too
            running.shutdown_timeout = running.plugin.settings.shutdown.timeout = new.opd.shutdown_timeout
        old_by_name = {p.name: p for p in (self.discovery.plugins if self.discovery else [])}
        changed = []
        for index, plugin in enumerate(found.plugins):
            old, runner = old_by_name.get(plugin.name), self.runners.get(plugin.name)
            if old is not None and old.status is Status.LOADED and "opd_register" not in old.hooks:
                # Decorators at module level ran at the first import only: keep what they registered.
                old.config, old.disabled_by = plugin.config, plugin.disabled_by
                old.status = Status.LOADED if plugin.enabled else Status.DISABLED
                plugin = found.plugins[index] = old
            wanted = plugin.status is Status.LOADED
            if runner is not None and wanted and old is not None and old.config == plugin.config:
                found.plugins[index] = old  # untouched: it keeps running, with its registry
                continue
            if runner is not None:
                await self.runners.pop(plugin.name).stop()
            if wanted:
                runner = self._runner(plugin, new)
            if runner is not None or wanted:
                changed.append(plugin.name)
        for name in set(self.runners) - {p.name for p in found.plugins}:  # uninstalled meanwhile
            await self.runners.pop(name).stop()
            changed.append(name)
        self.config, self.discovery = new, found
        logger.info(f"opd: configuration reloaded; restarted: {', '.join(sorted(set(changed))) or 'none'}")
        systemd.ready(self.snapshot().status())
