"""API discovery: which resources the server serves, to resolve what handlers name."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from opd.errors import ConfigError
from opd.kube.api import TRANSIENT_ERRORS, APIError, KubeClient
from opd.resources import Resource, ResourceRef, select


def _parse(group: str, version: str, preferred: bool, listing: dict[str, Any]) -> list[Resource]:
    subresources: dict[str, set[str]] = {}
    mains = []
    for item in listing.get("resources", []):
        name = item.get("name", "")
        if "/" in name:
            main, sub = name.split("/", 1)
            subresources.setdefault(main, set()).add(sub)
        else:
            mains.append(item)
    return [
        Resource(
            group=group, version=version, plural=item["name"], kind=item.get("kind", ""),
            namespaced=bool(item.get("namespaced")), singular=item.get("singularName") or "",
            short_names=tuple(item.get("shortNames") or ()),
            subresources=frozenset(subresources.get(item["name"], ())),
            verbs=frozenset(item.get("verbs") or ()), preferred=preferred,
        )
        for item in mains
    ]


class Discovery:
    """Caches the served resources; refreshes (throttled) when a name is not found,
    so a CRD created after the operator started is picked up."""

    def __init__(self, client: KubeClient, *, refresh_interval: float = 5.0) -> None:
        self._client = client
        self._resources: list[Resource] | None = None
        self._fetched = 0.0
        self._interval = refresh_interval
        self._lock = asyncio.Lock()

    async def _fetch_group_version(self, group: str, version: str, preferred: bool) -> list[Resource]:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            return _parse(group, version, preferred, await self._client.get(path))
        except APIError as exc:
            if exc.status in (404, 503):  # an aggregated API that is down: skip it, not everything
                return []
            raise

    async def _fetch(self) -> list[Resource]:
        groups = await self._client.get("/apis")
        jobs = [self._fetch_group_version("", "v1", True)]
        for group in groups.get("groups", []):
            preferred = (group.get("preferredVersion") or {}).get("version")
            for v in group.get("versions", []):
                jobs.append(self._fetch_group_version(group["name"], v["version"], v["version"] == preferred))
        found: list[Resource] = []
        for part in await asyncio.gather(*jobs):
            found.extend(part)
        return found

    async def resources(self, *, refresh: bool = False) -> list[Resource]:
        async with self._lock:
            stale = time.monotonic() - self._fetched >= self._interval
            if self._resources is None or (refresh and stale):
                self._resources = await self._fetch()
                self._fetched = time.monotonic()
            return self._resources

    async def resolve(self, ref: ResourceRef) -> Resource | None:
        """The served resource for ``ref``; None if not served (yet)."""
        found = select(ref, await self.resources())
        if not found:
            found = select(ref, await self.resources(refresh=True))
        if len(found) > 1:
            names = ", ".join(str(r) for r in found)
            raise ConfigError(f"resource {ref!s} is ambiguous: {names}; name the group too")
        return found[0] if found else None


__all__ = ["TRANSIENT_ERRORS", "Discovery"]
