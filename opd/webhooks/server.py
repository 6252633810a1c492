"""The HTTPS server the API server calls with admission and conversion reviews.

One ``WebhookServer`` listens on one port with one certificate and carries any number of
*mounts*: a path prefix and the function that answers reviews sent under it (an operator's
webhooks; under ``opd start``, one mount per plugin). A mount made from another thread's loop
(a plugin with ``isolation = "thread"``) is answered in that loop.

It also speaks Kopf's server protocol: ``server(fn)`` is an async iterator that starts the
server, mounts ``fn`` at its root and yields the client configuration for the webhook
configurations (``{"url": ..., "caBundle": ...}``), again whenever it changes. opd's operators
call every ``settings.admission.server`` that way, so a user's own server or tunnel written for
Kopf works too; ``fn(review, webhook=, headers=, sslpeer=)`` answers one review.

The plain server advertises the address it listens on (a control plane on the same machine, or
``host=`` for one that reaches this machine by another name); ``variants`` holds Kopf's named
servers for clusters in a VM or container.

Anyone who reaches the port can send anything, so what a client can take is bounded before
anything it sends is trusted: the listener (``listening``) caps time, connections and the bytes
bodies hold; ``bodies`` checks each body's size, encoding, decoding and shape. Every refusal is
one line, and opd's own failure to answer is logged once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from loguru import logger

from opd.engine.execution import brief
from opd.errors import ConfigError, WebhookError
from opd.webhooks import bodies, certificates
from opd.webhooks.bodies import BadBody
from opd.webhooks.certificates import Certificates
from opd.webhooks.listening import (
    BODY_BUDGET,
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    LINGER,
    MAX_BODY,
    MAX_CONNECTIONS,
    SMALL_BODY,
    Budget,
    Listener,
    ProtocolLog,
    refusal,
)

WILDCARDS = ("", "0.0.0.0", "::")

ClientConfig = dict[str, Any]  # ``.webhooks[].clientConfig``: {"url"} or {"service"}, and "caBundle"


class WebhookFn(Protocol):
    """Answers one review (Kopf's ``WebhookFn``): ``webhook`` is the path under the mount."""

    def __call__(self, review: Mapping[str, Any], *, webhook: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 sslpeer: Mapping[str, Any] | None = None) -> Awaitable[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class _Mount:
    fn: WebhookFn
    loop: asyncio.AbstractEventLoop


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _clean_path(path: str | None) -> str:
    """'/a/b' without a trailing slash, or '' for the root."""
    parts = [p for p in (path or "").split("/") if p]
    return "/" + "/".join(parts) if parts else ""


def with_path(config: ClientConfig, path: str) -> ClientConfig:
    """A client configuration for the webhook at ``path`` under the one given (URL or service path)."""
    tail = "/".join(urllib.parse.quote(p, safe="") for p in path.split("/") if p)
    out: ClientConfig = json.loads(json.dumps(config))  # a deep copy of plain JSON
    if not tail:
        return out
    if "url" in out:
        out["url"] = f"{out['url'].rstrip('/')}/{tail}"
    if "service" in out:
        out["service"]["path"] = f"{(out['service'].get('path') or '').rstrip('/')}/{tail}"
    return out


def parse_service(text: str) -> tuple[str, str, int]:
    """'namespace/name' or 'namespace/name:port' (a Service in front of opd) -> parts; port 443 by default."""
    ns, _, rest = text.partition("/")
    name, _, port = rest.partition(":")
    if not ns or not name or (port and not port.isdigit()) or not 0 < int(port or 443) < 65536:
        raise ConfigError(f"webhook service {text!r}: expected \"namespace/name\" or \"namespace/name:port\"")
    return ns, name, int(port or 443)


class WebhookServer:
    """An HTTPS server for webhooks, listening on ``addr``:``port`` (port None or 0: any free one).

    The API server is told to dial ``url`` if given (a proxy or load balancer in front), else the
    Service ``service`` ("namespace/name[:port]") if given, else ``https://<host>:<port><path>``,
    where ``host`` defaults to ``addr`` (``localhost`` when listening on every interface).

    TLS: ``certfile``/``pkeyfile`` (and ``password``) are a certificate made elsewhere, with
    ``cafile``/``cadata`` the CA that signed it (the ``caBundle``; none: one the cluster trusts);
    else certificates kept in ``cert_dir`` (made there if missing, renewed when needed); else a
    CA and certificate made for this process. ``cadump`` gets a copy of the CA (for curl).
    ``cafile``/``cadata`` also verify client certificates, when a client sends one: handlers see
    them as ``sslpeer``. ``insecure=True`` serves plain HTTP, which the API server never calls:
    for a tunnel that terminates TLS itself, or for curl.
    """

    DEFAULT_ADDR: str = "127.0.0.1"
    DEFAULT_HOST: str | None = None  # the name the API server dials, when ``host`` is not given

    def __init__(self, *, addr: str | None = None, port: int | None = None, host: str | None = None,
                 path: str | None = None, url: str | None = None, service: str | None = None,
                 certfile: str | Path | None = None, pkeyfile: str | Path | None = None,
                 password: str | None = None, cafile: str | Path | None = None, cadata: str | bytes | None = None,
                 cadump: str | Path | None = None, cert_dir: str | Path | None = None,
                 extra_sans: Sequence[str] = (), insecure: bool = False,
                 verify_mode: ssl.VerifyMode | None = None, context: ssl.SSLContext | None = None,
                 max_body: int = MAX_BODY, max_connections: int = MAX_CONNECTIONS) -> None:
        if (certfile is None) != (pkeyfile is None):
            raise ConfigError("WebhookServer: certfile and pkeyfile go together")
        if url is not None and not url.startswith(("https://", "http://")):
            raise ConfigError(f"WebhookServer: url {url!r} must start with https://")
        if url is not None and ("?" in url or "#" in url):
            raise ConfigError(f"WebhookServer: url {url!r}: the API server takes no query or fragment")
        if max_body < 1 or max_connections < 1:
            raise ConfigError(f"WebhookServer: max_body ({max_body}) and max_connections ({max_connections}) "
                              "must be positive")
        self.addr = addr
        self.port = port
        self.host = host
        self.path = _clean_path(path)
        self.url = url
        self.service = parse_service(service) if service else None
        self.certfile, self.pkeyfile, self.password = certfile, pkeyfile, password
        self.cafile, self.cadata, self.cadump = cafile, cadata, cadump
        self.cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.extra_sans = tuple(extra_sans)
        self.insecure = insecure
        self.verify_mode = verify_mode
        self.context = context
        self.max_body = max_body
        self.max_connections = max_connections
        self.certificates: Certificates | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where it serves, once started
        self._mounts: dict[str, _Mount] = {}
        self._mounts_lock = threading.Lock()  # mounts come from plugins' threads too
        self._http: Listener | None = None
        self._listening: asyncio.Server | None = None
        self._budget: Budget | None = None
        self._tmp: Path | None = None
        self._starting: asyncio.Lock | None = None
        self._owned_by_call = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url if self.started else 'not started'}>"

    # -- where ----------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._listening is not None

    @property
    def listen_addr(self) -> str:
        return self.addr if self.addr is not None else self.DEFAULT_ADDR

    @property
    def advertised_host(self) -> str:
        if self.host:
            return self.host
        if self.DEFAULT_HOST:
            return self.DEFAULT_HOST
        return "localhost" if self.listen_addr in WILDCARDS else self.listen_addr

    def hosts(self) -> list[str]:
        """Every name and address the serving certificate must carry."""
        names = [self.advertised_host, "localhost", "127.0.0.1"]
        if self.listen_addr not in WILDCARDS:
            names.append(self.listen_addr)
        if self.url:
            parsed = urllib.parse.urlsplit(self.url).hostname
            if parsed:
                names.insert(0, parsed)
        if self.service:
            ns, name, _ = self.service
            names[:0] = [f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}", name]
        names += self.extra_sans
        return list(dict.fromkeys(h.strip("[]") for h in names if h))

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        scheme = "http" if self.insecure else "https"
        return f"{scheme}://{_host_in_url(self.advertised_host)}:{self.port}{self.path}"

    @property
    def ca_bundle(self) -> bytes:
        return self.certificates.ca if self.certificates is not None else b""

    def client_config(self, prefix: str = "") -> ClientConfig:
        """What the API server is told about the mount at ``prefix``: URL or Service, and CA."""
        if self.service and not self.url:
            ns, name, port = self.service
            config: ClientConfig = {"service": {"namespace": ns, "name": name, "port": port, "path": self.path or "/"}}
        else:
            config = {"url": self.base_url}
        if self.ca_bundle:
            config["caBundle"] = base64.b64encode(self.ca_bundle).decode("ascii")
        return with_path(config, prefix)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (once; later calls return at once, also from other threads' loops)."""
        if self.loop is not None and self.loop is not asyncio.get_running_loop():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.start(), self.loop))
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._listening is not None:
                return
            self.loop = asyncio.get_running_loop()
            try:
                await self._listen()
            except BaseException:
                self.loop = None
                self._forget_files()
                raise

    async def _listen(self) -> None:
        context = None if self.insecure else self._ssl_context()
        loop = asyncio.get_running_loop()
        # Headers: aiohttp's keep-alive timer closes a connection whose next request's headers are
        # not all in HEADER_TIMEOUT after it opened or answered (sizes: aiohttp's 8 KiB per line,
        # 128 fields). Bodies arrive as sent (no decompression: compressed ones are refused).
        http = Listener(self._handle, limit=self.max_connections, loop=loop, access_log=None,
                       keepalive_timeout=HEADER_TIMEOUT, lingering_time=LINGER, auto_decompress=False,
                       logger=ProtocolLog(logging.getLogger("opd.webhooks.aiohttp")))
        try:
            listening = await loop.create_server(http, self.listen_addr or None, self.port or 0, ssl=context,
                                                 ssl_handshake_timeout=HEADER_TIMEOUT if context else None)
        except OSError as exc:
            where = f"{_host_in_url(self.listen_addr)}:{self.port or 0}"
            raise ConfigError(f"webhook server: cannot listen on {where}: {exc.strerror or exc}") from exc
        self._http, self._listening, self._budget = http, listening, Budget(max(BODY_BUDGET, self.max_body))
        if not self.port:
            self.port = int(listening.sockets[0].getsockname()[1])
        logger.info(f"opd: webhook server listening on {_host_in_url(self.listen_addr)}:{self.port}, "
                    f"called at {self.base_url}")
        if self.listen_addr in WILDCARDS and not (self.host or self.DEFAULT_HOST or self.url or self.service):
            logger.warning("opd: the webhook server listens on every interface but is advertised as localhost: "
                           "set its host (or [webhooks].host) to a name the API server reaches")

    def _ssl_context(self) -> ssl.SSLContext:
        if self.context is not None:
            return self.context
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self.certfile is not None and self.pkeyfile is not None:
            certfile, keyfile = Path(self.certfile), Path(self.pkeyfile)
            try:
                ca = Path(self.cafile).read_bytes() if self.cafile is not None else (
                    self.cadata.encode() if isinstance(self.cadata, str) else self.cadata or b"")
                self.certificates = Certificates(ca=ca, cert=certfile.read_bytes(), key=b"")
            except OSError as exc:
                raise ConfigError(f"webhook server: cannot read {exc.filename}: {exc.strerror or exc}") from exc
        else:
            if self.cert_dir is not None:
                self.certificates, done = certificates.keep(self.cert_dir, self.hosts())
                logger.info(f"opd: webhook certificates in {self.cert_dir}: {done}")
            else:
                self.certificates = certificates.make(self.hosts())
            # Loaded from what was read and checked, not from the folder again (which may change meanwhile).
            self._tmp = Path(tempfile.mkdtemp(prefix="opd-webhooks-"))  # 0700: mkdtemp's own mode
            certfile, keyfile = self._tmp / "tls.crt", self._tmp / "tls.key"
            certificates._write(certfile, self.certificates.cert)
            certificates._write(keyfile, self.certificates.key)
        try:
            context.load_cert_chain(certfile, keyfile, password=self.password)
            if self.cafile is not None or self.cadata is not None:
                context.load_verify_locations(cafile=str(self.cafile) if self.cafile is not None else None,
                                              cadata=self.cadata)
                context.verify_mode = ssl.CERT_OPTIONAL  # a client may show a certificate: sslpeer
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"webhook server: cannot load its certificate {certfile}: {exc}") from exc
        if self.verify_mode is not None:
            context.verify_mode = self.verify_mode
        if self.cadump is not None and self.ca_bundle:
            Path(self.cadump).write_bytes(self.ca_bundle)
        return context

    def _forget_files(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def stop(self) -> None:
        if self.loop is not None and self.loop is not asyncio.get_running_loop():
            with contextlib.suppress(RuntimeError):  # its loop is gone: so is the server
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.stop(), self.loop))
            return
        listening, self._listening = self._listening, None
        http, self._http = self._http, None
        if listening is not None and http is not None:
            listening.close()
            http.pre_shutdown()
            await http.shutdown(2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listening.wait_closed(), 2.0)
        self._forget_files()
        self.loop = None

    # -- mounts ---------------------------------------------------------------------------------------------------

    def mount(self, prefix: str, fn: WebhookFn, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Answer reviews under ``prefix`` with ``fn``, in ``loop`` (the caller's by default)."""
        key = _clean_path(prefix)
        with self._mounts_lock:
            if key in self._mounts:
                raise ConfigError(f"webhook server: the path {key or '/'!r} is mounted already")
            self._mounts[key] = _Mount(fn, loop or asyncio.get_running_loop())

    def unmount(self, prefix: str) -> None:
        with self._mounts_lock:
            self._mounts.pop(_clean_path(prefix), None)

    def _find(self, path: str) -> tuple[_Mount, str] | None:
        """The mount with the longest prefix of ``path`` (whole segments), and the rest of the path."""
        with self._mounts_lock:
            mounts = dict(self._mounts)
        segments = [urllib.parse.unquote(p) for p in path.split("/") if p]
        for cut in range(len(segments), -1, -1):
            found = mounts.get("/" + "/".join(segments[:cut]) if cut else "")
            if found is not None:
                return found, "/".join(segments[cut:])
        return None

    # -- requests -------------------------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """One review: routed, bounded (size, time, encoding, shape), answered; every refusal one line."""
        path = request.path
        found = self._find(path[len(self.path):]) if (
            not self.path or path == self.path or path.startswith(self.path + "/")) else None
        if found is None:
            return refusal(404, f"no webhooks under {path[:200]}")
        if request.method != "POST":
            return refusal(405, f"{request.method[:20]}: webhooks take POST only", Allow="POST")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # The API server sends plain JSON: a compressed body could only be someone else's, and
            # bounding what it expands to is easier done by never expanding it.
            return refusal(415, f"Content-Encoding {encoding[:40]!r}: send the review uncompressed")
        length = request.content_length
        if length is not None and length > self.max_body:
            return refusal(413, f"a request body of {length} bytes: the limit is {self.max_body}")
        mount, webhook = found
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # checked: now it may send the body
        assert self._budget is not None
        deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT
        # Large bodies (or of unknown size) reserve their share of the budget before they are
        # read; small ones, the API server's usual, need none: a client announcing large bodies
        # and never sending them can delay only other large ones.
        size = self.max_body if length is None else length
        try:
            async with asyncio.timeout_at(deadline):
                held = await self._budget.take(size) if size > SMALL_BODY else 0
        except TimeoutError:
            return refusal(503, "the webhook server is busy with other large requests: try again")
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    body = await bodies.read(request.content, self.max_body)
                review = await bodies.decode_off_loop(body)
                del body
            except BadBody as exc:
                return refusal(exc.status, str(exc))
            except TimeoutError:
                return refusal(408, f"the request body did not arrive within {BODY_TIMEOUT:g}s")
            except (ConnectionError, RequestPayloadError) as exc:  # gone, or a broken chunk: nobody to answer
                return refusal(400, f"the request body did not arrive whole: {brief(exc)}")
            return await self._answer(request, mount, webhook, review)
        finally:
            self._budget.give(held)

    async def _answer(self, request: web.BaseRequest, mount: _Mount, webhook: str,
                      review: dict[str, Any]) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
        try:
            call = mount.fn(review, webhook=webhook or None, headers=dict(request.headers), sslpeer=peer or {})
            if mount.loop is asyncio.get_running_loop():
                answer = await call
            else:
                answer = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(call), mount.loop))
            text = orjson.dumps(answer)
        except WebhookError as exc:  # not a review, or not one for this path: the client's mistake
            return refusal(400, brief(exc))
        except Exception as exc:
            if isinstance(exc, RuntimeError) and mount.loop.is_closed():  # a plugin restarting meanwhile
                return refusal(503, "the webhook's operator is restarting")
            return self._failed(request, exc)
        return web.Response(body=text, content_type="application/json")

    def _failed(self, request: web.BaseRequest, exc: Exception) -> web.StreamResponse:
        """opd's own failure to answer (not a handler's refusal, which is answered in the review):
        said once in opd's log with its traceback, and in one line to the client."""
        logger.opt(exception=exc).error(f"opd: webhook server: cannot answer a review at {request.path[:200]}: "
                                        f"{brief(exc)}")
        return refusal(500, f"opd cannot answer this review: {brief(exc)}")

    # -- Kopf's protocol ------------------------------------------------------------------------------------------

    async def __call__(self, fn: WebhookFn) -> AsyncIterator[ClientConfig]:
        started_here = not self.started
        await self.start()
        self.mount("", fn)
        try:
            yield self.client_config()
            await asyncio.Event().wait()
        finally:
            self.unmount("")
            if started_here:
                await self.stop()


async def _awaited(call: Awaitable[Any]) -> Any:
    return await call


class SharedMount:
    """One operator's part of a server that others use too (the daemon's plugins): its webhooks
    under ``/<prefix>``. The server is started by the first mount and stopped by its owner; it
    lives in ``home``, the owner's loop, even when the first mount comes from a plugin's own
    thread (whose loop ends when that plugin restarts). A mount is taken back when its operator stops."""

    def __init__(self, server: WebhookServer, prefix: str, *, home: asyncio.AbstractEventLoop | None = None) -> None:
        self.server = server
        self.prefix = _clean_path(prefix)
        self.home = home

    def __repr__(self) -> str:
        return f"<SharedMount {self.prefix} of {self.server!r}>"

    async def __call__(self, fn: WebhookFn) -> AsyncIterator[ClientConfig]:
        here = asyncio.get_running_loop()
        if self.home is None or self.home is here:
            await self.server.start()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.server.start(), self.home))
        self.server.mount(self.prefix, fn, loop=here)
        try:
            yield self.server.client_config(self.prefix)
            await asyncio.Event().wait()
        finally:
            self.server.unmount(self.prefix)
