"""The daemon: every enabled plugin as an isolated operator, on one cluster connection.

Plugins share the watch streams (one per resource and namespace) unless a plugin
asks for ``isolation = "thread"``: then it runs the seed's "multiple operators"
way, with its own thread, event loop and connection. A plugin whose operator
crashes is restarted with backoff; the others never notice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from loguru import logger

from opd.daemon import config as daemon_config
from opd.daemon import plugins as daemon_plugins
from opd.daemon import systemd
from opd.daemon.config import DaemonConfig
from opd.daemon.health import HealthServer
from opd.daemon.plugins import Plugin, Status
from opd.engine.cluster import Cluster
from opd.engine.operation import Operation
from opd.errors import OpdError
from opd.kube.credentials import Login
from opd.orchestration import Memo, operator
from opd.settings import OperatorSettings

PATCH_WINDOW = 0.02  # seconds; see Supervisor._start_plugins


class PluginRunner:
    """Runs one loaded plugin's operator and restarts it after a crash, with backoff."""

    def __init__(self, plugin: Plugin, *, login: Login, shutdown_timeout: float) -> None:
        self.plugin = plugin
        self.login = login
        self.shutdown_timeout = shutdown_timeout
        self.state = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        self.operation: Operation | None = None
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.plugin.name

    def start(self, cluster: Cluster) -> None:
        self.task = asyncio.get_running_loop().create_task(self._supervise(cluster), name=f"opd plugin {self.name}")

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=self.shutdown_timeout + 5)
        self.state = "stopped"

    def _settings(self) -> OperatorSettings:
        self.plugin.settings.shutdown.timeout = self.shutdown_timeout
        return self.plugin.settings

    def _became_ready(self) -> None:
        self.state = "ready"
        self.ready.set()

    async def _supervise(self, cluster: Cluster) -> None:
        backoff = 1.0
        while True:
            self.ready.clear()
            self.state = "starting"
            try:
                with logger.contextualize(plugin=self.name):
                    if self.plugin.config.isolation == "thread":
                        await self._run_in_thread()
                    else:
                        await self._run_shared(cluster)
                return  # stopped on purpose
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state, self.restarts = "failed", self.restarts + 1
                self.last_error = " ".join(f"{type(exc).__name__}: {exc}".split())
                logger.bind(plugin=self.name).error(
                    f"opd: plugin {self.name!r} crashed: {self.last_error}; restarting in {backoff:g}s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _run_shared(self, cluster: Cluster) -> None:
        config = self.plugin.config
        self.operation = Operation(
            registry=self.plugin.registry, settings=self._settings(), memo=Memo(),
            namespaces=list(config.namespaces), clusterwide=config.clusterwide, cluster=cluster,
            on_ready=self._became_ready, name=self.name,
        )
        await self.operation.run()

    async def _run_in_thread(self) -> None:
        """The plugin's own thread and loop: blocking code there cannot stall the others."""
        loop = asyncio.get_running_loop()
        stop, ready = threading.Event(), threading.Event()
        failure: list[BaseException] = []
        config = self.plugin.config

        def main() -> None:
            try:
                asyncio.run(operator(
                    registry=self.plugin.registry, settings=self._settings(), memo=Memo(),
                    namespaces=list(config.namespaces), clusterwide=config.clusterwide,
                    stop_flag=stop, ready_flag=ready, login=self.login, install_signal_handlers=False))
            except BaseException as exc:  # carried over to the supervising loop, which restarts it
                failure.append(exc)

        thread = threading.Thread(target=main, name=f"opd-plugin-{self.name}", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                if ready.is_set() and not self.ready.is_set():
                    self._became_ready()
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await loop.run_in_executor(None, thread.join, self.shutdown_timeout + 5)
        if failure:
            raise failure[0]


class Supervisor:
    def __init__(self, config: DaemonConfig, *, env: Mapping[str, str] | None = None,
                 entry_points: Sequence[metadata.EntryPoint] | None = None) -> None:
        self.config = config
        self.env = env
        self.entry_points = entry_points  # None: the installed ones
        self.runners: dict[str, PluginRunner] = {}
        self.discovery: daemon_plugins.Discovery | None = None
        self.cluster: Cluster | None = None
        self.started = asyncio.Event()

    @property
    def login(self) -> Login:
        return Login(**dataclasses.asdict(self.config.kubernetes))

    def ready(self) -> bool:
        return bool(self.runners) and all(r.ready.is_set() for r in self.runners.values())

    def healthy(self) -> bool:
        """Alive: no plugin stuck in a crash loop, and every watch stream's task is running."""
        if any(r.state == "failed" for r in self.runners.values()):
            return False
        return self.cluster is not None

    def report(self) -> dict[str, Any]:
        plugins: dict[str, Any] = {}
        for plugin in self.discovery.plugins if self.discovery else []:
            runner = self.runners.get(plugin.name)
            plugins[plugin.name] = {
                "status": runner.state if runner else str(plugin.status),
                "ready": bool(runner and runner.ready.is_set()),
                "restarts": runner.restarts if runner else 0,
                "error": (runner.last_error if runner else None) or plugin.error,
            }
        watchers = [
            {"resource": str(w.resource), "namespace": w.namespace, "selector": w.label_selector,
             "listed": w.listed.is_set(), "healthy": w.healthy, "error": w.last_error}
            for w in (self.cluster.hub.watchers if self.cluster else [])
        ]
        return {"ready": self.ready(), "healthy": self.healthy(), "plugins": plugins, "watchers": watchers}

    def _load(self, config: DaemonConfig) -> daemon_plugins.Discovery:
        found = daemon_plugins.load_all(config, self.env, self.entry_points)
        for warning in found.warnings:
            logger.warning(f"opd: {warning}")
        found.check(daemon_plugins.strict_mode(self.env))
        return found

    def _start_plugins(self, found: daemon_plugins.Discovery) -> None:
        assert self.cluster is not None
        for plugin in found.loaded():
            runner = PluginRunner(plugin, login=self.login, shutdown_timeout=self.config.opd.shutdown_timeout)
            self.runners[plugin.name] = runner
            runner.start(self.cluster)
        # Plugins on the shared client handle each event within milliseconds of each other: their
        # patches of one object share a request when the first waits a little (bench: 20 plugins,
        # from 9.6 PATCHes per object to about 1). One plugin alone has no one to wait for.
        sharing = sum(1 for r in self.runners.values() if r.plugin.config.isolation != "thread")
        self.cluster.client.patches.window = PATCH_WINDOW if sharing > 1 else 0.0
        logger.info(f"opd: running {len(self.runners)} plugin(s): {', '.join(self.runners) or 'none'}")

    async def run(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        """Until ``stop`` is set; each time ``reload`` is set, re-read the config file."""
        self.discovery = self._load(self.config)
        # The shared connection takes the daemon's settings; each plugin keeps its own for the rest.
        base = OperatorSettings()
        base.shutdown.timeout = self.config.opd.shutdown_timeout
        self.cluster = await Cluster.connect(self.login, base)
        tasks: list[asyncio.Task[Any]] = []
        health = HealthServer(self, self.config.opd.listen) if self.config.opd.listen else None
        try:
            if health is not None:
                await health.start()
                logger.info(f"opd: health and metrics on http://{self.config.opd.listen}/")
            self._start_plugins(self.discovery)
            self.started.set()
            tasks.append(asyncio.get_running_loop().create_task(self._announce_ready(), name="opd announce"))
            tasks.append(asyncio.get_running_loop().create_task(
                systemd.watchdog_loop(self.healthy), name="opd watchdog"))
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
            systemd.stopping("stopping plugins")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
            if health is not None:
                await health.stop()
            await self.cluster.close()

    async def _announce_ready(self) -> None:
        await asyncio.gather(*(r.ready.wait() for r in self.runners.values()))
        message = f"{len(self.runners)} plugin(s) ready"
        logger.info(f"opd: {message}")
        systemd.ready(message)

    async def reload(self) -> None:
        """Re-read the config; restart only the plugins whose configuration changed."""
        systemd.reloading("reloading the configuration")
        path = self.config.path
        try:
            new = daemon_config.load(path) if path is not None else self.config
            found = self._load(new)
        except OpdError as exc:
            logger.error(f"opd: reload refused, keeping the running configuration: {exc}")
            systemd.ready("reload refused")
            return
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
                assert self.cluster is not None
                runner = PluginRunner(plugin, login=self.login, shutdown_timeout=new.opd.shutdown_timeout)
                self.runners[plugin.name] = runner
                runner.start(self.cluster)
            if runner is not None or wanted:
                changed.append(plugin.name)
        for name in set(self.runners) - {p.name for p in found.plugins}:  # uninstalled meanwhile
            await self.runners.pop(name).stop()
            changed.append(name)
        self.config, self.discovery = new, found
        logger.info(f"opd: configuration reloaded; restarted: {', '.join(sorted(set(changed))) or 'none'}")
        systemd.ready(f"{len(self.runners)} plugin(s) running")
