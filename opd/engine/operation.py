"""One running operator: its registry, settings and memo, a processor per
resource, subscribed to the cluster's shared watch streams per namespace.
Cancelling ``run()`` stops it, gracefully, within the shutdown bound; it
touches no task it did not create."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Protocol

from loguru import logger

from opd.engine import arguments, status
from opd.engine import namespaces as ns_patterns
from opd.engine.backoff import Backoff
from opd.engine.cluster import Cluster
from opd.engine.events import EventPoster, current_poster
from opd.engine.execution import execute
from opd.engine.hub import Subscription
from opd.engine.indexing import Indexes
from opd.engine.invocation import invoke
from opd.engine.ownership import EVERYTHING, Ownership
from opd.engine.processing import ResourceProcessor
from opd.engine.sharding import LabelFilter, watchers
from opd.engine.status import OperationStatus, copied
from opd.errors import ConfigError, OpdError
from opd.kube.api import REQUEST_ERRORS
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry, Reason
from opd.resources import Resource, ResourceRef
from opd.settings import OperatorSettings

PROBE_TIMEOUT = 5.0  # seconds, for a probe handler without a timeout of its own
Uids = Callable[[str], bool]  # which objects (by uid) a call is about
NAMESPACES = Resource(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)
SERVICE_STOP_TIMEOUT = 5.0  # seconds for a service's stop (e.g. removing its webhook configurations)


class Service(Protocol):
    """A part of an operator besides its watches, living as long as it does (the webhook server):
    started after the startup handlers (they may configure it), its ``run()`` is one of the
    operator's tasks (an error stops the operator), stopped first at shutdown, connection still up."""

    async def start(self, operation: Operation) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


