"""opd: a Kubernetes operator daemon for Python.

The public API: everything a user imports as ``opd.<name>`` is re-exported here.
"""

from opd import aiocompat as _aiocompat
from opd import on
from opd.on import index
from opd._version import __version__
from opd.engine.daemons import Stopped
from opd.engine.diffs import Patch
from opd.engine.indexing import Index, Store
from opd.engine.posting import exception, info, warn
from opd.errors import (
    ConfigError,
    ControlPlaneError,
    HandlerRetriesError,
    HandlerTimeoutError,
    OpdError,
    PermanentError,
    TemporaryError,
)
from opd.kube.credentials import Login
from opd.orchestration import Memo, operator, run, run_tasks, spawn_tasks
from opd.plugin import Option, hookimpl
from opd.registry import ABSENT, PRESENT, ErrorsMode, OperatorRegistry, get_default_registry, set_default_registry
from opd.settings import OperatorSettings
from opd.subhandlers import execute, subhandler

_aiocompat.install()

__all__ = [
    "ABSENT",
    "PRESENT",
    "ConfigError",
    "ControlPlaneError",
    "ErrorsMode",
    "HandlerRetriesError",
    "HandlerTimeoutError",
    "Index",
    "Login",
    "Memo",
    "OpdError",
    "OperatorRegistry",
    "OperatorSettings",
    "Option",
    "Patch",
    "PermanentError",
    "Stopped",
    "Store",
    "TemporaryError",
    "__version__",
    "exception",
    "execute",
    "get_default_registry",
    "hookimpl",
    "index",
    "info",
    "on",
    "operator",
    "run",
    "run_tasks",
    "set_default_registry",
    "spawn_tasks",
    "subhandler",
    "warn",
]
