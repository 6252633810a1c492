"""Permissions as single grants (one verb on one resource in one place), checked, merged into PolicyRules.

Whatever asks for a permission — opd's engine for a plugin's handlers, a plugin's ``opd_rbac``, the
``[ha]`` Leases — says it as grants, each with why. Merging then makes the rules a person reads:
a grant that a broader one covers is dropped (a named object under the whole resource, a namespace
under the cluster, a verb under ``*``), and each rule holds one API group and the resources that
share the same verbs (sorted) and the same object names.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opd.errors import OpdError
from opd.plugin.options import closest

# None as a grant's place: cluster-wide (the ClusterRole); a string: that namespace (a Role there).
Place = str | None

# The verbs the API server's authorizer asks about; a verb outside these would match nothing.
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
         "use", "bind", "escalate", "impersonate", "approve", "sign", "*")
# Verbs whose requests name no object in the URL: resourceNames cannot restrict them.
_UNNAMED_VERBS = ("create", "deletecollection")
_RULE_KEYS = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
_OPD_KEYS = ("namespaces", "clusterwide")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_RESOURCE = re.compile(r"(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)(/(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?))?")
_GROUP = re.compile(r"\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class PolicyError(OpdError):
    """A plugin's ``opd_rbac`` returned what is not a list of PolicyRules (one line, naming the plugin)."""


@dataclass(frozen=True)
class Grant:
    """One verb on one resource (``plural`` or ``plural/subresource``) of one API group, in one place;
    ``name`` narrows it to one object. A URL grant (``url``) is cluster-wide and has no group."""

    place: Place
    group: str
    resource: str
    verb: str
    name: str | None = None
    url: str | None = None

    def key(self) -> tuple[str, ...]:
        """For sorting (None sorts first)."""
        return (self.place or "", self.group, self.resource, self.verb, self.name or "", self.url or "")

    def covers(self, other: Grant) -> bool:
        """Whether this grant allows everything ``other`` allows (so ``other`` adds nothing)."""
        if self == other:
            return True
        if self.place is not None and self.place != other.place:
            return False
        if self.verb not in ("*", other.verb):
            return False
        if self.url is not None or other.url is not None:
            return self.url is not None and other.url is not None and _url_covers(self.url, other.url)
        # The authorizer's own matching: "*" matches every resource and subresource, "*/x" every x.
        resource_ok = self.resource in ("*", other.resource) or (
            self.resource.startswith("*/") and other.resource.endswith(self.resource[1:]))
        return (self.group in ("*", other.group) and resource_ok
                and (self.name is None or self.name == other.name))


def _url_covers(pattern: str, url: str) -> bool:
    return pattern == url or pattern == "*" or (pattern.endswith("*") and url.startswith(pattern[:-1]))


@dataclass
class Rule:
    """A PolicyRule, and why it is there (for a comment next to it)."""

    groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    risks: tuple[Risk, ...] = ()  # what in it deserves a second look, and who asked for it

    def to_dict(self) -> dict[str, Any]:
        """The PolicyRule as the API server takes it."""
        if self.urls:
            return {"nonResourceURLs": list(self.urls), "verbs": list(self.verbs)}
        rule: dict[str, Any] = {"apiGroups": list(self.groups), "resources": list(self.resources),
                                "verbs": list(self.verbs)}
        if self.names:
            rule["resourceNames"] = list(self.names)
        return rule