class Operation:
    def __init__(self, *, registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                 namespaces: Sequence[str] | None, clusterwide: bool, login: Login | None = None,
                 cluster: Cluster | None = None, on_ready: Callable[[], None] | None = None,
                 name: str = "", services: Sequence[Service] = (), ownership: Ownership = EVERYTHING) -> None:
        self.registry = registry
        self.ownership = ownership  # which objects are this replica's (opd.ha); all of them by default
        self.services = list(services)
        self.settings = settings
        self.memo = memo
        self.patterns = list(namespaces or [])
        self.clusterwide = clusterwide or not self.patterns
        self.login = login
        self.name = name
        self.cluster = cluster
        self._own_cluster = cluster is None
        self._on_ready = on_ready
        self._tasks: set[asyncio.Task[Any]] = set()
        self._died: asyncio.Future[asyncio.Task[Any]] | None = None  # see _reap; made by run()
        self.processors: dict[ResourceRef, ResourceProcessor] = {}
        self.indexes: Indexes | None = None  # made in run(): they need the executor
        # (resource, namespace, selector): the handlers' stream, and the narrow one of held objects.
        self.subscriptions: dict[tuple[ResourceRef, str | None, str | None], Subscription] = {}
        self._resolved: dict[ResourceRef, asyncio.Event] = {}
        self._unresolved: dict[ResourceRef, str] = {}  # why a resource is not served (yet)
        self._namespaces: set[str] | None = None  # matching namespaces, when globs are used
        self._namespace_sub: Subscription | None = None
        self._executor: Executor | None = None  # sync handlers' pool: opd's, or settings.execution.executor
        self._pool: ThreadPoolExecutor | None = None  # opd's own pool (shut down by opd)
        self.poster: EventPoster | None = None
        self.is_ready = False
        # Label filtering (opd.ha): whether this operation writes shard labels, its labeller and streams.
        self.labels = LabelFilter(ownership, settings.persistence.prefix, self._spawn)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        """A task of the operator's own that dies stops ``run()`` with its error: a resource that
        silently stopped being served would be worse than a crash its supervisor can restart."""
        self._tasks.discard(task)
        if self._died is not None and not self._died.done() and not task.cancelled() and task.exception():
            self._died.set_result(task)

    @property
    def ready(self) -> bool:
        """Every stream's first LIST received (and, with indexes, every index complete): controller-runtime's
        "caches synced". Not that every listed object was handled, nor even queued: see ``snapshot()``'s backlog."""
        return all(e.is_set() for e in self._resolved.values()) and all(
            s.received.is_set() for s in self.subscriptions.values()) and (
            self.indexes is None or self.indexes.ready.is_set())

    def operator_arguments(self) -> arguments.Operator:
        """What every handler of this operator gets (its webhooks' too): ``settings``, ``memo``, ``api``
        (once connected: not for login handlers, which say how to connect) and the indexes."""
        return arguments.Operator(settings=self.settings, memo=self.memo,
                                  api=self.cluster.client.handler_client if self.cluster is not None else None,
                                  indexes=self.indexes.kwargs if self.indexes is not None else dict)

    def _operator_kwargs(self, reason: Reason) -> dict[str, Any]:
        """Kopf's activity kwargs (startup, cleanup, probe, authentication): see ``arguments.activity``."""
        return arguments.activity(self.operator_arguments(), reason, name=self.name)

    async def _run_operator_handlers(self, reason: Reason, *, fatal: bool) -> list[Any]:
        """Startup/cleanup/login handlers, in order; startup's failures stop the operator."""
        results = []
        for handler in self.registry.operator_handlers(reason):
            record: dict[str, Any] = {"started": time.time()}
            while True:
                outcome = await execute(handler, record, self._operator_kwargs(reason), executor=self._executor,
                                        retries=self.settings.retries)
                if outcome.success:
                    results.append(outcome.result)
                    break
                if outcome.delay is not None:
                    logger.warning(f"opd: {reason} handler {handler.id!r} failed: {outcome.error}; "
                                   f"retrying in {outcome.delay:g}s")
                    await asyncio.sleep(outcome.delay)
                    record = outcome.record
                    continue
                message = f"{reason} handler {handler.id!r} failed: {outcome.error}"
                if fatal:
                    raise OpdError(message)
                logger.error(f"opd: {message}")
                break
        return results

    async def probe(self, failed: set[str] | None = None) -> dict[str, Any]:
        """The probe handlers' values, for a health endpoint. A failing probe reports only its error's
        type: the message may hold what must not be shown (a DSN with its password); its id is added
        to ``failed`` when given."""
        report: dict[str, Any] = {}
        for handler in self.registry.operator_handlers(Reason.PROBE):
            try:
                call = invoke(handler, self._operator_kwargs(Reason.PROBE), executor=self._executor)
                report[handler.id] = await asyncio.wait_for(call, handler.timeout or PROBE_TIMEOUT)
            except Exception as exc:
                report[handler.id] = {"error": type(exc).__name__}
                if failed is not None:
                    failed.add(handler.id)
        return report

    async def run(self) -> None:
        self._died = asyncio.get_running_loop().create_future()
        prefix = f"opd-handler{'-' + self.name if self.name else ''}"
        self._pool = ThreadPoolExecutor(self.settings.execution.max_workers, thread_name_prefix=prefix)
        self._executor = self.settings.execution.executor or self._pool  # Kopf's: the operator's own executor
        self.indexes = Indexes([h for h in self.registry.handlers if h.reason == Reason.INDEX],
                               executor=self._executor, retries=self.settings.retries)
        if self.cluster is None:
            logins = [r for r in await self._run_operator_handlers(Reason.LOGIN, fatal=True) if r is not None]
            # Kopf's ConnectionInfo.priority: the highest wins; among equals, the first handler's.
            logins.sort(key=lambda found: -int(getattr(found, "priority", 0) or 0))
            self.cluster = await Cluster.connect(logins[0] if logins else self.login, self.settings)
        cluster = self.cluster
        self.poster = EventPoster(cluster.client, self.settings.posting, ownership=self.ownership)
        current_poster.set(self.poster)  # for opd.info/warn/exception in this operator's handlers
        self._spawn(self.poster.run(), "opd events")
        self.labelling(self.labels.wanted)  # told before it connected (opd.ha's labeller role)
        refs = self.registry.resources()
        where = "cluster-wide" if self.clusterwide else f"namespaces {', '.join(self.patterns)}"
        logger.info(f"opd: serving {len(refs)} resource(s) {where} at {cluster.client.host} ({cluster.client.source})")
        if not refs and not self.registry.webhooks():
            logger.warning("opd: the registry has no handlers: nothing to watch")
        try:
            await self._run_operator_handlers(Reason.STARTUP, fatal=True)
            self._adopt_execution_settings()
            for service in self.services:  # before readiness: a ready operator's webhooks answer
                await service.start(self)
                self._spawn(service.run(), f"opd {type(service).__name__}")
            if not self.clusterwide and not ns_patterns.is_static(self.patterns):
                self._namespaces = set()
                self._namespace_sub = cluster.hub.subscribe(NAMESPACES, None, None, self._namespace_event)
            for ref in refs:
                self._resolved[ref] = asyncio.Event()
                self._spawn(self._serve(ref), f"opd serve {ref}")
            self._spawn(self._announce_ready(), "opd readiness")
            if self.indexes:
                self._spawn(self._indexes_complete(), "opd indexes")
            died = await self._died  # until cancelled, or one of its tasks fails
            raise died.exception() or OpdError(f"task {died.get_name()!r} failed")
        finally:
            await self._shutdown()

    def _adopt_execution_settings(self) -> None:
        """Kopf's settings.execution as startup handlers left it: the operator's own executor for the sync
        handlers of its resources, or a new size of opd's pool (threads start as they are needed)."""
        execution = self.settings.execution
        if execution.executor is not None:
            self._executor = execution.executor
        elif self._pool is not None and execution.max_workers is not None:
            self._pool._max_workers = max(1, execution.max_workers)

    async def _shutdown(self) -> None:
        if self.cluster is None:
            return
        for service in self.services:  # first: its server still answers while it tidies up
            try:
                await asyncio.wait_for(service.stop(), SERVICE_STOP_TIMEOUT)
            except Exception as exc:
                logger.error(f"opd: stopping {type(service).__name__}: {type(exc).__name__}: {exc}")
        self.labels.final = self.events_received()
        for sub in [*self.subscriptions.values(), *([self._namespace_sub] if self._namespace_sub else [])]:
            self.cluster.hub.unsubscribe(sub)
        self.subscriptions.clear()
        self.labels.close(self.cluster.hub)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        await asyncio.gather(*(p.close() for p in self.processors.values()), return_exceptions=True)
        try:
            await asyncio.wait_for(self._run_operator_handlers(Reason.CLEANUP, fatal=False),
                                   self.settings.shutdown.timeout)
        except TimeoutError:
            logger.error(f"opd: cleanup handlers did not finish within {self.settings.shutdown.timeout:g}s")
        if self._pool is not None:  # an executor of the operator's own is the operator's to shut down
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_cluster:
            await self.cluster.close()
            self.cluster = None

    async def _announce_ready(self) -> None:
        if self._namespace_sub is not None:
            await self._namespace_sub.listed.wait()
        await asyncio.gather(*(e.wait() for e in self._resolved.values()))
        while pending := [s.received.wait() for s in self.subscriptions.values() if not s.received.is_set()]:
            await asyncio.gather(*pending)
        if self.indexes is not None:  # handlers that use an index wait for it: so does readiness
            await self.indexes.ready.wait()
        self.is_ready = True
        fed, listed = self._backlog()
        logger.info(f"opd: ready{' (' + self.name + ')' if self.name else ''}: every watch has listed its objects "
                    f"({listed} listed, {fed} of them fed to the handlers so far)")
        if self._on_ready is not None:
            self._on_ready()

    async def _resolve(self, ref: ResourceRef) -> Resource | None:
        assert self.cluster is not None
        backoff = Backoff(self.settings.watching.backoff_initial, self.settings.watching.backoff_max)
        reported = None  # say each kind of trouble once, not at every retry
        while True:
            try:
                resource = await self.cluster.discovery.resolve(ref)
            except ConfigError as exc:
                logger.error(f"opd: {exc}")
                self._unresolved[ref] = f"resource {ref} is ambiguous"
                return None
            except REQUEST_ERRORS as exc:
                if reported != "unreachable":
                    logger.warning(f"opd: API server unreachable while resolving {ref} ({exc!s}); retrying")
                    reported = "unreachable"
                await asyncio.sleep(backoff.next())
                continue
            if resource is not None:
                if reported == "unreachable":
                    logger.info(f"opd: API server reachable again; serving {resource}")
                self._unresolved.pop(ref, None)
                return resource
            self._unresolved[ref] = f"unknown resource {ref}"
            if reported != "unknown":
                logger.error(f"opd: unknown resource {ref!s}: not served by the API server; "
                             "retrying until it appears (is the CRD installed?)")
                reported = "unknown"
            await asyncio.sleep(10.0)

    async def _indexes_complete(self) -> None:
        """Handlers wait until every index has seen its resource listed once (and indexed it)."""
        assert self.indexes is not None
        await asyncio.gather(*(e.wait() for e in self._resolved.values()))
        indexed = [ref for ref, processor in self.processors.items() if processor.indexers]
        await asyncio.gather(*(sub.listed.wait() for key, sub in self.subscriptions.items() if key[0] in indexed))
        await asyncio.gather(*(self.processors[ref].indexed() for ref in indexed))
        self.indexes.ready.set()
        sizes = ", ".join(f"{name}: {index.objects} object(s)" for name, index in self.indexes.indexes.items())
        logger.info(f"opd: indexes complete ({sizes}); handlers start")

    async def _serve(self, ref: ResourceRef) -> None:
        resource = await self._resolve(ref)
        if resource is None:
            return
        assert self.cluster is not None
        processor = ResourceProcessor(client=self.cluster.client, resource=resource, ref=ref,
                                      registry=self.registry, settings=self.settings, memo=self.memo,
                                      executor=self._executor, poster=self.poster, indexes=self.indexes,
                                      ownership=self.ownership)
        self.processors[ref] = processor
        if not resource.namespaced or self.clusterwide:
            self._subscribe(ref, processor, None)
        elif self._namespaces is None:
            for namespace in self.patterns:
                self._subscribe(ref, processor, namespace)
        else:
            assert self._namespace_sub is not None
            await self._namespace_sub.listed.wait()
            for namespace in sorted(self._namespaces):
                self._subscribe(ref, processor, namespace)
        self._resolved[ref].set()

    def _subscribe(self, ref: ResourceRef, processor: ResourceProcessor, namespace: str | None) -> None:
        assert self.cluster is not None
        room = 2 * self.settings.watching.list_page_size
        streams = [(processor.selector, processor.deliver)]
        if processor.holding_selector is not None:
            streams.append((processor.holding_selector, processor.deliver_held))
        for selector, deliver in streams:
            if (ref, namespace, selector) not in self.subscriptions:
                self.subscriptions[(ref, namespace, selector)] = self.cluster.hub.subscribe(
                    processor.resource, namespace, self.labels.narrowed(selector), deliver,
                    backlog=lambda: processor.wait_for_room(room), shards=self.labels.shards())
            self.labels.subscribe(self.cluster.hub, (ref, namespace, selector), processor.resource)

    # -- label filtering (opd.ha, ``opd.engine.sharding``) -----------------------------------------------------

    def labels_written(self) -> int:
        """Shard labels this operation wrote (as the labeller): its extra writes, one per object."""
        return self.labels.written()

    def events_received(self) -> tuple[int, int]:
        """Watch events its streams received so far, (of its handlers' streams, of the labeller's)."""
        return self.labels.received(self.cluster.hub if self.cluster is not None else None,
                                    list(self.subscriptions.values()))

    def labelling(self, on: bool) -> None:
        """Write the shard label on the objects of every stream that lack it (this replica holds the
        labeller role), or stop: a stream of unlabelled objects per handlers' stream (see labelling)."""
        self.labels.wanted = on
        if on and self.cluster is not None and self.labels.start(self.cluster.client):
            for (ref, namespace, _) in list(self.subscriptions):
                if ref in self.processors:
                    self._subscribe(ref, self.processors[ref], namespace)
        elif not on:
            self.labels.stop(self.cluster.hub if self.cluster is not None else None)

    def relist(self) -> None:
        """Have every object listed again for the processors: their subscriptions are made afresh,
        and the hub gives each new one its own LIST, reconciled with the stream. For a replica that
        has just come to own objects (opd.ha) whose events its processors dropped until now."""
        if self.cluster is None:
            return
        hub = self.cluster.hub
        ending = watchers(hub)
        for key, old in list(self.subscriptions.items()):
            selector, shards = self.labels.moving(old, key, ending)
            # first: the stream stays (when filtered by label or server, a new one with the shards held now)
            new = self.subscriptions[key] = hub.subscribe(old.key[0], old.key[1], selector, old.deliver, old.backlog,
                                                          shards=shards)
            hub.unsubscribe(old)
            if not old.listed.is_set():  # the indexes may be waiting for the old one's first list
                self._spawn(_forward(new.listed, old.listed), f"opd relist {key[0]}")
            if not old.received.is_set():  # and readiness
                self._spawn(_forward(new.received, old.received), f"opd relist {key[0]}")

    # -- the status surface: what the daemon and opd.ha read and do ------------------------------------------

    def snapshot(self) -> OperationStatus:
        """What it is doing now, as frozen data; safe to call from another thread than the operation's."""
        cluster = self.cluster
        watchers = {(w.resource, w.namespace, w.label_selector, w.shard_selector): w
                    for w in (copied(lambda: cluster.hub.watchers) or [])} if cluster is not None else {}
        streams = []
        for sub in copied(lambda: list(self.subscriptions.values())) or []:
            watcher = watchers.get(sub.key)
            if watcher is not None:
                streams.append(status.stream(watcher, listed=sub.received.is_set(), progress=sub.progress))
        unservable = [*(copied(lambda: list(self._unresolved.values())) or []),
                      *(s.refusal for s in streams if s.refusal is not None)]
        found = copied(lambda: list(self.processors.values())) or []
        processors = {str(p.resource): status.processor(p) for p in found}
        return OperationStatus(name=self.name, ready=self.is_ready, streams=tuple(streams),
                               unservable=tuple(unservable), processors=processors,
                               events_posted=self.poster.posted if self.poster is not None else 0)

    def _backlog(self) -> tuple[int, int]:
        """Of the objects its streams' first LISTs hold: how many were fed to its handlers' queues, how many listed."""
        progress = [s.progress for s in copied(lambda: list(self.subscriptions.values())) or []]
        return sum(min(p.fed, p.listed) for p in progress), sum(p.listed for p in progress)

    def busy(self, uids: Uids) -> frozenset[str]:
        """Of these objects, those whose handlers have started in the step in process (in the operation's
        loop); not those waiting for a thread: their handlers start only if still owned then."""
        return frozenset(uid for p in self.processors.values() for uid in p.known() if uids(uid) and p.busy(uid))

    def spawned(self, uids: Uids) -> frozenset[str]:
        """Of these objects, those with timers or daemons running (in the operation's loop)."""
        return frozenset(uid for p in self.processors.values() for uid in p.spawner.uids() if uids(uid))

    async def stop_spawned(self, uids: Uids, reason: str) -> None:
        """Stop the timers and daemons of these objects, and wait until they have (their last
        outcomes are written); what is queued of them stays."""
        await asyncio.gather(*(p.spawner.stop(uid, reason) for p in list(self.processors.values())
                               for uid in p.spawner.uids() if uids(uid)))

    async def disown(self, uids: Uids, reason: str) -> None:
        """Stop everything of these objects here (another replica's now): their queued states,
        retries, timers and daemons, and what the operation remembered of them. An object in process
        finishes its step; nothing new starts for it unless its events come again."""
        await asyncio.gather(*(p.disown(uid, reason) for p in list(self.processors.values())
                               for uid in p.known() if uids(uid)))

    def _namespace_event(self, event_type: str, body: dict[str, Any]) -> None:
        assert self._namespaces is not None and self.cluster is not None
        name = body["metadata"]["name"]
        wanted = event_type != "DELETED" and ns_patterns.matches(name, self.patterns)
        if wanted and name not in self._namespaces:
            self._namespaces.add(name)
            if self._namespace_sub is not None and self._namespace_sub.listed.is_set():
                for ref, processor in self.processors.items():
                    self._subscribe(ref, processor, name)
        elif not wanted and name in self._namespaces:
            self._namespaces.discard(name)
            for key in [k for k in self.subscriptions if k[1] == name]:
                self.cluster.hub.unsubscribe(self.subscriptions.pop(key))
            self.labels.drop_namespace(self.cluster.hub, name)
