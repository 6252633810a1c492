"""The test kit: pytest fixtures against a real local control plane (opt in with
``pytest_plugins = ["opd.testing.fixtures"]``), running operators and plugins in a test,
the chaos kit. The control plane itself is ``opd.localcluster``."""

from opd.plugin.manager import OptionsError, prepare
from opd.testing.kopfrunner import KopfRunner
from opd.testing.running import RunningOperator, RunningPlugin, eventually

# prepare/OptionsError: a plugin's tests check its options as the daemon reads them (opd.plugin.manager is internal).
__all__ = ["KopfRunner", "OptionsError", "RunningOperator", "RunningPlugin", "eventually", "prepare"]