@dataclass
class Grants:
    """Grants with their reasons; ``add`` as many as wanted, ``rules`` merges them."""

    reasons: dict[Grant, set[str]] = field(default_factory=dict)

    def add(self, grant: Grant, reason: str) -> None:
        self.reasons.setdefault(grant, set()).add(reason)

    def add_all(self, grants: Iterable[Grant], reason: str) -> None:
        for grant in grants:
            self.add(grant, reason)

    def places(self) -> list[Place]:
        """Cluster-wide first (if any grant is), then the namespaces, sorted."""
        found = {g.place for g in self.needed()}
        return ([None] if None in found else []) + sorted(p for p in found if p is not None)

    def needed(self) -> dict[Grant, set[str]]:
        """The grants that no other grant covers, with their reasons (a covered grant's go to its cover)."""
        grants = sorted(self.reasons, key=Grant.key)
        kept: dict[Grant, set[str]] = {}
        for grant in grants:
            covers = [g for g in grants if g != grant and g.covers(grant) and not grant.covers(g)]
            if not covers:
                kept.setdefault(grant, set()).update(self.reasons[grant])
        for grant in grants:  # a covered grant's reason still explains the rule that grants it
            if grant not in kept:
                cover = next(g for g in kept if g.covers(grant))
                kept[cover].update(self.reasons[grant])
        return kept

    def rules(self, place: Place) -> list[Rule]:
        """The merged rules for one place: one per API group and set of (verbs, names), sorted, each with
        its risks (named after who asked for the risky grant itself, not the narrower grants it absorbed)."""
        needed = {g: r for g, r in self.needed().items() if g.place == place}
        rules = _resource_rules({g: r for g, r in needed.items() if g.url is None})
        rules += _url_rules({g: r for g, r in needed.items() if g.url is not None})
        return [_with_risks(rule, [(g, self.reasons[g]) for g in needed if _in_rule(g, rule)]) for rule in rules]


def _resource_rules(grants: Mapping[Grant, set[str]]) -> list[Rule]:
    # The names of each (group, resource, verb); then the verbs of each (group, resource, names);
    # then the resources of each (group, verbs, names): one rule per group and shared verbs and names.
    names: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    whole: set[tuple[str, str, str]] = set()
    why: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for grant, reasons in grants.items():
        key = (grant.group, grant.resource, grant.verb)
        why[key] |= reasons
        if grant.name is None:
            whole.add(key)
        else:
            names[key].add(grant.name)
    verbs: dict[tuple[str, str, tuple[str, ...]], set[str]] = defaultdict(set)
    for key in {*whole, *names}:
        group, resource, verb = key
        verbs[(group, resource, () if key in whole else tuple(sorted(names[key])))].add(verb)
    resources: dict[tuple[str, tuple[str, ...], tuple[str, ...]], set[str]] = defaultdict(set)
    for (group, resource, object_names), verb_set in verbs.items():
        resources[(group, tuple(sorted(verb_set)), object_names)].add(resource)
    rules = []
    for (group, verb_list, object_names), resource_set in resources.items():
        reasons = set().union(*(why[(group, r, v)] for r in resource_set for v in verb_list))
        rules.append(Rule(groups=(group,), resources=tuple(sorted(resource_set)), verbs=verb_list,
                          names=object_names, reasons=tuple(sorted(reasons))))
    return sorted(rules, key=lambda r: (r.groups, r.resources, r.verbs, r.names))


# -- what deserves a second look --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Risk:
    """Something a rule allows that goes beyond one plugin's own objects: what, and who asked for it."""

    what: str
    sources: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.what} (asked by {', '.join(self.sources)})"


# Verbs that hand out more than the rule names: RBAC checks them so that they are not granted by accident.
_RISKY_VERBS = {
    "escalate": "escalate: may create or change roles to grant what it does not hold itself",
    "bind": "bind: may bind roles it does not hold itself",
    "impersonate": "impersonate: may act as other users, groups or service accounts",
}


def grant_risks(grant: Grant) -> list[str]:
    """What one grant allows beyond the plain, named permission it reads as (empty: nothing)."""
    found = []
    if grant.url is not None:
        if "*" in grant.url:
            found.append(f"wildcard in nonResourceURLs ({grant.url!r})")
    else:
        if grant.group == "*":
            found.append("wildcard in apiGroups ('*': every API group)")
        if "*" in grant.resource:
            found.append(f"wildcard in resources ({grant.resource!r})")
    if grant.verb == "*":
        found.append("wildcard in verbs ('*': every verb, escalate, bind and impersonate included)")
    elif grant.verb in _RISKY_VERBS:
        found.append(_RISKY_VERBS[grant.verb])
    if (grant.place is None and grant.url is None and grant.group in ("", "*")
            and grant.resource.split("/")[0] in ("secrets", "*")):
        named = f" named {grant.name!r}" if grant.name is not None else ""
        found.append(f"Secrets{named} in every namespace ({grant.verb})")
    return found


