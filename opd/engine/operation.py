"""One running operator: credentials, discovery, a watcher per resource and
namespace, and a processor per resource. Cancelling ``run()`` stops it all,
gracefully, within the shutdown bound; it touches no task it did not create."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from loguru import logger

from opd.engine import namespaces as ns_patterns
from opd.engine.processing import ResourceProcessor
from opd.engine.watching import Watcher
from opd.errors import ConfigError
from opd.kube.api import REQUEST_ERRORS, KubeClient
from opd.kube.credentials import Login, load_configuration
from opd.kube.discovery import Discovery
from opd.registry import OperatorRegistry
from opd.resources import Resource, ResourceRef
from opd.settings import OperatorSettings

NAMESPACES = Resource(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)


class Operation:
    def __init__(self, *, registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                 namespaces: Sequence[str] | None, clusterwide: bool, login: Login | None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.memo = memo
        self.patterns = list(namespaces or [])
        self.clusterwide = clusterwide or not self.patterns
        self.login = login
        self._on_ready = on_ready
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watchers: dict[tuple[ResourceRef, str | None], Watcher] = {}
        self.processors: dict[ResourceRef, ResourceProcessor] = {}
        self._resolved: dict[ResourceRef, asyncio.Event] = {}
        self._namespaces: set[str] | None = None  # matching namespaces, when globs are used
        self._namespaces_listed = asyncio.Event()
        self._watch_tasks: dict[Watcher, asyncio.Task[Any]] = {}
        self._client: KubeClient | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def ready(self) -> bool:
        return all(e.is_set() for e in self._resolved.values()) and all(
            w.listed.is_set() for w in self.watchers.values())

    async def run(self) -> None:
        cfg, source = await load_configuration(self.login)
        self._client = KubeClient(cfg, self.settings.networking, source=source)
        self._executor = ThreadPoolExecutor(self.settings.execution.max_workers, thread_name_prefix="opd-handler")
        refs = self.registry.resources()
        where = "cluster-wide" if self.clusterwide else f"namespaces {', '.join(self.patterns)}"
        logger.info(f"opd: serving {len(refs)} resource(s) {where} at {self._client.host} ({source})")
        if not refs:
            logger.warning("opd: the registry has no handlers: nothing to watch")
        try:
            discovery = Discovery(self._client)
            if not self.clusterwide and not ns_patterns.is_static(self.patterns):
                self._namespaces = set()
                watcher = Watcher(self._client, NAMESPACES, None, settings=self.settings.watching,
                                  deliver=self._namespace_event)
                self._namespaces_listed = watcher.listed
                self._spawn(watcher.run(), "opd watch namespaces")
            for ref in refs:
                self._resolved[ref] = asyncio.Event()
                self._spawn(self._serve(discovery, ref), f"opd serve {ref}")
            self._spawn(self._announce_ready(), "opd readiness")
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        await asyncio.gather(*(p.close() for p in self.processors.values()), return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            await self._client.close()

    async def _announce_ready(self) -> None:
        if self._namespaces is not None:
            await self._namespaces_listed.wait()
        await asyncio.gather(*(e.wait() for e in self._resolved.values()))
        while pending := [w.listed.wait() for w in self.watchers.values() if not w.listed.is_set()]:
            await asyncio.gather(*pending)
        logger.info("opd: ready: every watch has listed its objects")
        if self._on_ready is not None:
            self._on_ready()

    async def _resolve(self, discovery: Discovery, ref: ResourceRef) -> Resource | None:
        backoff = self.settings.watching.backoff_initial
        reported = None  # say each kind of trouble once, not at every retry
        while True:
            try:
                resource = await discovery.resolve(ref)
            except ConfigError as exc:
                logger.error(f"opd: {exc}")
                return None
            except REQUEST_ERRORS as exc:
                if reported != "unreachable":
                    logger.warning(f"opd: API server unreachable while resolving {ref} ({exc!s}); retrying")
                    reported = "unreachable"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.watching.backoff_max)
                continue
            if resource is not None:
                if reported == "unreachable":
                    logger.info(f"opd: API server reachable again; serving {resource}")
                return resource
            if reported != "unknown":
                logger.error(f"opd: unknown resource {ref!s}: not served by the API server; "
                             "retrying until it appears (is the CRD installed?)")
                reported = "unknown"
            await asyncio.sleep(10.0)

    async def _serve(self, discovery: Discovery, ref: ResourceRef) -> None:
        resource = await self._resolve(discovery, ref)
        if resource is None:
            return
        assert self._client is not None
        processor = ResourceProcessor(client=self._client, resource=resource, ref=ref, registry=self.registry,
                                      settings=self.settings, memo=self.memo, executor=self._executor)
        self.processors[ref] = processor
        selector = self.registry.label_selector(ref)
        if not resource.namespaced or self.clusterwide:
            self._start_watch(ref, resource, processor, None, selector)
        elif self._namespaces is None:
            for namespace in self.patterns:
                self._start_watch(ref, resource, processor, namespace, selector)
        else:
            await self._namespaces_listed.wait()
            for namespace in sorted(self._namespaces):
                self._start_watch(ref, resource, processor, namespace, selector)
        self._resolved[ref].set()

    def _start_watch(self, ref: ResourceRef, resource: Resource, processor: ResourceProcessor,
                     namespace: str | None, selector: str | None) -> None:
        assert self._client is not None
        if (ref, namespace) in self.watchers:
            return
        watcher = Watcher(self._client, resource, namespace, settings=self.settings.watching,
                          deliver=processor.deliver, label_selector=selector)
        self.watchers[(ref, namespace)] = watcher
        task = self._spawn(watcher.run(), f"opd watch {watcher}")
        self._watch_tasks[watcher] = task

    def _namespace_event(self, event_type: str, body: dict[str, Any]) -> None:
        assert self._namespaces is not None
        name = body["metadata"]["name"]
        wanted = event_type != "DELETED" and ns_patterns.matches(name, self.patterns)
        if wanted and name not in self._namespaces:
            self._namespaces.add(name)
            if self._namespaces_listed.is_set():
                for ref, processor in self.processors.items():
                    self._start_watch(ref, processor.resource, processor, name, self.registry.label_selector(ref))
        elif not wanted and name in self._namespaces:
            self._namespaces.discard(name)
            for (ref, namespace), watcher in list(self.watchers.items()):
                if namespace == name:
                    del self.watchers[(ref, namespace)]
                    task = self._watch_tasks.pop(watcher, None)
                    if task is not None:
                        task.cancel()

