"""Raw requests and watch streams over aiohttp sessions with the operator's credentials.

Bodies are parsed once, straight from bytes to dicts: no model classes, no client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from opd._version import __version__
from opd.kube.asyncclient import LazyApiClient
from opd.kube.auth import Credentials
from opd.kube.batching import Fence, Fenced, PatchBatcher
from opd.settings import NetworkingSettings

MERGE_PATCH = "application/merge-patch+json"
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
JSON = "application/json"
USER_AGENT = f"opd/{__version__}"
# Watch events of large objects exceed aiohttp's default read buffer (etcd's limit is 1.5 MiB).
_READ_BUFFER = 2 ** 21

# Errors after which the same request may succeed later: the connection, not the request, failed.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class APIError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, *, method: str = "", path: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class GoneError(APIError):
    """410: the resourceVersion is too old; relist."""


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


# Any failure of a request: the server's answer or the connection.
REQUEST_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, APIError)


def one_writers_fault(exc: BaseException) -> bool:
    """A refusal of a merged patch that one of its writers may have caused (re-sent patch by patch):
    invalid (400, 422), denied for its content (403: an admission webhook or policy), too large
    (413, or etcd's limit, which kube-apiserver reports as a 500). Not: gone (404), conflicts
    (409, a patch without precondition cannot meet one), throttled (429), the credentials (401)."""
    return isinstance(exc, APIError) and (
        exc.status in (400, 403, 413, 422) or "too large" in exc.message.lower())


class PoolClosed(aiohttp.ClientConnectionError):
    """A request that waited for a connection of a pool closed meanwhile: not sent; transient."""


class InactivityTimeout(asyncio.TimeoutError):
    """A watch stream stayed silent longer than allowed."""


class LineTooLong(Exception):
    """A watch stream's line went on past the size the caller allows: dropped, not buffered."""


def _error(status: int, data: bytes, method: str, path: str, retry_after: str | None) -> APIError:
    try:
        payload = json.loads(data)
        reason, message = str(payload.get("reason", "")), str(payload.get("message", ""))
    except (ValueError, AttributeError):
        reason, message = "", data[:200].decode(errors="replace")
    try:
        delay = float(retry_after) if retry_after else None
    except ValueError:
        delay = None
    cls = {404: NotFoundError, 409: ConflictError, 410: GoneError}.get(status, APIError)
    return cls(status, reason, message, method=method, path=path, retry_after=delay)


# TCP keepalive on watch connections: a peer that is gone without a word (a dropped NAT entry, a
# host that vanished) is noticed by the kernel within 10 + 3 x 5 s, with no request of opd's.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3


def _keepalive(response: aiohttp.ClientResponse) -> None:
    connection = response.connection
    sock = connection.transport.get_extra_info("socket") if connection and connection.transport else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not every platform has every option
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


class KubeClient:
    """Authenticated connections to one API server.

    Two pools: one for watch streams, whose connections are closed when a stream
    ends (so a new stream never inherits a dead one), and one of keep-alive
    connections for requests. When a request times out or its connection fails,
    the idle ones in that pool may be just as dead (a dropped NAT entry kills them
    all at once, silently): the pool is replaced rather than tried one by one.
    """

    def __init__(self, credentials: Credentials, settings: NetworkingSettings | None = None,
                 *, source: str = "") -> None:
        self.settings = settings or NetworkingSettings()
        self.source = source
        self.host = credentials.host
        self.credentials = credentials
        self._api = self._new_session()
        self._streams = self._new_session(streams=True)
        self._retired: set[aiohttp.ClientSession] = set()
        self._handlers_api: LazyApiClient | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._recycled_at = 0.0
        self.recycles = 0
        self._open_streams: set[aiohttp.ClientResponse] = set()
        self._probe_api: aiohttp.ClientSession | None = None  # one kept-alive connection, for liveness probes
        self.probes = 0
        # When a watch stream last brought data (loop time): under load, a probe that answers late was
        # slowed by this process's own busy loop, not by a hung path (whose streams go silent).
        self.last_stream_data = 0.0
        # Operators sharing this client (a daemon's plugins) write the same objects at once: one request.
        self.patches = PatchBatcher(self._patch, split_on=one_writers_fault)

    def _new_session(self, *, streams: bool = False) -> aiohttp.ClientSession:
        limit = self.settings.connection_limit if streams else self.settings.request_connections
        tls = self.credentials.ssl_context() if self.host.startswith("https:") else None
        connector = aiohttp.TCPConnector(limit=limit, ssl=tls if tls is not None else True)
        # aiohttp reads the environment on every request when trusting it (.netrc and proxy variables,
        # each a thread-pool round trip: 16% of opd's CPU in the benchmark): only when a proxy
        # variable is set. The kubeconfig's own proxy-url applies either way.
        trust_env = any(os.environ.get(v) for v in _PROXY_VARS)
        return aiohttp.ClientSession(connector=connector, trust_env=trust_env, read_bufsize=_READ_BUFFER)

    def handler_client(self) -> LazyApiClient:
        """A kubernetes_asyncio ApiClient with the operator's own credentials, for handlers'
        own API calls (kwarg ``api``): the same cluster and identity as the operator's. Made (and
        kubernetes_asyncio imported) when a handler first uses it."""
        if self._handlers_api is None:
            self._handlers_api = LazyApiClient(self.credentials, connections=self.settings.request_connections)
        return self._handlers_api

    async def close(self) -> None:
        await self.patches.close()
        for task in self._closers:
            task.cancel()
        if self._handlers_api is not None:
            await self._handlers_api.close()
        if self._probe_api is not None:
            await self._probe_api.close()
        await asyncio.gather(self._api.close(), self._streams.close(),
                             *(old.close() for old in self._retired), return_exceptions=True)
        self._retired.clear()

    def recycle(self, *, hung: bool = False) -> None:
        """A fresh pool of request connections. ``hung``: the old ones are dead (a liveness probe
        says so): close them now, so that requests on them fail and are retried at once."""
        now = asyncio.get_running_loop().time()
        if now - self._recycled_at < 1.0:  # one replacement serves every request failing together
            return
        self._recycled_at = now
        self.recycles += 1
        old, self._api = self._api, self._new_session()
        self._retired.add(old)

        async def close_later() -> None:
            # Requests still running on the old pool finish (or time out) first.
            if not hung:
                await asyncio.sleep(self.settings.request_timeout)
            self._retired.discard(old)
            await old.close()

        task = asyncio.get_running_loop().create_task(close_later(), name="opd close retired pool")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def interrupt_streams(self) -> int:
        """End every open watch stream (their watchers resume them on new connections); how many."""
        streams = list(self._open_streams)
        for response in streams:
            response.close()
        return len(streams)

    async def probe(self, timeout: float) -> None:
        """One cheap request (``GET /version``) on a connection kept for it: raises when the path to
        the API server does not answer within ``timeout``. The connection lives as long as the
        streams do, so a path that silently drops long-lived connections drops it too."""
        if self._probe_api is None:
            self._probe_api = self._new_session()
        self.probes += 1
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout, sock_read=timeout)
        try:
            response = await self._send("GET", "/version", None, None, JSON, limits, api=self._probe_api)
            try:
                await response.read()
            finally:
                response.release()
        except BaseException:
            old, self._probe_api = self._probe_api, None
            await old.close()
            raise

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
                    content_type: str, timeout: Any, *, api: aiohttp.ClientSession | None = None
                    ) -> aiohttp.ClientResponse:
        """One request: the body serialised once, as JSON; the Authorization header as the
        credentials have it now (renewed first when due)."""
        headers = {"Accept": JSON, "Content-Type": content_type, "User-Agent": USER_AGENT}
        authorization = await self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        url = f"{self.host}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(list(query.items()))
        kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
        if self.credentials.proxy:
            kwargs["proxy"] = self.credentials.proxy
        if self.credentials.tls_server_name:
            kwargs["server_hostname"] = self.credentials.tls_server_name
        response: aiohttp.ClientResponse = await (api or self._api).request(method, url, **kwargs)
        if response.status == 401:
            self.credentials.refused()
        return response

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = JSON, timeout: float | None = None,
                      fenced: bool = False, raw: bool = False) -> Any:
        """One request. ``fenced``: ``timeout`` is the time left before this replica's fence, a
        bound on the whole request (connect and read included); running out of it raises Fenced
        (the answer is not awaited: the write may or may not have landed), and says nothing of
        the connection (the pool is kept)."""
        total = timeout or self.settings.request_timeout
        limits = aiohttp.ClientTimeout(
            total=total,
            sock_read=min(self.settings.read_timeout, total) if fenced else self.settings.read_timeout,
            sock_connect=min(self.settings.connect_timeout, total) if fenced else self.settings.connect_timeout,
        )
        try:
            response = await self._send(method, path, query, body, content_type, limits)
            try:
                data = await response.read()
            finally:
                response.release()
        except TimeoutError:
            if fenced:
                raise Fenced(f"{method} {path}: no answer before this replica's lease ran out ({total:.2f}s); "
                             "its outcome is unknown") from None
            self.recycle()
            raise
        except TRANSIENT_ERRORS:
            self.recycle()
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller was cancelled
            # Nobody cancelled the caller: aiohttp cancels the requests still waiting for a connection of
            # a pool that is closed (``recycle(hung=True)``). A connection failure, retried like one: as a
            # cancellation, it ended the caller's work silently (objects never handled after a restart).
            raise PoolClosed(f"{method} {path}: its connection pool was closed before it was sent") from None
        if response.status >= 400:
            raise _error(response.status, data, method, path, response.headers.get("Retry-After"))
        return data if raw else orjson.loads(data) if data else None

    async def get(self, path: str, **query: Any) -> Any:
        return await self.request("GET", path, query=query)

    async def get_raw(self, path: str, **query: Any) -> bytes:
        """A GET's answer as the bytes the API server sent: the caller parses them when it needs to."""
        data: bytes = await self.request("GET", path, query=query, raw=True)
        return data

    async def patch(self, path: str, body: Mapping[str, Any], *, fence: Fence | None = None) -> Any:
        """A merge-patch; merged with other writers' patches of the same object sent meanwhile.
        ``fence``: checked when the patch leaves (raises Fenced instead of sending it), and the
        request's timeout ends at it (see ``opd.kube.batching``)."""
        return await self.patches.patch(path, body, fence=fence)

    async def _patch(self, path: str, body: Mapping[str, Any], left: float | None) -> Any:
        if left is not None and left < self.settings.request_timeout:
            return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH, timeout=left, fenced=True)
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def stream(self, path: str, query: Mapping[str, Any], *, inactivity_timeout: float,
                     connect_timeout: float, max_line: int) -> AsyncIterator[bytearray]:
        """Yield the lines of a watch, unparsed (the caller checks them); raise InactivityTimeout when
        it stays silent, LineTooLong (having held no more than ``max_line`` bytes and a chunk) when
        a line goes on past ``max_line``."""
        # The inactivity bound is aiohttp's read timeout: no timer task per chunk read.
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                                        sock_read=inactivity_timeout)
        response = await asyncio.wait_for(
            self._send("GET", path, query, None, JSON, timeout, api=self._streams),
            connect_timeout + inactivity_timeout,
        )
        self._open_streams.add(response)
        try:
            if response.status >= 400:
                data = await response.read()
                raise _error(response.status, data, "WATCH", path, response.headers.get("Retry-After"))
            _keepalive(response)
            loop = asyncio.get_running_loop()
            buffer = bytearray()
            while True:
                try:
                    chunk = await response.content.readany()
                except (aiohttp.ServerTimeoutError, TimeoutError):
                    raise InactivityTimeout(f"no data for {inactivity_timeout:.0f}s on {path}") from None
                if not chunk:
                    return
                self.last_stream_data = loop.time()
                seek = len(buffer)  # what was buffered holds no newline: a long line is scanned once
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", max(start, seek))) >= 0:
                    if end - start > max_line:
                        raise LineTooLong(f"a watch line of {end - start} bytes (over {max_line}) on {path}")
                    if end > start:
                        yield buffer[start:end]  # a copy: the buffer moves on
                    start = end + 1
                del buffer[:start]
                if len(buffer) > max_line:
                    raise LineTooLong(f"a watch line of over {max_line} bytes on {path}")
        finally:
            # A half-read stream must not go back to the pool.
            self._open_streams.discard(response)
            response.close()
