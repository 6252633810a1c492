"""The daemon's building blocks: its TOML config, the plugin contract and loader, systemd notification.

Nothing is imported here on purpose: ``opd/__init__.py`` imports ``opd.daemon.hookspecs``
for ``opd.hookimpl``, and must not pull the loader (and its dependencies) in with it.
"""