def _source(reason: str) -> str:
    source = reason.partition(": ")[0]
    return source if source.startswith(("[", "webhooks")) else f"plugin {source!r}"


def _in_rule(grant: Grant, rule: Rule) -> bool:
    if grant.url is not None:
        return grant.url in rule.urls and grant.verb in rule.verbs
    return (not rule.urls and grant.group in rule.groups and grant.resource in rule.resources
            and grant.verb in rule.verbs and (grant.name in rule.names if rule.names else grant.name is None))


def _with_risks(rule: Rule, grants: Sequence[tuple[Grant, set[str]]]) -> Rule:
    by_what: dict[str, set[str]] = {}
    for grant, reasons in grants:
        for what in grant_risks(grant):
            by_what.setdefault(what, set()).update(_source(r) for r in reasons)
    # The Secrets risk per verb reads as one line: "Secrets in every namespace (get, list)".
    merged: dict[str, set[str]] = {}
    verbs: dict[str, list[str]] = {}
    for what, sources in sorted(by_what.items()):
        found = re.fullmatch(r"(Secrets.* in every namespace) \((\S+)\)", what)
        key = found.group(1) if found else what
        merged.setdefault(key, set()).update(sources)
        if found:
            verbs.setdefault(key, []).append(found.group(2))
    risks = tuple(Risk(f"{what} ({', '.join(verbs[what])})" if what in verbs else what, tuple(sorted(sources)))
                  for what, sources in merged.items())
    rule.risks = risks
    return rule


def _url_rules(grants: Mapping[Grant, set[str]]) -> list[Rule]:
    verbs: dict[str, set[str]] = defaultdict(set)
    why: dict[str, set[str]] = defaultdict(set)
    for grant, reasons in grants.items():
        assert grant.url is not None
        verbs[grant.url].add(grant.verb)
        why[grant.url] |= reasons
    urls: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for url, verb_set in verbs.items():
        urls[tuple(sorted(verb_set))].add(url)
    return sorted((Rule(urls=tuple(sorted(u)), verbs=v, reasons=tuple(sorted(set().union(*(why[x] for x in u)))))
                   for v, u in urls.items()), key=lambda r: (r.urls, r.verbs))


# -- a plugin's own rules (opd_rbac) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredRule:
    """One PolicyRule of a plugin's ``opd_rbac``, checked: where it applies and what it allows."""

    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None  # None: where the plugin runs
    clusterwide: bool = False

    def grants(self, place: Place) -> list[Grant]:
        if self.urls:
            return [Grant(None, "", "", verb, url=url) for url in self.urls for verb in self.verbs]
        return [Grant(place, group, resource, verb, name)
                for group in self.groups for resource in self.resources for verb in self.verbs
                for name in (self.names or (None,))]


