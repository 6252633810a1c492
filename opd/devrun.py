"""``opd run``: handlers from files and modules, in one registry, for development (like ``kopf run``);
with ``--ha``, as one replica of several. Kopf's liveness endpoint is ``opd.orchestration``'s."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import runpy
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from opd.errors import ConfigError
from opd.ha.settings import HaSettings
from opd.kube.credentials import Login
from opd.orchestration import LivenessEndpoint, import_kubernetes_client
from opd.registry import OperatorRegistry, set_default_registry
from opd.settings import OperatorSettings


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


async def replicated(*, registry: OperatorRegistry, settings: OperatorSettings, memo: Any,
                     namespaces: Sequence[str] | None, clusterwide: bool, login: Login | None,
                     ha: HaSettings, liveness_endpoint: str | None = None) -> None:
    """Run the operator as one replica of several (``opd run --ha``) until SIGINT or SIGTERM.

    Its watches run from the start; handlers run only for what this replica owns (the Lease, or
    its shards). Stopping stops the operator first (handlers in flight finish and write), then
    releases the Leases, so that another replica takes over at once; kill -9 leaves them to expire.
    """
    from opd.engine.operation import Operation
    from opd.ha import Replica

    await import_kubernetes_client(registry)  # before the replica connects: it configures the client too
    replica = Replica(ha, login=login, networking=settings.networking)
    await replica.start()
    view = replica.view()
    endpoint: LivenessEndpoint | None = None
    try:
        operation = Operation(registry=registry, settings=settings, memo=memo, namespaces=namespaces,
                              clusterwide=clusterwide, login=login, ownership=view)
        view.attach(operation)
        loop = asyncio.get_running_loop()
        if liveness_endpoint is not None:
            endpoint = LivenessEndpoint(liveness_endpoint, operation.probe)
            await endpoint.start()
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
        if endpoint is not None:
            await endpoint.stop()
        view.detach()
        await replica.stop()
