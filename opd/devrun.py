"""``opd run``: handlers from files and modules, in one registry, for development (like ``kopf run``),
and Kopf's liveness endpoint (``--liveness http://0.0.0.0:8080/healthz``)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import json
import runpy
import signal
import sys
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

from opd.engine.invocation import invoke
from opd.errors import ConfigError
from opd.ha.settings import HaSettings
from opd.kube.credentials import Login
from opd.registry import OperatorRegistry, Reason, set_default_registry
from opd.settings import OperatorSettings
from opd.typedefs import ObjectLogger, activity

PROBE_TIMEOUT = 5.0  # seconds, for a probe handler without a timeout of its own


def _where(exc: BaseException, source: str) -> str:
    """The innermost line of the user's own file in a traceback, e.g. ' (handlers.py:12)'."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if f.filename.endswith(source)] or frames[-1:]
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f" ({Path(exc.filename or source).name}:{exc.lineno})"
    return f" ({Path(mine[-1].filename).name}:{mine[-1].lineno})" if mine else ""


def load(files: Sequence[str], modules: Sequence[str]) -> OperatorRegistry:
    """Run the files and import the modules; their decorators register into one fresh registry."""
    registry = OperatorRegistry()
    context = contextvars.copy_context()
    context.run(set_default_registry, registry)
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"cannot load handlers from {file}: no such file")
        sys.path.insert(0, str(path.resolve().parent))  # siblings import as in `python file.py`
        try:
            context.run(runpy.run_path, str(path), run_name="__opd_handlers__")
        except Exception as exc:
            raise ConfigError(f"cannot load handlers from {file}: {type(exc).__name__}: {exc}"
                              f"{_where(exc, path.name)}") from exc
    for module in modules:
        try:
            context.run(importlib.import_module, module)
        except Exception as exc:
            raise ConfigError(f"cannot import handlers module {module}: {type(exc).__name__}: {exc}") from exc
    if not registry.handlers:
        raise ConfigError("no handlers registered: give files or modules with @opd.on... decorators")
    return registry


def _liveness_address(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ConfigError(f"--liveness: expected http://HOST:PORT/PATH (e.g. http://0.0.0.0:8080/healthz), got {url!r}")
    return parts.hostname, port, parts.path or "/"


@contextlib.asynccontextmanager
async def liveness(url: str | None, registry: OperatorRegistry, *, settings: OperatorSettings,
                   memo: Any) -> AsyncIterator[None]:
    """Serve the probe handlers' values as JSON at ``url`` while the block runs (nothing without a url):
    200 when every probe answered, 500 when one failed (its value then names the error's type only:
    a message may carry what must not be shown)."""
    if url is None:
        yield
        return
    host, port, path = _liveness_address(url)
    lock = asyncio.Lock()  # one run of the probes at a time: a busy prober does not pile them up

    async def probe(_: web.Request) -> web.Response:
        async with lock:
            report: dict[str, Any] = {}
            failed = False
            for handler in registry.operator_handlers(Reason.PROBE):
                kwargs = {"settings": settings, "memo": memo, "logger": ObjectLogger({"probe": handler.id}),
                          "activity": activity(Reason.PROBE)}
                try:
                    report[handler.id] = await asyncio.wait_for(invoke(handler, kwargs, executor=None),
                                                                handler.timeout or PROBE_TIMEOUT)
                except Exception as exc:
                    report[handler.id], failed = {"error": type(exc).__name__}, True
        return web.Response(text=json.dumps(report, default=str), content_type="application/json",
                            status=500 if failed else 200)

    app = web.Application()
    app.router.add_get(path, probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"--liveness: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    logger.info(f"opd: liveness endpoint at {url}")
    try:
        yield
    finally:
        await runner.cleanup()


async def replicated(*, registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                     namespaces: Sequence[str] | None, clusterwide: bool, login: Login | None,
                     ha: HaSettings) -> None:
    """Run the operator as one replica of several (``opd run --ha``) until SIGINT or SIGTERM.

    Its watches run from the start; handlers run only for what this replica owns (the Lease, or
    its shards). Stopping stops the operator first (handlers in flight finish and write), then
    releases the Leases, so that another replica takes over at once; kill -9 leaves them to expire.
    """
    from opd.engine.operation import Operation
    from opd.ha import Replica

    replica = Replica(ha, login=login, networking=settings.networking)
    await replica.start()
    view = replica.view()
    try:
        operation = Operation(registry=registry, settings=settings, memo=memo, namespaces=namespaces,
                              clusterwide=clusterwide, login=login, ownership=view)
        view.attach(operation)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        running = loop.create_task(operation.run(), name="opd operator")
        stopping = loop.create_task(stop.wait(), name="opd signals")
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            stopping.cancel()
            if not running.done():
                logger.info("opd: signal received: stopping")
                running.cancel()
                # The operation bounds its own stop (shutdown timeout, cleanup handlers); this only
                # guards against a stop that never ends, so the Leases are released in any case.
                await asyncio.wait({running}, timeout=2 * settings.shutdown.timeout + 10)
        if running.done() and not running.cancelled():
            running.result()  # the operator's own error (a failed startup handler, say)
    finally:
        view.detach()
        await replica.stop()
