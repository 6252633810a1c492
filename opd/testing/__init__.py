"""The test kit: pytest fixtures against a real local control plane (opt in with
``pytest_plugins = ["opd.testing.fixtures"]``), running operators and plugins in a test,
the chaos kit. The control plane itself is ``opd.localcluster``."""

from opd.testing.kopfrunner import KopfRunner
from opd.testing.running import RunningOperator, RunningPlugin, eventually

__all__ = ["KopfRunner", "RunningOperator", "RunningPlugin", "eventually"]
