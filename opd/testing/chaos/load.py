"""The scenario's own client, and objects created, patched and deleted at a bounded rate."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from opd.kube.api import TRANSIENT_ERRORS, APIError, ConflictError, KubeClient, NotFoundError
from opd.kube.credentials import Login, load_configuration
from opd.settings import NetworkingSettings

_T = TypeVar("_T")


@dataclass(frozen=True)
class Kind:
    """A namespaced custom resource, as far as the load generator needs it."""

    group: str = "kopf.dev"
    version: str = "v1"
    plural: str = "kopfexamples"
    kind: str = "KopfExample"

    def path(self, namespace: str, name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}/namespaces/{namespace}/{self.plural}"
        return "/".join(p for p in (base, name, subresource) if p)

    def body(self, name: str, spec: Any = None, *, labels: Mapping[str, str] | None = None,
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        body: dict[str, Any] = {"apiVersion": f"{self.group}/{self.version}", "kind": self.kind, "metadata": meta}
        if spec is not None:
            body["spec"] = spec
        return body


KOPFEXAMPLES = Kind()


def crd_body(kind: Kind = KOPFEXAMPLES) -> dict[str, Any]:
    """A CRD for ``kind`` with a status subresource and no schema to speak of (any spec goes)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{kind.group}"},
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {"plural": kind.plural, "singular": kind.kind.lower(), "kind": kind.kind},
            "versions": [{
                "name": kind.version, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS) or (isinstance(exc, APIError) and exc.transient)


class Kube:
    """The scenario's own API client (its own connections, never the operator's), retrying through outages."""

    def __init__(self, client: KubeClient, *, patience: float = 180.0) -> None:
        self.client = client
        self.patience = patience  # how long one call keeps retrying while the API is away
        self.counters: collections.Counter[str] = collections.Counter()

    @classmethod
    async def connect(cls, kubeconfig: Path, *, patience: float = 180.0) -> Kube:
        configuration, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
        settings = NetworkingSettings(request_timeout=30.0, read_timeout=30.0, connect_timeout=5.0)
        return cls(KubeClient(configuration, settings, source=source), patience=patience)

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def call(self, method: str, path: str, body: Any = None, *, query: Mapping[str, Any] | None = None,
                   content_type: str = "application/json", on_retry: Callable[[], None] | None = None) -> Any:
        """One request, retried while the failure is the connection's or the server's (5xx, 429).

        A retried write may have landed the first time (only its answer was lost): ``on_retry``
        tells the caller, who knows what a 409 or 404 then means.
        """
        deadline = time.monotonic() + self.patience
        delay = 0.1
        while True:
            self.counters["requests"] += 1
            try:
                return await self.client.request(method, path, query=query, body=body, content_type=content_type)
            except Exception as exc:
                if not _transient(exc) or time.monotonic() > deadline:
                    raise
                self.counters["retries"] += 1
                if on_retry is not None:
                    on_retry()
                await asyncio.sleep(getattr(exc, "retry_after", None) or delay)
                delay = min(delay * 2, 2.0)

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def list(self, kind: Kind, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 500}
        while True:
            page = await self.call("GET", kind.path(namespace), query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    async def create_namespace(self, name: str) -> None:
        with contextlib.suppress(ConflictError):
            await self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    async def ensure_crd(self, body: Mapping[str, Any], timeout: float = 60.0) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        with contextlib.suppress(ConflictError):
            await self.call("POST", path, body)
        name = body["metadata"]["name"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = await self.get(f"{path}/{name}")
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"CRD {name} not established within {timeout:g}s")


@dataclass(frozen=True)
class Deletion:
    uid: str | None
    # Whether the finalizer was on the object when the deletion was accepted (so a delete
    # handler must run); None when a retried DELETE cannot tell (the first one may have landed).
    had_finalizer: bool | None


class LoadGenerator:
    """Objects created, patched and deleted at a bounded rate, each call retried through outages.

    ``uids`` maps every created name to its uid; ``deletions`` every deleted name to what the
    DELETE found; ``counters`` counts operations, retries and the ambiguities of retried writes.
    """

    def __init__(self, kube: Kube, namespace: str, *, kind: Kind = KOPFEXAMPLES, rate: float = 100.0,
                 concurrency: int = 32, finalizer: str = "opd.dev/finalizer") -> None:
        self.kube = kube
        self.namespace = namespace
        self.kind = kind
        self.rate = rate
        self.concurrency = concurrency
        self.finalizer = finalizer
        self.uids: dict[str, str] = {}
        self.created_at: dict[str, float] = {}  # name -> time.time() the object was created
        self.deletions: dict[str, Deletion] = {}
        self.counters: collections.Counter[str] = collections.Counter()

    async def _paced(self, items: Sequence[_T], op: Callable[[_T], Awaitable[None]]) -> None:
        """``op`` per item, started at ``rate`` per second, at most ``concurrency`` at once."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.concurrency)
        began = loop.time()

        async def one(item: _T) -> None:
            try:
                await op(item)
            finally:
                slots.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for i, item in enumerate(items):
                await asyncio.sleep(max(0.0, began + i / self.rate - loop.time()))
                await slots.acquire()
                tasks.append(loop.create_task(one(item)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def create(self, names: Sequence[str], *, spec: Any = None,
                     body: Callable[[str], dict[str, Any]] | None = None) -> None:
        make = body or (lambda name: self.kind.body(name, spec if spec is not None else {"name": name}))

        async def create_one(name: str) -> None:
            created = await self._create(name, make(name))
            self.uids[name] = created["metadata"]["uid"]
            self.created_at[name] = time.time()
            self.counters["created"] += 1

        await self._paced(names, create_one)

    async def _create(self, name: str, body: dict[str, Any]) -> Any:
        retried = []
        try:
            return await self.kube.call("POST", self.kind.path(self.namespace), body,
                                        on_retry=lambda: retried.append(True))
        except ConflictError:
            if not retried:
                raise  # not ours: a name used twice
            # A retried POST whose first try landed: the object is ours.
            self.counters["create-landed-twice"] += 1
            return await self.kube.get(self.kind.path(self.namespace, name))

    async def patch(self, names: Sequence[str], patch: Callable[[str], dict[str, Any]]) -> None:
        async def patch_one(name: str) -> None:
            await self.kube.call("PATCH", self.kind.path(self.namespace, name), patch(name),
                                 content_type="application/merge-patch+json")
            self.counters["patched"] += 1

        await self._paced(names, patch_one)

    async def delete(self, names: Sequence[str]) -> None:
        async def delete_one(name: str) -> None:
            retried = []
            try:
                response = await self.kube.call("DELETE", self.kind.path(self.namespace, name),
                                                on_retry=lambda: retried.append(True))
            except NotFoundError:
                # Only a retried DELETE may find it gone; which try took the finalizer's view, we cannot tell.
                if not retried:
                    raise
                self.counters["delete-ambiguous"] += 1
                self.deletions[name] = Deletion(self.uids.get(name), None)
                return
            meta = (response or {}).get("metadata") or {}
            had = self.finalizer in (meta.get("finalizers") or ())
            self.deletions[name] = Deletion(meta.get("uid") or self.uids.get(name), had)
            self.counters["deleted"] += 1

        await self._paced(names, delete_one)


async def wait_until(check: Callable[[], Any], *, timeout: float, interval: float = 0.2) -> float | None:
    """Seconds until ``check()`` (sync or async) is truthy; None if it is not within ``timeout``."""
    started = time.monotonic()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        await asyncio.sleep(interval)
