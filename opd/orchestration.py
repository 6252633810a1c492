"""Running an operator: ``operator()``, or ``spawn_tasks()`` + ``run_tasks()`` by hand.

``build_operation()`` is the one place an operation is made: embedding, ``opd run``, ``opd run
--ha`` and ``opd start``'s plugins all go through it, so that they serve the same things (the
operator's webhooks; a replica's ownership, attached). ``spawn_operation()`` gives an operation
its tasks: the liveness endpoint (the operation's own probes), a stop flag, signals.

opd cancels only the tasks it created: the host application's tasks in the
same loop are never touched. OS signal handlers are installed only in the
main thread; elsewhere a ``stop_flag`` or cancelling the operator stops it.
``liveness_endpoint=`` serves Kopf's health endpoint: the probe handlers' values.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import signal
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from loguru import logger

from opd.engine.cluster import Cluster
from opd.engine.operation import Operation, Service
from opd.engine.ownership import EVERYTHING, Ownership
from opd.errors import ConfigError
from opd.kube import credentials
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry, Reason, get_default_registry
from opd.settings import OperatorSettings
from opd.webhooks.hosting import Webhooks

Flag = asyncio.Event | threading.Event | asyncio.Future[Any] | concurrent.futures.Future[Any]


class Memo(dict[str, Any]):
    """A per-operator scratchpad handed to every handler as ``memo``; keys read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


async def wait_flag(flag: Flag) -> None:
    """Wait until a flag of any supported kind is raised, from any thread."""
    if isinstance(flag, asyncio.Event):
        await flag.wait()
    elif isinstance(flag, asyncio.Future) and flag.get_loop() is asyncio.get_running_loop():
        await asyncio.shield(flag)  # our cancellation must not cancel the caller's future
    elif isinstance(flag, (asyncio.Future, concurrent.futures.Future)):
        loop = asyncio.get_running_loop()
        raised = asyncio.Event()
        flag.add_done_callback(lambda _: loop.call_soon_threadsafe(raised.set))
        await raised.wait()
    elif isinstance(flag, threading.Event):
        while not flag.is_set():  # noqa: ASYNC110 - a threading.Event offers no callback to await
            await asyncio.sleep(0.1)
    else:
        raise TypeError(f"unsupported flag type: {type(flag).__name__}")


def raise_flag(flag: Flag | None) -> None:
    if flag is None:
        return
    if isinstance(flag, (asyncio.Event, threading.Event)):
        flag.set()
    elif isinstance(flag, asyncio.Future):
        def resolve() -> None:
            if not flag.done():
                flag.set_result(None)

        try:
            same_loop = flag.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            same_loop = False
        if same_loop:
            resolve()
        else:
            flag.get_loop().call_soon_threadsafe(resolve)
    elif isinstance(flag, concurrent.futures.Future):
        # Raised concurrently by someone else: fine.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if not flag.done():
                flag.set_result(None)
    else:
        raise TypeError(f"unsupported flag type: {type(flag).__name__}")


async def _wait_stop_flag(flag: Flag) -> None:
    await wait_flag(flag)
    logger.info("opd: stop flag raised: stopping")


async def _wait_signals() -> None:
    loop = asyncio.get_running_loop()
    received = asyncio.Event()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, received.set)
    try:
        await received.wait()
        logger.info("opd: signal received: stopping")
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def import_kubernetes_client(registry: OperatorRegistry) -> None:
    """Kopf's default login (no login handlers) configures the official ``kubernetes`` client;
    opd's connection does so when that package is imported: for an embedded operator or
    ``opd run``, import it if it is installed (``opd start`` does not: see credentials.connect)."""
    if not registry.operator_handlers(Reason.LOGIN):
        await credentials.import_kubernetes_client()


async def _run_operation(operation: Operation) -> None:
    await import_kubernetes_client(operation.registry)
    await operation.run()


# -- the liveness endpoint (Kopf's --liveness / liveness_endpoint=) --------------------------------------------------

PROBE_REUSE = 10.0  # seconds one run of the probes answers every request (Kopf caches them too)
Prober = Callable[[set[str]], Awaitable[dict[str, Any]]]  # Operation.probe: values, failures added to the set


