"""The plugin contract: what an operator plugin implements, and how opd calls it.

A plugin is a distribution with an entry point in the group ``opd.plugins``; the object it
names (usually a module) carries hook implementations marked with ``@opd.hookimpl``::

    import opd

    @opd.hookimpl
    def opd_options():
        return [opd.Option("greeting", str, default="hello", help="how to greet")]

    @opd.hookimpl
    def opd_register(registry, config):
        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(name, **_):
            return f"{config['greeting']}, {name}"

The hooks are specified in ``opd.plugin.spec``; ``opd.plugin.manager`` is the one place
that calls them. Nothing here imports the daemon: a plugin needs only this much of opd.
"""

from __future__ import annotations

import pluggy

from opd.plugin.options import REQUIRED, Option

PROJECT = "opd"
ENTRY_POINT_GROUP = "opd.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "REQUIRED", "Option", "hookimpl", "hookspec"]
