"""Toolkits for operators' own code: helpers that handlers call (Kopf's ``kopf._kits``)."""

from opd.toolkits.hierarchies import (
    adjust_namespace,
    adopt,
    append_owner_reference,
    build_object_reference,
    build_owner_reference,
    harmonize_naming,
    label,
    remove_owner_reference,
)

__all__ = [
    "adjust_namespace",
    "adopt",
    "append_owner_reference",
    "build_object_reference",
    "build_owner_reference",
    "harmonize_naming",
    "label",
    "remove_owner_reference",
]