def liveness_address(url: str, what: str = "liveness_endpoint") -> tuple[str, int, str]:
    """``http://HOST:PORT/PATH`` as (host, port, path); anything else is a one-line ConfigError naming ``what``."""
    try:  # urlsplit itself refuses some strings (an unclosed IPv6 bracket)
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        port = parts.port if parts else None
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme != "http" or not parts.hostname or port is None:
        raise ConfigError(f"{what}: expected http://HOST:PORT/PATH (e.g. http://0.0.0.0:8080/healthz), got {url!r}")
    return parts.hostname, port, parts.path or "/"


class LivenessEndpoint:
    """Serves the probe handlers' values as JSON at a URL while ``serve()`` runs: 200 when every probe
    answered, 500 when one failed (its value then names the error's type only: a message may carry
    what must not be shown). One run of the probes at a time, its answer reused for ``PROBE_REUSE``."""

    def __init__(self, url: str, probe: Prober, *, what: str = "liveness_endpoint") -> None:
        self.url = url
        self.host, self.port, self.path = liveness_address(url, what)
        self._what = what
        self._probe = probe
        self._lock = asyncio.Lock()
        self._answer: tuple[float, str, int] | None = None  # (when, body, status)
        self._runner: web.AppRunner | None = None

    async def _get(self, _: web.Request) -> web.Response:
        async with self._lock:  # a busy prober does not pile up probe runs
            if self._answer is None or time.monotonic() - self._answer[0] >= PROBE_REUSE:
                failed: set[str] = set()
                report = await self._probe(failed)
                self._answer = (time.monotonic(), json.dumps(report, default=str), 500 if failed else 200)
            body, status = self._answer[1:]
        return web.Response(text=body, content_type="application/json", status=status)

    async def start(self) -> None:
        """Listen now: a port that is taken is a one-line ConfigError before the operator starts."""
        app = web.Application()
        app.router.add_get(self.path, self._get)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.host}:{self.port}"
            raise ConfigError(f"{self._what}: cannot listen on {where}: {exc.strerror or exc}") from None
        self._runner = runner
        logger.info(f"opd: liveness endpoint at {self.url}")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def serve(self) -> None:
        """Until cancelled; then it stops listening."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await asyncio.shield(self.stop())


def _kopf_peering_kwargs(standalone: bool | None, priority: int | None, peering_name: str | None) -> None:
    """Kopf's peering arguments: opd never peers (one operator runs; replicas: opd.ha Leases)."""
    if priority is not None or peering_name is not None:
        logger.warning("opd: priority= and peering_name= (Kopf's peering) are not used: opd does not peer; "
                       "run one operator, or replicas with `opd run --ha` (Leases)")
    elif standalone is False:
        logger.info("opd: standalone=False: opd does not peer, it always runs standalone")


@runtime_checkable
class Attached(Protocol):
    """An ownership that follows one operation (a replica's ``opd.ha.View``): it relists the
    operation's streams when it gains objects, and disowns them when it loses them."""

    def attach(self, operation: Operation) -> None: ...


def build_operation(
    *,
    registry: OperatorRegistry,
    settings: OperatorSettings,
    memo: Any = None,
    namespaces: Sequence[str] | None = None,
    clusterwide: bool = False,
    login: Login | None = None,
    cluster: Cluster | None = None,
    on_ready: Callable[[], None] | None = None,
    name: str = "",
    services: Sequence[Service] | None = None,
    ownership: Ownership = EVERYTHING,
) -> Operation:
    """The one place an operation is made (call it in the loop it will run in).

    ``services``: what it serves besides its watches; by default its own webhooks (its admission
    handlers and converters, if it has any), as embedding, ``opd run`` and ``opd run --ha`` serve
    them; the daemon gives each plugin its mount on the shared server instead. ``ownership``: which
    objects are this replica's; one that follows its operation (``Attached``) is attached here.
    ``memo``: a fresh ``Memo`` when not given."""
    operation = Operation(
        registry=registry, settings=settings, memo=memo if memo is not None else Memo(),
        namespaces=namespaces, clusterwide=clusterwide, login=login, cluster=cluster, on_ready=on_ready,
        name=name, services=[Webhooks()] if services is None else services, ownership=ownership,
    )
    if isinstance(ownership, Attached):
        ownership.attach(operation)
    return operation


