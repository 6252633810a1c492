"""Resources: how users name them (ResourceRef) and what the API serves (Resource)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from opd.errors import ConfigError


@dataclass(frozen=True)
class ResourceRef:
    """A resource as a handler names it: any of plural, singular, kind or short name,
    optionally narrowed by group and version. Resolved by API discovery at run time."""

    name: str
    group: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.group, self.version) if p]
        return "/".join([*parts, self.name])

    @classmethod
    def parse(cls, *args: str, group: str | None = None, version: str | None = None,
              plural: str | None = None, kind: str | None = None) -> ResourceRef:
        """Accepts the spellings Kopf users write:
        ``('kopfexamples')``, ``('kopfexamples.kopf.dev')``, ``('kopf.dev', 'kopfexamples')``,
        ``('kopf.dev/v1', 'kopfexamples')``, ``('kopf.dev', 'v1', 'kopfexamples')``,
        ``('kopf.dev/v1/kopfexamples')``, ``('v1', 'pods')``, or keywords."""
        if any(not isinstance(a, str) or not a for a in args):
            raise ConfigError(f"resource names must be non-empty strings, got {args!r}")
        parts = [p for a in args for p in a.split("/")]
        if any(not p for p in parts):
            raise ConfigError(f"resource {'/'.join(args)!r} has an empty part")
        name = plural or kind
        if name is not None:  # keywords name it: positionals can only be group and version
            parts.append(name)
        if len(parts) == 3:
            group, version, name = parts
        elif len(parts) == 2:
            first, name = parts
            if _looks_like_version(first):
                group, version = "", first
            else:
                group = first
        elif len(parts) == 1:
            name = parts[0]
            if "." in name:
                name, group = name.split(".", 1)
                if not name or not group:
                    raise ConfigError(f"resource {parts[0]!r} has an empty part")
        elif parts:
            raise ConfigError(f"cannot read a resource from {args!r}: give at most group, version, name")
        if not name:
            raise ConfigError("a handler needs a resource: e.g. 'kopfexamples' or 'kopf.dev/v1/kopfexamples'")
        if group == "core":
            group = ""
        return cls(name=name, group=group, version=version)

    def matches(self, resource: Resource) -> bool:
        if self.group is not None and self.group != resource.group:
            return False
        if self.version is not None and self.version != resource.version:
            return False
        return self.name in resource.names or self.name.lower() == resource.kind.lower()


_VERSION = re.compile(r"v\d+((alpha|beta)\d+)?")


def _looks_like_version(text: str) -> bool:
    return _VERSION.fullmatch(text) is not None


@dataclass(frozen=True)
class Resource:
    """A resource as the API server serves it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    preferred: bool = True
    names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset({self.plural, self.singular, *self.short_names} - {""}))

    def __str__(self) -> str:
        return f"{self.plural}.{self.version}.{self.group}" if self.group else f"{self.plural}.{self.version}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


def select(ref: ResourceRef, candidates: Iterable[Resource]) -> list[Resource]:
    """The served resources a reference means; when it names no version, the preferred one."""
    found = [r for r in candidates if ref.matches(r)]
    if ref.version is None:
        preferred = [r for r in found if r.preferred]
        found = preferred or found
    # One per group: an ambiguous name across groups (e.g. 'events') prefers the core group.
    by_group: dict[str, Resource] = {}
    for r in found:
        by_group.setdefault(r.group, r)
    if "" in by_group and ref.group is None and len(by_group) > 1:
        return [by_group[""]]
    return list(by_group.values())
