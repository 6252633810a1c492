"""``opd run``: handlers from files and modules, in one registry, for development (like ``kopf run``)."""

from __future__ import annotations

import contextvars
import importlib
import runpy
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from opd.errors import ConfigError
from opd.registry import OperatorRegistry, set_default_registry


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
