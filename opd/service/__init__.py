"""The daemon as a service (``opd start``): its TOML config, the plugin loader, supervisor, health, systemd
notification.

The plugin contract itself (hook specs, ``hookimpl``, ``Option``) is ``opd.plugin``, below
the service: a plugin imports that, never the service. (``opd.daemon`` is only Kopf's decorator.)
"""
