"""Namespace patterns: names, globs and ``!`` exclusions, as the annotation and the allow-list write them."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Any

NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
PATTERN = re.compile(r"!?[-a-z0-9*?\[\]]{1,63}")
# An object's name (a DNS subdomain) or a glob of them, ``!`` to exclude.
NAME_PATTERN = re.compile(r"!?[-a-z0-9.*?\[\]]{1,253}")


def split(text: str) -> list[str]:
    """``"a, b-*, !b-x"`` as a list of patterns."""
    return [part.strip() for part in text.split(",") if part.strip()]


def is_name(pattern: str) -> bool:
    """A plain namespace name (no glob, no exclusion): it needs no list of namespaces to resolve."""
    return NAME.fullmatch(pattern) is not None


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Included by any positive pattern and excluded by no ``!pattern``; no patterns match nothing."""
    patterns = list(patterns)
    included = any(fnmatch.fnmatchcase(name, p) for p in patterns if not p.startswith("!"))
    return included and not any(fnmatch.fnmatchcase(name, p[1:]) for p in patterns if p.startswith("!"))


def problem(value: Any) -> str | None:
    """Why ``value`` is not a list of namespace patterns, or None (an option's check)."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        return f"expected a list of namespace names or globs, got {value!r}"
    bad = [p for p in value if not PATTERN.fullmatch(p)]
    return f"not a namespace name or glob: {bad[0]!r}" if bad else None
