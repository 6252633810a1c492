"""Which namespaces an operator serves: names, globs (``dev-*``), negations (``!kube-*``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


def is_static(patterns: Iterable[str]) -> bool:
    """Plain names only: no namespace watch is needed to know the set."""
    return not any(ch in p for p in patterns for ch in "*?[!")


def matches(name: str, patterns: Iterable[str]) -> bool:
    patterns = list(patterns)
    positive = [p for p in patterns if not p.startswith("!")]
    negative = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(name, p) for p in negative):
        return False
    return not positive or any(fnmatch.fnmatchcase(name, p) for p in positive)
