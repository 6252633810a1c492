"""The plugin contract: the hooks an operator plugin implements, marked with ``@opd.hookimpl``.

A plugin is a distribution with an entry point in the group ``opd.plugins``; the object it
names (usually a module) carries the implementations::

    import opd

    @opd.hookimpl
    def opd_register(registry, config):
        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(spec, **_): ...

An implementation may accept fewer arguments than its spec (pluggy passes only those it names).
"""

from __future__ import annotations

from typing import Any

import pluggy

from opd.registry import OperatorRegistry
from opd.settings import OperatorSettings

PROJECT = "opd"
ENTRY_POINT_GROUP = "opd.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def opd_register(registry: OperatorRegistry, config: dict[str, Any]) -> None:
    """Register the plugin's handlers into ``registry``, its own (never shared with other plugins).

    ``config`` is the plugin's table ``[plugins.<name>]`` from opd.toml, without the keys opd
    itself reads there (``namespaces``, ``clusterwide``, ``isolation``); empty when absent.
    """


@hookspec
def opd_configure(settings: OperatorSettings, config: dict[str, Any]) -> None:
    """Tune the plugin's own ``settings``; called after ``opd_register``.

    opd has already given the plugin its own persistence names (annotation prefix and
    finalizer ``<name>.opd.dev``, markers in ``.status.opd-<name>``, handler results in
    ``.status.<name>``), so that no two plugins ever touch each other's data on a shared
    object; change them only knowingly (a clash fails the later plugin).
    """
