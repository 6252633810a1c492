"""One plugin's operator, run and restarted: in the daemon's loop or a thread of its own, with
backoff after a crash, and a crash in any task it spawned counting as its own."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from opd.engine.backoff import Backoff
from opd.engine.cluster import Cluster
from opd.engine.operation import Operation, Service
from opd.engine.ownership import EVERYTHING
from opd.ha import Replica, View
from opd.kube.credentials import Login
from opd.orchestration import Memo, build_operation
from opd.service.plugins import Plugin
from opd.settings import OperatorSettings

if TYPE_CHECKING:
    pass

T = TypeVar("T")


# -- which plugin a task belongs to -------------------------------------------------------------------------------


class _Attempt:
    """One run of one plugin's operator. Every task created while it runs belongs to it.

    How a crash in any task of a plugin is seen, its own or one its handlers spawned:

    - ``_current`` (a contextvar) names the attempt in the context the attempt's root task runs in;
      asyncio copies the context into every task created from there, so everything the operator,
      its handlers and its startup create carries it, however deep.
    - A task factory (``track_tasks``) gives such tasks a tag naming the attempt.
    - An exception nobody retrieved is asyncio's definition of a crash: it reports the task to the
      loop's exception handler ("Task exception was never retrieved") when the task is released,
      which CPython does as soon as the last reference to it goes. Ours restarts the plugin the
      tag names, instead of printing a traceback and carrying on without the task's work. A task
      whose error its creator awaits (wait_for, gather, the engine's own retries) is not a crash.
    - The operator's own tasks (``Operation._spawn``) stop ``Operation.run()`` directly.

    A task kept referenced (in a list, say) is reported only once released: a plugin that keeps its
    tasks must await them. Tasks of the shared connection (watch streams) are created by the first
    plugin that subscribes, so they carry its tag; they never end with an error of their own.
    """

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.task: asyncio.Task[Any] | None = None  # the attempt's root task, in its own loop
        self.error: BaseException | None = None

    def fail(self, exc: BaseException, where: str) -> None:
        """A task of this attempt died with ``exc``: stop the attempt; the runner restarts it."""
        task = self.task
        if self.error is not None or task is None or task.done():
            return  # already failing, or over (a straggler of an earlier attempt)
        self.error = exc
        logger.bind(plugin=self.plugin).error(
            f"opd: plugin {self.plugin!r}: task {where!r} failed: {_one_line(exc)}")
        with contextlib.suppress(RuntimeError):  # its loop is closed: the attempt is over anyway
            task.get_loop().call_soon_threadsafe(task.cancel)


_current: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("opd_plugin_attempt", default=None)


class _PluginTask(asyncio.Task[Any]):
    """A task created inside a plugin's attempt (C tasks take no attributes; a subclass does)."""

    opd_attempt: _Attempt | None = None


def track_tasks(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Install the task factory and exception handler described in ``_Attempt``; returns an undo."""
    factory, handler = loop.get_task_factory(), loop.get_exception_handler()

    def create(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        context = kwargs.get("context")
        attempt = context.get(_current) if context is not None else _current.get()
        if attempt is None:
            return factory(loop, coro, **kwargs) if factory is not None else asyncio.Task(coro, loop=loop, **kwargs)
        task = _PluginTask(coro, loop=loop, **kwargs)
        task.opd_attempt = attempt
        return task

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # "... exception was never retrieved": asyncio names the task "future" (as any future).
        task, exc = context.get("future") or context.get("task"), context.get("exception")
        attempt = getattr(task, "opd_attempt", None)
        if isinstance(attempt, _Attempt) and isinstance(task, asyncio.Task) and isinstance(exc, Exception):
            attempt.fail(exc, task.get_name())
        elif handler is not None:
            handler(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_task_factory(create)
    loop.set_exception_handler(on_error)

    def undo() -> None:
        loop.set_task_factory(factory)
        loop.set_exception_handler(handler)

    return undo


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# -- restarts -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RestartBackoff:
    """Delays between restarts: doubling from ``initial`` up to ``maximum``, and back to ``initial``
    once a run lasted ``reset_after`` seconds: a plugin that ran well and then crashed is restarted
    promptly, not after the minute its crash loop of last week had reached."""

    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 60.0
    _backoff: Backoff = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self._backoff = Backoff(self.initial, self.maximum)

    def delay(self, ran_for: float) -> float:
        """The delay before the next start, after a run that lasted ``ran_for`` seconds."""
        if ran_for >= self.reset_after:
            self._backoff.reset()
        return self._backoff.next()


# -- one plugin ---------------------------------------------------------------------------------------------------


class PluginRunner:
    """Runs one loaded plugin's operator and restarts it after a crash, with backoff."""

    def __init__(self, plugin: Plugin, *, login: Login, shutdown_timeout: float,
                 backoff: RestartBackoff | None = None,
                 services: Callable[[], Sequence[Service]] = tuple, replica: Replica | None = None) -> None:
        self.plugin = plugin
        self.replica = replica  # with [ha]: which objects this daemon's replica owns
        self.services = services  # made anew for each run of its operator (its webhooks)
        self.login = login
        self.shutdown_timeout = shutdown_timeout
        self.backoff = backoff or RestartBackoff()
        self.state = "starting"  # starting, ready, failed (crashed: waiting to restart), stopped
        self.restarts = 0
        self.last_error: str | None = None  # for the log: type and message
        self.error_type: str | None = None  # for health output and STATUS=: messages may hold secrets
        self.crashed = False  # since it was last ready
        self.failure: str | None = None  # why it counts as failed; kept by Supervisor._monitor
        self.started_at = time.monotonic()  # of the current attempt
        self.operation: Operation | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the operation's loop
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def cluster(self) -> Cluster | None:
        """The operation's connection: the shared one, or its own in its thread."""
        return self.operation.cluster if self.operation is not None else None

    @property
    def isolated(self) -> bool:
        return self.plugin.config.isolation == "thread"

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
        self.state, self.crashed = "ready", False
        self.ready.set()

    async def _supervise(self, cluster: Cluster) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.ready.clear()
            self.state, self.started_at = "starting", time.monotonic()
            attempt = _Attempt(self.name)
            context = contextvars.copy_context()
            context.run(_current.set, attempt)
            attempt.task = loop.create_task(self._run_once(cluster), name=f"opd plugin {self.name} run",
                                            context=context)
            try:
                await attempt.task
                return  # stopped on purpose
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # stopped
                # One of its tasks died (the attempt was cancelled for it), or its own code cancelled it.
                error: BaseException = attempt.error or RuntimeError("its operator was cancelled from within")
            except Exception as exc:
                error = attempt.error or exc
            finally:
                self.operation, self.loop = None, None
            self.ready.clear()
            self.state, self.restarts, self.crashed = "failed", self.restarts + 1, True
            self.last_error, self.error_type = _one_line(error), type(error).__name__
            delay = self.backoff.delay(time.monotonic() - self.started_at)
            logger.bind(plugin=self.name).error(
                f"opd: plugin {self.name!r} crashed: {self.last_error}; restarting in {delay:g}s")
            await asyncio.sleep(delay)

    async def _run_once(self, cluster: Cluster) -> None:
        """One run of the plugin's operator, until cancelled or it fails."""
        with logger.contextualize(plugin=self.name):
            if self.isolated:
                await self._run_in_thread()
            else:
                await self._run_shared(cluster)

    def _operation(self, cluster: Cluster | None, on_ready: Callable[[], None]) -> Operation:
        """In the loop the operation runs in (its view of the replica's ownership is bound to it)."""
        config = self.plugin.config
        view = self.replica.view() if self.replica is not None else None
        return build_operation(
            registry=self.plugin.registry, settings=self._settings(), memo=Memo(),
            namespaces=list(config.namespaces), clusterwide=config.clusterwide, cluster=cluster,
            login=self.login if cluster is None else None, on_ready=on_ready, name=self.name,
            services=self.services(), ownership=view or EVERYTHING,
        )

    async def _run_shared(self, cluster: Cluster) -> None:
        self.operation, self.loop = self._operation(cluster, self._became_ready), None
        try:
            await self.operation.run()
        finally:
            _detach(self.operation)

    async def _run_in_thread(self) -> None:
        """The plugin's own thread, loop and connection: blocking code there cannot stall the others."""
        main = asyncio.get_running_loop()
        attempt = _Attempt(self.name)  # its tasks live in the thread's loop: their own attempt
        outcome: list[BaseException | None] = []
        ended = main.create_future()
        stopping = threading.Event()  # for a stop that comes before the thread's loop runs

        def became_ready() -> None:
            main.call_soon_threadsafe(self._became_ready)

        async def inside() -> None:
            loop = asyncio.get_running_loop()
            track_tasks(loop)
            attempt.task = asyncio.current_task()
            if stopping.is_set():  # checked after the task is published: one of the two sides sees the other
                return
            _current.set(attempt)  # in this task's context: every task it creates inherits it
            with logger.contextualize(plugin=self.name):
                operation = self._operation(None, became_ready)
                self.operation, self.loop = operation, loop
                try:
                    await operation.run()
                finally:
                    _detach(operation)
                    self.operation, self.loop = None, None

        def thread_main() -> None:
            try:
                asyncio.run(inside())
                outcome.append(None)
            except BaseException as exc:  # carried over to the supervising loop, which restarts it
                outcome.append(exc)
            with contextlib.suppress(RuntimeError):  # the main loop is gone: nobody waits
                main.call_soon_threadsafe(_settle, ended)

        thread = threading.Thread(target=thread_main, name=f"opd-plugin-{self.name}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(ended)
        finally:
            stopping.set()
            if attempt.task is not None and not attempt.task.done():
                with contextlib.suppress(RuntimeError):
                    attempt.task.get_loop().call_soon_threadsafe(attempt.task.cancel)
            await main.run_in_executor(None, thread.join, self.shutdown_timeout + 5)
        failure = attempt.error or (outcome[0] if outcome else None)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:  # cancelled from within, SystemExit...: a crash all the same, never a silent end
            raise RuntimeError(f"its thread ended with {type(failure).__name__}") from failure

    async def in_its_loop(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run a coroutine where the plugin's operation lives (its own thread's loop, if isolated)."""
        loop = self.loop
        if loop is None or loop is asyncio.get_running_loop():
            return await asyncio.wait_for(make(), timeout)
        coro = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # its loop is closing: the plugin is restarting
            coro.close()
            raise
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise RuntimeError(f"plugin {self.name!r} stopped meanwhile") from None


def _detach(operation: Operation | None) -> None:
    """An operation's run is over: its view of the replica's ownership goes with it."""
    if operation is not None and isinstance(operation.ownership, View):
        operation.ownership.detach()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


