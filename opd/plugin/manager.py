"""The one place that calls a plugin's hooks: each plugin object gets a pluggy manager of its own.

A shared manager would call every plugin's implementation with the same registry and config,
mixing their handlers and settings; one manager per plugin makes that impossible, and lets one
plugin fail without touching the others. A new hook is a spec in ``opd.plugin.spec`` and a
method here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from opd.errors import ConfigError
from opd.plugin import PROJECT, spec
from opd.plugin.naming import isolated_settings
from opd.plugin.options import Option, declared, resolve, table_key
from opd.registry import OperatorRegistry
from opd.settings import OperatorSettings


class OptionsError(ConfigError):
    """A plugin's table does not fit its declared options; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class PluginHooks:
    """One plugin object, registered in its own manager; its hooks are called only through here."""

    def __init__(self, obj: object, name: str) -> None:
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(spec)
        manager.register(obj, name=name)
        manager.check_pending()  # an @opd.hookimpl whose name matches no spec (a typo) is an error
        self.name = name
        self.obj = obj
        self.manager = manager
        self.implemented = tuple(sorted(caller.name for caller in manager.get_hookcallers(obj) or ()))

    def options(self) -> tuple[Option, ...] | None:
        """The options the plugin declares; None when it has no ``opd_options`` (its table goes unchecked)."""
        if "opd_options" not in self.implemented:
            return None
        results = self.manager.hook.opd_options()  # pluggy leaves out a None result
        return declared(results[0] if results else None)

    def register(self, registry: OperatorRegistry, config: dict[str, Any]) -> None:
        self.manager.hook.opd_register(registry=registry, config=config)

    def configure(self, settings: OperatorSettings, config: dict[str, Any]) -> None:
        self.manager.hook.opd_configure(settings=settings, config=config)

    def namespaces(self, config: dict[str, Any]) -> object:
        """What ``opd_namespaces`` returned, unchecked (the daemon checks it); None without the hook or a result."""
        if "opd_namespaces" not in self.implemented:
            return None
        results = self.manager.hook.opd_namespaces(config=config)
        return results[0] if results else None

    def rbac(self, config: dict[str, Any], resources: list[dict[str, list[str]]],
             lookup: Callable[[str, str], dict[str, list[str]] | None]) -> object:
        """What ``opd_rbac`` returned, unchecked (``opd.rbac`` checks it); None without the hook or a result."""
        if "opd_rbac" not in self.implemented:
            return None
        results = self.manager.hook.opd_rbac(config=config, resources=resources, lookup=lookup)
        return results[0] if results else None


def plugin_config(name: str, table: Mapping[str, Any], options: tuple[Option, ...] | None) -> dict[str, Any]:
    """The ``config`` the plugin's hooks get: its table checked, with defaults (raises OptionsError); a copy."""
    if options is None:
        return copy.deepcopy(dict(table))
    values, problems = resolve(f"[plugins.{table_key(name)}]", table, options)
    if problems:
        raise OptionsError(problems)
    return values


@dataclass(frozen=True)
class Prepared:
    hooks: PluginHooks
    registry: OperatorRegistry
    settings: OperatorSettings
    config: dict[str, Any]


def prepare(obj: object, name: str, table: Mapping[str, Any] | None = None) -> Prepared:
    """A plugin object's own registry and settings, made as ``opd start`` makes them (for tests).

    ``table`` is what ``[plugins.<name>]`` would hold, without opd's own keys; a table that does
    not fit the plugin's options raises OptionsError, as it would fail the plugin in the daemon.
    """
    hooks = PluginHooks(obj, name)
    config = plugin_config(name, table or {}, hooks.options())
    registry, settings = OperatorRegistry(), isolated_settings(name)
    hooks.register(registry, config)
    hooks.configure(settings, config)
    return Prepared(hooks=hooks, registry=registry, settings=settings, config=config)
