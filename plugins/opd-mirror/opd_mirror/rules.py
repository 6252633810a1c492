"""Source→target rules, ``[[plugins.mirror.rules]]``: which namespace's sources may be copied where.

A rule names one source namespace (``from``), the namespaces its sources may be copied into
(``to``, names only: a glob would reach namespaces yet to come, and RBAC could not name them),
and optionally the sources' names (``names``, globs with ``!`` exclusions; default: every name).
A copy is written with opd's identity, so a rule is the daemon's admin saying whose writers may
publish where. ``kube-*`` namespaces are never targets: a Secret there is trusted by the cluster
itself (bootstrap tokens in kube-system, for one).

Every value is bounded in shape and size before it is trusted; what does not fit is one line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opd_mirror import patterns

KEYS = ("from", "to", "names")
MAX_RULES = 100
MAX_TARGETS = 100  # per rule
MAX_NAMES = 100  # name patterns per rule
SHOWN = 60  # characters of a bad value quoted in a message


@dataclass(frozen=True)
class Rule:
    source: str  # ``from``: a namespace name
    targets: tuple[str, ...]  # ``to``: namespace names, never ``source``, never kube-*
    names: tuple[str, ...] = ()  # globs on the source's name; empty: every name

    def takes(self, namespace: str, name: str) -> bool:
        """Whether a source ``namespace/name`` falls under this rule."""
        return namespace == self.source and (not self.names or patterns.matches(name, self.names))


class RulesError(ValueError):
    """One line: which rule, which key, what is wrong."""


def parse(value: Any) -> tuple[Rule, ...]:
    """The rules from the option's value (a list of tables); RulesError (one line) when it does not fit."""
    if not isinstance(value, list):
        raise RulesError(f"expected a list of tables ([[plugins.mirror.rules]]), got {_show(value)}")
    if len(value) > MAX_RULES:
        raise RulesError(f"{len(value)} rules: at most {MAX_RULES}")
    return tuple(_rule(index, item) for index, item in enumerate(value))


def problem(value: Any) -> str | None:
    """What is wrong with the option's value, or None (the option's check for ``opd config check``)."""
    try:
        parse(value)
    except RulesError as exc:
        return str(exc)
    return None


def _rule(index: int, item: Any) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(item, Mapping):
        raise RulesError(f"{where}: expected a table with from = \"<namespace>\" and to = [...], got {_show(item)}")
    for key in item:
        if key not in KEYS:
            guess = difflib.get_close_matches(str(key), KEYS, n=1, cutoff=0.5)
            hint = f" (did you mean {guess[0]!r}?)" if guess else f" (expected {', '.join(KEYS)})"
            raise RulesError(f"{where}.{_key(key)}: unknown key{hint}")
    if "from" not in item:
        raise RulesError(f'{where}.from: required: the namespace whose sources this rule copies, e.g. "platform"')
    source = item["from"]
    if not isinstance(source, str) or not patterns.is_name(source):
        raise RulesError(f"{where}.from: expected a namespace name, got {_show(source)}")
    if "to" not in item:
        raise RulesError(f'{where}.to: required: the namespaces to copy into, e.g. ["team-a", "team-b"]')
    targets = _strings(f"{where}.to", item["to"], MAX_TARGETS, "namespace names")
    if not targets:
        raise RulesError(f"{where}.to: expected at least one namespace name")
    for target in targets:
        if not patterns.is_name(target):
            raise RulesError(f"{where}.to: expected namespace names (no globs: a rule names each target), "
                             f"got {_show(target)}")
        if refused(target):
            raise RulesError(f"{where}.to: {target!r} is refused: opd never copies into kube-* namespaces "
                             "(kube-system, kube-public, kube-node-lease), whose Secrets the cluster itself trusts")
        if target == source:
            raise RulesError(f"{where}.to: {target!r} is the rule's own from: a source is never its own copy")
    names = _strings(f"{where}.names", item.get("names", []), MAX_NAMES, "name globs")
    for name in names:
        if not patterns.NAME_PATTERN.fullmatch(name):
            raise RulesError(f"{where}.names: expected object names or globs (!glob excludes), got {_show(name)}")
    if names and not any(not n.startswith("!") for n in names):
        raise RulesError(f"{where}.names: only exclusions, which match nothing: add a glob, e.g. \"*\"")
    return Rule(source=source, targets=tuple(dict.fromkeys(targets)), names=tuple(names))


def _strings(where: str, value: Any, limit: int, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where}: expected a list of {what}, got {_show(value)}")
    if len(value) > limit:
        raise RulesError(f"{where}: {len(value)} entries: at most {limit}")
    return list(value)


def refused(namespace: str) -> bool:
    """A namespace opd never copies into, whatever the config says: kube-system, kube-public, kube-node-lease."""
    return namespace.startswith("kube-")


def sources(rules: Iterable[Rule]) -> set[str]:
    return {rule.source for rule in rules}


def destinations(rules: Iterable[Rule]) -> set[str]:
    return {target for rule in rules for target in rule.targets}


def _key(key: Any) -> str:
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", text) else _show(key)


def _show(value: Any) -> str:
    """A bad value as a message quotes it: on one line, and short."""
    text = " ".join(repr(value).split())
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"
