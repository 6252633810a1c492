"""Exceptions: user-facing ones carry a one-line message naming what and where."""

from __future__ import annotations


class OpdError(Exception):
    """An error a user can cause or fix; the CLI prints its message as one line and exits non-zero."""


class ControlPlaneError(OpdError):
    """The local control plane cannot be found, built, started or reached."""


class ConfigError(OpdError):
    """A configuration (kubeconfig, TOML file, settings) is missing or malformed."""
