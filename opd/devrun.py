"""``opd run``: handlers from files and modules, in one registry, for development (like ``kopf run``);
with ``--ha``, as one replica of several. Both build and run their operation with
``opd.orchestration``'s builder: the same webhooks, the same liveness endpoint (its probes)."""

from __future__ import annotations

import contextvars
import importlib
import runpy
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from opd.errors import ConfigError
from opd.ha.settings import HaSettings
from opd.kube.credentials import Login
from opd.orchestration import build_operation, import_kubernetes_client, run_tasks, spawn_operation
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
    from opd.ha import Replica

    await import_kubernetes_client(registry)  # before the replica connects: it configures the client too
    replica = Replica(ha, login=login, networking=settings.networking)
    await replica.start()
    view = replica.view()
    operation = None
    try:
        operation = build_operation(registry=registry, settings=settings, memo=memo, namespaces=namespaces,
                                    clusterwide=clusterwide, login=login, ownership=view)
        tasks = await spawn_operation(operation, install_signal_handlers=True, liveness_endpoint=liveness_endpoint)
        # The operation bounds its own stop (shutdown timeout, cleanup handlers); this only guards
        # against a stop that never ends, so that the Leases are released in any case.
        await run_tasks(tasks, stop_timeout=2 * settings.shutdown.timeout + 10)
    finally:
        view.detach()
        await replica.stop()
        # What this replica read: the figure shards should divide (tests/chaos ha-measure prints it).
        if ha.mode == "shards" and operation is not None:
            own, labels = operation.events_received()
            state = replica.state()
            logger.info(f"opd: ha: watch events received: {own} on its shards' streams, {labels} on the labeller's "
                        f"(filtering: {state.filtering if state is not None else '?'}); "
                        f"{operation.labels_written()} shard label(s) written")
