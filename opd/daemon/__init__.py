"""The daemon's building blocks: its TOML config, the plugin loader, supervisor, health, systemd notification.

The plugin contract itself (hook specs, ``hookimpl``, ``Option``) is ``opd.plugin``, below
the daemon: a plugin imports that, never the daemon.
"""
