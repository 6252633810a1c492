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

Which host the API server dials is the point of the variants: the plain server advertises the
address it listens on (a control plane on the same machine, or ``host=`` for one that reaches
this machine by another name); ``WebhookK3dServer`` and ``WebhookMinikubeServer`` listen on every
interface and advertise the name their VMs give the host; ``WebhookAutoServer`` picks one of the
three by asking the cluster. Tunnels through an outside service (ngrok) are not part of opd.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from loguru import logger

from opd.errors import ConfigError, WebhookError
from opd.webhooks import certificates
from opd.webhooks.certificates import Certificates

MAX_REQUEST = 32 * 1024 * 1024  # bytes: a review carries whole objects (old and new), or a list of them
HEADER_TIMEOUT = 10.0  # seconds a connection may stay idle (the API server keeps its connections alive)
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
                 verify_mode: ssl.VerifyMode | None = None, context: ssl.SSLContext | None = None) -> None:
        if (certfile is None) != (pkeyfile is None):
            raise ConfigError("WebhookServer: certfile and pkeyfile go together")
        if url is not None and not url.startswith(("https://", "http://")):
            raise ConfigError(f"WebhookServer: url {url!r} must start with https://")
        if url is not None and ("?" in url or "#" in url):
            raise ConfigError(f"WebhookServer: url {url!r}: the API server takes no query or fragment")
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
        self.certificates: Certificates | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where it serves, once started
        self._mounts: dict[str, _Mount] = {}
        self._mounts_lock = threading.Lock()  # mounts come from plugins' threads too
        self._runner: web.AppRunner | None = None
        self._tmp: Path | None = None
        self._starting: asyncio.Lock | None = None
        self._owned_by_call = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url if self.started else 'not started'}>"

    # -- where ----------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._runner is not None

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
            if self._runner is not None:
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
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=HEADER_TIMEOUT, shutdown_timeout=2.0,
                               logger=logging.getLogger("opd.webhooks.aiohttp"))
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.listen_addr or None, self.port or 0, ssl_context=context)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{_host_in_url(self.listen_addr)}:{self.port or 0}"
            raise ConfigError(f"webhook server: cannot listen on {where}: {exc.strerror or exc}") from exc
        self._runner = runner
        if not self.port:
            self.port = int(runner.addresses[0][1])
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
                certfile, keyfile = self.cert_dir / certificates.CERT_FILE, self.cert_dir / certificates.KEY_FILE
            else:
                self.certificates = certificates.make(self.hosts())
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
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self.path and not (path == self.path or path.startswith(self.path + "/")):
            raise web.HTTPNotFound(text=f"no webhooks under {path}\n")
        found = self._find(path[len(self.path):])
        if found is None:
            raise web.HTTPNotFound(text=f"no webhooks under {path}\n")
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        mount, webhook = found
        try:
            review = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON review\n") from None
        if not isinstance(review, dict):
            raise web.HTTPBadRequest(text="expected a JSON review\n")
        peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
        call = mount.fn(review, webhook=webhook or None, headers=dict(request.headers), sslpeer=peer or {})
        try:
            if mount.loop is asyncio.get_running_loop():
                answer = await call
            else:
                answer = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(call), mount.loop))
        except WebhookError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except RuntimeError:  # the mount's loop closed meanwhile (a plugin restarting)
            if mount.loop.is_closed():
                raise web.HTTPServiceUnavailable(text="the webhook's operator is restarting\n") from None
            raise
        return web.json_response(answer)

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


class WebhookK3dServer(WebhookServer):
    """For K3d/K3s clusters in a VM or container: every interface, advertised as host.k3d.internal."""

    DEFAULT_ADDR = "0.0.0.0"
    DEFAULT_HOST = "host.k3d.internal"


class WebhookMinikubeServer(WebhookServer):
    """For Minikube clusters in a VM: every interface, advertised as host.minikube.internal."""

    DEFAULT_ADDR = "0.0.0.0"
    DEFAULT_HOST = "host.minikube.internal"


# GET a path of the API server with a query -> its JSON (raises on errors).
Probe = Callable[[str, Mapping[str, str]], Awaitable[Any]]


class WebhookAutoServer(WebhookServer):
    """Asks the cluster what it is (``detect``, before it starts): K3s/K3d and Minikube get their
    variant's address and host; any other cluster, a plain local server. It never tunnels."""

    async def detect(self, get: Probe) -> str:
        """'k3d', 'minikube' or 'local'; sets the defaults of that variant."""
        found = "local"
        with contextlib.suppress(Exception):  # no answer, or no RBAC to ask: a plain local server
            version = await get("/version", {})
            if "k3s" in str((version or {}).get("gitVersion", "")):
                found = "k3d"
        if found == "local":
            with contextlib.suppress(Exception):
                nodes = await get("/api/v1/nodes", {"labelSelector": "minikube.k8s.io/name", "limit": "1"})
                if (nodes or {}).get("items"):
                    found = "minikube"
        variant = {"k3d": WebhookK3dServer, "minikube": WebhookMinikubeServer}.get(found)
        if variant is not None:
            self.DEFAULT_ADDR, self.DEFAULT_HOST = variant.DEFAULT_ADDR, variant.DEFAULT_HOST
        logger.info(f"opd: WebhookAutoServer: the cluster looks {'like ' + found if variant else 'local'}")
        return found


class WebhookAutoTunnel(WebhookAutoServer):
    """Kopf's auto-tunnel falls back to ngrok; opd's is the auto-server: it never tunnels."""


class WebhookNgrokTunnel:
    """Tunnels through ngrok (an outside service) are not part of opd: saying so is all this does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, fn: WebhookFn) -> AsyncIterator[ClientConfig]:
        raise ConfigError("settings.admission.server: tunnels to the internet (ngrok) are not part of opd; "
                          "use opd.WebhookServer(host=...) with an address the API server reaches, "
                          "or a tunnel of your own (an async iterator of client configs)")


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
