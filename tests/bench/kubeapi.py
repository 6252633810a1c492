"""A thin aiohttp client of the API server: the benchmark's own creator and observer, and the raw contender.

No Kubernetes client library on purpose: the bench process must cost little next to the contenders,
and the raw contender must be the plainest thing that does an operator's job.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
GROUP, VERSION, PLURAL = "kopf.dev", "v1", "kopfexamples"
RESULT_KEY = "create_fn"  # the handler's id: where every contender stores its result in .status
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)

KOPFEXAMPLE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "kopfexample", "kind": "KopfExample", "shortNames": ["kex"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text}")
        self.status = status


def objects_path(namespace: str, name: str = "", subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return "/".join(p for p in (path, name, subresource) if p)


def object_body(name: str, index: int = 0) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "KopfExample", "metadata": {"name": name},
            "spec": {"field": "value", "items": ["item1", "item2"], "index": index}}


class Api:
    """Server URL, CA and bearer token from a (JSON) kubeconfig; one pooled aiohttp session."""

    def __init__(self, kubeconfig: Path, *, connections: int = 64) -> None:
        config = json.loads(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"].rstrip("/")
        self._ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._token = config["users"][0]["user"]["token"]
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": JSON}
        self._session = aiohttp.ClientSession(connector=connector, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Api as an async context manager"
        return self._session

    async def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = JSON) -> Any:
        data = None if body is None else json.dumps(body).encode()
        async with self.session.request(method, self.server + path, data=data, params=params,
                                        headers={"Content-Type": content_type}) as response:
            payload = await response.read()
            if response.status >= 400:
                raise ApiError(response.status, payload[:300].decode(errors="replace"))
            return json.loads(payload) if payload else None

    async def watch(self, path: str, params: dict[str, str], *,
                    connected: asyncio.Event | None = None) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, until the server ends it."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        query = {**params, "watch": "true"}
        async with self.session.get(self.server + path, params=query, timeout=timeout) as response:
            if response.status >= 400:
                raise ApiError(response.status, (await response.read())[:300].decode(errors="replace"))
            if connected is not None:
                connected.set()
            buffer = b""
            async for chunk in response.content.iter_any():
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if line:
                        yield json.loads(line)

    async def list_all(self, path: str, page_size: int = 500) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """Pages of a paginated LIST: (items, the list's resourceVersion)."""
        params = {"limit": str(page_size)}
        while True:
            page = await self.request("GET", path, params=params)
            yield page["items"], page["metadata"]["resourceVersion"]
            token = page["metadata"].get("continue")
            if not token:
                return
            params["continue"] = token


# -- setting the stage -----------------------------------------------------------------------------------------------
async def ensure_crd(api: Api) -> None:
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        await api.request("POST", path, body=KOPFEXAMPLE_CRD)
    except ApiError as exc:
        if exc.status != 409:
            raise
    for _ in range(300):
        crd = await api.request("GET", f"{path}/{PLURAL}.{GROUP}")
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the kopfexamples CRD was not established within 30s")


async def create_namespace(api: Api, stem: str) -> str:
    name = f"{re.sub(r'[^a-z0-9-]+', '-', stem.lower())[:50]}-{uuid.uuid4().hex[:5]}"  # a DNS label
    await api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    return name


async def create_object(api: Api, namespace: str, name: str, index: int = 0) -> None:
    """Create one object, retrying what a busy server may answer (429, 5xx, a CRD not served yet)."""
    for attempt in range(8):
        try:
            await api.request("POST", objects_path(namespace), body=object_body(name, index))
            return
        except ApiError as exc:
            if exc.status == 409:  # an earlier try got through, its answer did not
                return
            if exc.status not in (404, 429) and exc.status < 500:
                raise
        except CONNECTION_ERRORS:
            pass
        await asyncio.sleep(0.05 * 2**attempt)
    raise RuntimeError(f"could not create {namespace}/{name}")


async def create_objects(api: Api, namespace: str, names: Iterable[str], *, in_flight: int = 32) -> None:
    """Create objects with a fixed number of requests in flight (workers share one iterator)."""
    numbered = iter(enumerate(names))

    async def worker() -> None:
        for index, name in numbered:
            await create_object(api, namespace, name, index)

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def request_counts(api: Api) -> Counter[str]:
    """The API server's own request counters for our resource and for events, by verb and code."""
    counts: Counter[str] = Counter()
    async with api.session.get(api.server + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("resource") in (PLURAL, "events"):
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            counts[f"{labels['verb']} {labels['resource']}{sub} {labels['code']}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


@dataclass
class ServerCounts:
    """One scrape of the API server's /metrics: its request counters.

    ``requests``: apiserver_request_total by "VERB resource[/subresource] code", from clients only: the API
    server's own loopback controllers (~30 requests a minute in an idle cluster) speak protobuf, every
    client here JSON; ``loopback``: theirs, in all. kube-apiserver 1.20 leaves some requests out of
    apiserver_request_total (/version, /api, /apis: the discovery a client's liveness probe may use), and
    counts a WATCH when it ends; ``authenticated``: every request as it came in, every client's and the
    loopback's, this scrape included (authenticated_user_requests).
    """

    requests: Counter[str]
    loopback: int
    authenticated: int
    watches_open: dict[str, int]  # resource -> WATCH requests open now (apiserver_longrunning_gauge)

    def __sub__(self, before: ServerCounts) -> ServerCounts:
        return ServerCounts(self.requests - before.requests, self.loopback - before.loopback,
                            self.authenticated - before.authenticated, self.watches_open)

    def clients(self, own_scrapes: int = 1) -> int:
        """Of a difference of two scrapes: every request of the clients but the scraper, counted as it came in.

        ``own_scrapes``: the scrapes that came in between the two, the later one included.
        """
        return self.authenticated - own_scrapes - self.loopback


async def server_counts(api: Api) -> ServerCounts:
    async with api.session.get(api.server + "/metrics") as response:
        text = await response.text()
    requests: Counter[str] = Counter()
    loopback = authenticated = 0
    watches: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith(("apiserver_request_total{", "authenticated_user_requests{",
                                "apiserver_longrunning_gauge{")):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        value = int(float(line.rsplit(" ", 1)[1]))
        if line.startswith("authenticated_user_requests{"):
            authenticated += value
        elif line.startswith("apiserver_longrunning_gauge{"):
            if labels.get("verb") == "WATCH":
                watches[labels.get("resource", "")] += value
        elif "protobuf" in labels.get("contentType", ""):
            loopback += value
        else:
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            requests[f"{labels['verb']} {labels.get('resource') or '-'}{sub} {labels['code']}"] += value
    return ServerCounts(requests, loopback, authenticated, dict(watches))


async def open_watches(api: Api, resource: str = PLURAL) -> int:
    """WATCH requests on ``resource`` open right now (kube-apiserver 1.20's apiserver_longrunning_gauge)."""
    return (await server_counts(api)).watches_open.get(resource, 0)


# -- the observer ---------------------------------------------------------------------------------------------------
class Observer:
    """Which objects of a namespace carry the result key in .status, and since when.

    Its own LIST + WATCH in the bench process, independent of every contender; times are
    ``time.monotonic()`` at the moment the observer learns of the result.
    """

    def __init__(self, api: Api, namespace: str, key: str = RESULT_KEY,
                 done: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.api = api
        self.path = objects_path(namespace)
        self.done = done or (lambda status: key in status)  # of an object's .status: is its result there?
        self.seen: dict[str, float] = {}  # name -> when first seen with the result
        self.added: dict[str, float] = {}  # name -> when first seen at all
        self.connected = asyncio.Event()
        self._resource_version = ""
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Observer:
        await self._list()
        self._task = asyncio.get_running_loop().create_task(self._watch_forever(), name="observer")
        await asyncio.wait_for(self.connected.wait(), 30)
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Whether ``condition`` held within ``timeout``; checked on every new result."""
        if condition():
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (condition, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _saw(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        now = time.monotonic()
        self.added.setdefault(name, now)
        if name in self.seen or not self.done(obj.get("status") or {}):
            return
        self.seen[name] = now
        for condition, future in list(self._waiters):
            if not future.done() and condition():
                future.set_result(None)

    async def _list(self) -> None:
        async for items, resource_version in self.api.list_all(self.path):
            for item in items:
                self._saw(item)
            self._resource_version = resource_version

    async def _watch_forever(self) -> None:
        while True:
            params = {"resourceVersion": self._resource_version, "allowWatchBookmarks": "true",
                      "timeoutSeconds": "600"}
            try:
                async for event in self.api.watch(self.path, params, connected=self.connected):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                    self._resource_version = obj.get("metadata", {}).get("resourceVersion", self._resource_version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._saw(obj)
            except ApiError as exc:
                if exc.status == 410:  # too old to resume: what we missed is in a new LIST
                    await self._list()
                else:
                    await asyncio.sleep(0.5)
            except CONNECTION_ERRORS:
                await asyncio.sleep(0.5)
