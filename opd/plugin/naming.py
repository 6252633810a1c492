"""Each plugin's own persistence names, made from its name: no two plugins share markers or finalizers."""

from __future__ import annotations

import re

from opd.settings import OperatorSettings


def isolated_settings(name: str) -> OperatorSettings:
    """Settings whose persistence names are the plugin's own (``<name>.opd.dev``, ``.status.opd-<name>``)."""
    settings = OperatorSettings()
    settings.persistence.prefix = f"{dns_label(name)}.opd.dev"
    settings.persistence.status_field = f"opd-{field_name(name)}"  # markers: opd's own business
    settings.persistence.results_field = field_name(name)  # results: status.<plugin>.<handler id>
    return settings


def dns_label(name: str) -> str:
    """``name`` as one DNS label (annotation prefixes and finalizers must be DNS subdomains)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "plugin"


def field_name(name: str) -> str:
    """``name`` as a status field name: no dots or spaces, which JSONPath tools would split on."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-") or "plugin"
