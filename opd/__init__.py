"""opd: a Kubernetes operator daemon for Python.

The public API: everything a user imports as ``opd.<name>`` is re-exported here.
"""

from opd._version import __version__
from opd.errors import ConfigError, ControlPlaneError, OpdError

__all__ = ["ConfigError", "ControlPlaneError", "OpdError", "__version__"]