def declared_rules(plugin: str, value: object) -> list[DeclaredRule]:
    """A plugin's ``opd_rbac`` result checked; raises PolicyError (one line, naming the plugin and the rule)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise PolicyError(f"plugin {plugin!r}: opd_rbac() must return a list of PolicyRules (dicts), "
                          f"got {type(value).__name__}")
    return [_declared(f"plugin {plugin!r}: opd_rbac()[{index}]", item) for index, item in enumerate(value)]


def _declared(where: str, rule: object) -> DeclaredRule:
    if not isinstance(rule, Mapping):
        raise PolicyError(f"{where}: expected a PolicyRule (a dict with apiGroups, resources, verbs), "
                          f"got {type(rule).__name__}")
    for key in rule:
        if key not in (*_RULE_KEYS, *_OPD_KEYS):
            guess = closest(str(key), [*_RULE_KEYS, *_OPD_KEYS])
            hint = f" (did you mean {guess!r}?)" if guess else ""
            raise PolicyError(f"{where}: unknown key {_shown(key)}{hint}")
    verbs = _strings(where, rule, "verbs", required=True)
    for verb in verbs:
        if verb not in VERBS:
            guess = closest(verb, VERBS)
            hint = f" (did you mean {guess!r}?)" if guess else ""
            raise PolicyError(f"{where}.verbs: unknown verb {_shown(verb)}{hint}")
    urls = _strings(where, rule, "nonResourceURLs")
    clusterwide = rule.get("clusterwide", False)
    if not isinstance(clusterwide, bool):
        raise PolicyError(f"{where}.clusterwide: expected True or False, got {_shown(clusterwide)}")
    namespaces: tuple[str, ...] | None = None
    if "namespaces" in rule:
        namespaces = _strings(where, rule, "namespaces", required=True)
        bad = [n for n in namespaces if not _NAMESPACE.fullmatch(n)]
        if bad:
            raise PolicyError(f"{where}.namespaces: {_shown(bad[0])} is not a namespace name (a Role names one "
                              f"namespace; for patterns, use clusterwide = True)")
        if clusterwide:
            raise PolicyError(f"{where}: namespaces and clusterwide together: give one or the other")
    if urls:
        for key in ("apiGroups", "resources", "resourceNames", "namespaces"):
            if key in rule:
                raise PolicyError(f"{where}: nonResourceURLs with {key}: a rule is for URLs or for resources")
        bad = [u for u in urls if not u.startswith("/") and u != "*"]
        if bad:
            raise PolicyError(f"{where}.nonResourceURLs: {_shown(bad[0])} is not a path (starts with '/')")
        return DeclaredRule(groups=(), resources=(), verbs=verbs, urls=urls, clusterwide=True)
    if "apiGroups" not in rule:
        raise PolicyError(f"{where}: missing apiGroups (use [\"\"] for the core group: configmaps, secrets, ...)")
    groups = tuple(_strings(where, rule, "apiGroups", required=True, empty_ok=True))
    bad = [g for g in groups if g and not _GROUP.fullmatch(g)]
    if bad:
        raise PolicyError(f"{where}.apiGroups: {_shown(bad[0])} is not an API group "
                          "(e.g. \"\", \"apps\", \"kopf.dev\")")
    resources = _strings(where, rule, "resources", required=True)
    bad = [r for r in resources if not _RESOURCE.fullmatch(r)]
    if bad:
        raise PolicyError(f"{where}.resources: {_shown(bad[0])} is not a resource (a plural, lowercase: "
                          "\"configmaps\", \"jobs\", \"deployments/scale\")")
    names = _strings(where, rule, "resourceNames")
    unnamed = [v for v in verbs if v in _UNNAMED_VERBS]
    if names and unnamed:
        # Such a request has no object name in its URL: the authorizer cannot match it against
        # resourceNames, so the rule would never allow it, while reading as if it did.
        raise PolicyError(f"{where}: resourceNames cannot restrict {', '.join(unnamed)} (the request's URL names "
                          "no object): put those verbs in a rule without resourceNames")
    return DeclaredRule(groups=groups, resources=resources, verbs=verbs, names=names, namespaces=namespaces,
                        clusterwide=clusterwide)


def _shown(value: object) -> str:
    """A value in a message: its repr, on one line, at most 80 characters (it comes from a plugin)."""
    try:
        text = repr(value)
    except Exception:  # a plugin's object whose __repr__ fails
        return f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= 80 else f"{text[:77]}..."


def _strings(where: str, rule: Mapping[str, Any], key: str, *, required: bool = False,
             empty_ok: bool = False) -> tuple[str, ...]:
    if key not in rule:
        if required:
            raise PolicyError(f"{where}: missing {key}")
        return ()
    value = rule[key]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise PolicyError(f"{where}.{key}: expected a list of strings, got {_shown(value)}")
    if required and not value:
        raise PolicyError(f"{where}.{key}: empty list (a rule that allows nothing)")
    for item in value:
        if not isinstance(item, str) or (not item and not empty_ok):
            raise PolicyError(f"{where}.{key}: expected non-empty strings, got {_shown(item)}")
    return tuple(value)
