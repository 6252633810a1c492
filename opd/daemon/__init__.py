"""The daemon's building blocks: its TOML config, the plugin loader, supervisor, health, systemd notification.

The plugin contract itself (hook specs, ``hookimpl``, ``Option``) is ``opd.plugin``, below
the daemon: a plugin imports that, never the daemon.
"""

import sys
import types
from typing import Any


class _Package(types.ModuleType):
    """Once this package is imported, ``opd.daemon`` names it instead of Kopf's decorator
    ``opd.daemon(...)`` (``opd.on.daemon``): so calling the package still declares a daemon, and
    a Kopf operator's ``@kopf.daemon(...)`` works under ``opd start`` too."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from opd.on import daemon

        return daemon(*args, **kwargs)


sys.modules[__name__].__class__ = _Package