async def spawn_operation(
    operation: Operation,
    *,
    stop_flag: Flag | None = None,
    install_signal_handlers: bool | None = None,
    liveness_endpoint: str | None = None,
) -> list[asyncio.Task[Any]]:
    """The root tasks of a built operation in the running loop; run them with ``run_tasks()``.
    The liveness endpoint serves the operation's own probes and listens before this returns
    (a port that is taken: a one-line ConfigError, before anything runs)."""
    loop = asyncio.get_running_loop()
    tasks = []
    if liveness_endpoint is not None:
        endpoint = LivenessEndpoint(liveness_endpoint, operation.probe)
        await endpoint.start()
        tasks.append(loop.create_task(endpoint.serve(), name="opd liveness"))
    tasks.append(loop.create_task(_run_operation(operation), name="opd operator"))
    if stop_flag is not None:
        tasks.append(loop.create_task(_wait_stop_flag(stop_flag), name="opd stop flag"))
    if install_signal_handlers is None:
        install_signal_handlers = threading.current_thread() is threading.main_thread()
    if install_signal_handlers:
        tasks.append(loop.create_task(_wait_signals(), name="opd signals"))
    return tasks


async def spawn_tasks(
    *,
    registry: OperatorRegistry | None = None,
    settings: OperatorSettings | None = None,
    memo: Any = None,
    namespaces: Sequence[str] | None = None,
    clusterwide: bool = False,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    login: Login | None = None,
    install_signal_handlers: bool | None = None,
    liveness_endpoint: str | None = None,
    standalone: bool | None = None,
    priority: int | None = None,
    peering_name: str | None = None,
    namespace: str | None = None,
) -> list[asyncio.Task[Any]]:
    """Create the operator's root tasks in the running loop; run them with ``run_tasks()``.

    Kopf's ``liveness_endpoint`` serves the probes (listening before this returns); ``namespace``
    (Kopf's older spelling) is one of ``namespaces``; ``standalone``, ``priority`` and
    ``peering_name`` are accepted: opd never peers."""
    _kopf_peering_kwargs(standalone, priority, peering_name)
    if namespace is not None:
        namespaces = [*(namespaces or []), namespace]
    operation = build_operation(
        registry=registry if registry is not None else get_default_registry(),
        settings=settings if settings is not None else OperatorSettings(),
        memo=memo, namespaces=namespaces, clusterwide=clusterwide, login=login,
        on_ready=lambda: raise_flag(ready_flag),
    )
    return await spawn_operation(operation, stop_flag=stop_flag, install_signal_handlers=install_signal_handlers,
                                 liveness_endpoint=liveness_endpoint)


async def _terminate(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> None:
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            logger.error(f"opd: task {task.get_name()!r} did not stop within {timeout:.0f}s")


async def run_tasks(
    root_tasks: Collection[asyncio.Task[Any]],
    *,
    ignored: Collection[asyncio.Task[Any]] = frozenset(),
    return_when: str = asyncio.FIRST_COMPLETED,
    stop_timeout: float = 30.0,
) -> None:
    """Wait for the root tasks (the first to finish, or all); then stop the rest,
    and re-raise what a root task failed with. Cancelling this cancels them."""
    tasks = list(root_tasks)
    try:
        await asyncio.wait(tasks, return_when=return_when)
    except asyncio.CancelledError:
        await _terminate(tasks, stop_timeout)
        raise
    await _terminate(tasks, stop_timeout)
    for task in tasks:
        if task in ignored or not task.done() or task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            raise exc


async def operator(
    *,
    registry: OperatorRegistry | None = None,
    settings: OperatorSettings | None = None,
    memo: Any = None,
    namespaces: Sequence[str] | None = None,
    clusterwide: bool = False,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    login: Login | None = None,
    install_signal_handlers: bool | None = None,
    liveness_endpoint: str | None = None,
    standalone: bool | None = None,
    priority: int | None = None,
    peering_name: str | None = None,
    namespace: str | None = None,
) -> None:
    """Run an operator until it is stopped (stop flag, signal, or cancellation); the arguments
    are ``spawn_tasks()``'s."""
    tasks = await spawn_tasks(
        registry=registry, settings=settings, memo=memo, namespaces=namespaces, clusterwide=clusterwide,
        stop_flag=stop_flag, ready_flag=ready_flag, login=login,
        install_signal_handlers=install_signal_handlers, liveness_endpoint=liveness_endpoint,
        standalone=standalone, priority=priority, peering_name=peering_name, namespace=namespace,
    )
    await run_tasks(tasks, return_when=asyncio.FIRST_COMPLETED)


def run(*, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
    """Run an operator until it is stopped: in ``loop`` when given (Kopf's ``run(loop=)``),
    else in a new event loop of this thread; the arguments are ``operator()``'s."""
    if loop is None:
        asyncio.run(operator(**kwargs))
    else:
        loop.run_until_complete(operator(**kwargs))
