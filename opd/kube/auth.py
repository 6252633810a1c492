"""Credentials for one API server: where it is, how TLS is checked, and the Authorization header,
kept fresh (a token file re-read when it changes, an exec plugin run again before its token expires).

The attributes are named as kubernetes_asyncio's ``Configuration`` names them (``host``,
``ssl_ca_cert``, ``cert_file``, ``key_file``, ``verify_ssl``, ``tls_server_name``, ``proxy``,
``api_key["BearerToken"]``), so that a handler's ``api`` client is one copy away
(``opd.kube.asyncclient``), and so that importing opd does not import that package's models.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import time
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from opd.errors import ConfigError
from opd.kube.execplugin import ExecCredential, ExecPlugin

MAX_TOKEN_BYTES = 64 * 1024  # a service account's JWT is ~1 KiB; a token file past this is not one
EXEC_EARLY = 30.0  # seconds before a plugin's token expires that it is run again
EXEC_RETRY = 5.0  # seconds between runs of a plugin that failed (requests meanwhile use the old token)


class Refresher(Protocol):
    """Keeps ``credentials.api_key`` current; called before every request (cheap when nothing is due)."""

    async def __call__(self, credentials: Credentials) -> None: ...

    def expire(self) -> None:
        """The server refused the header (401): renew it at the next request if that can help."""


class Credentials:
    """Where to connect and as whom."""

    def __init__(self, host: str, *, ssl_ca_cert: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, verify_ssl: bool = True, tls_server_name: str | None = None,
                 proxy: str | None = None, authorization: str | None = None,
                 refresher: Refresher | None = None) -> None:
        self.host = host.rstrip("/")
        self.ssl_ca_cert = ssl_ca_cert
        self.cert_file = cert_file
        self.key_file = key_file
        self.verify_ssl = verify_ssl
        self.tls_server_name = tls_server_name
        self.proxy = proxy
        # "BearerToken" -> the whole header value, scheme included (kubernetes_asyncio's shape).
        self.api_key: dict[str, str] = {"BearerToken": authorization} if authorization else {}
        self.refresher = refresher
        self._ssl: ssl.SSLContext | None = None

    def __repr__(self) -> str:  # never the header
        return f"Credentials(host={self.host!r}, verify_ssl={self.verify_ssl}, cert_file={self.cert_file!r})"

    async def authorization(self) -> str | None:
        """The Authorization header's value for the next request (None: anonymous or a certificate)."""
        if self.refresher is not None:
            await self.refresher(self)
        return self.api_key.get("BearerToken")

    def refused(self) -> None:
        """A request was answered 401: a renewable credential is renewed at the next request."""
        if self.refresher is not None:
            self.refresher.expire()

    def ssl_context(self) -> ssl.SSLContext:
        """One TLS context for every connection to this server (made once: reading the CA costs)."""
        if self._ssl is None:
            try:
                context = ssl.create_default_context(cafile=self.ssl_ca_cert)
                if self.cert_file:
                    context.load_cert_chain(self.cert_file, keyfile=self.key_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                what = f"{self.ssl_ca_cert or ''} {self.cert_file or ''} {self.key_file or ''}".split()
                raise ConfigError(f"TLS files of {self.host} ({', '.join(what) or 'system CAs'}): "
                                  f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from None
            if not self.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        return self._ssl


def read_token(path: Path) -> str:
    """A bearer token from a file, bounded; raises ConfigError for a missing, empty or huge one."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"token file {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise ConfigError(f"token file {path}: larger than {MAX_TOKEN_BYTES // 1024} KiB; not a token")
    token = raw.decode(errors="replace").strip()
    if not token:
        raise ConfigError(f"token file {path}: empty")
    return token


class TokenFile:
    """A token read from a file and read again whenever the file changes (the kubelet rotates a pod's
    projected token by replacing the file): one ``stat`` per request, no timer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def load(self, credentials: Credentials) -> None:
        stamp = self._stamp()
        credentials.api_key["BearerToken"] = f"Bearer {read_token(self.path)}"
        self._seen = stamp

    async def __call__(self, credentials: Credentials) -> None:
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return  # unchanged, or gone for a moment mid-rotation: the token read last still serves
        try:
            self.load(credentials)
        except ConfigError as exc:  # empty mid-write: keep the last one, read again next time
            logger.debug(f"opd: {exc}; the token read before is used")

    def expire(self) -> None:
        self._seen = None


class ExecRefresh:
    """An exec plugin's token, renewed ``EXEC_EARLY`` seconds before it expires or after a 401, one
    run at a time; a failed run is said once and tried again after ``EXEC_RETRY`` seconds."""

    def __init__(self, plugin: ExecPlugin, cluster: dict[str, Any], answer: ExecCredential) -> None:
        self.plugin = plugin
        self.cluster = cluster
        self.expires = answer.expires
        self._lock = asyncio.Lock()
        self._due = False
        self._failed_at = -EXEC_RETRY

    def _needed(self) -> bool:
        if self._due:
            return True
        if self.expires is None:
            return False
        left = (self.expires - datetime.datetime.now(datetime.UTC)).total_seconds()
        return left <= EXEC_EARLY

    async def __call__(self, credentials: Credentials) -> None:
        if not self._needed() or time.monotonic() - self._failed_at < EXEC_RETRY:
            return
        async with self._lock:
            if not self._needed():
                return  # another request renewed it meanwhile
            try:
                answer = await self.plugin.run(self.cluster)
            except ConfigError as exc:
                self._failed_at = time.monotonic()
                logger.warning(f"opd: renewing the token: {exc}; the previous one is used meanwhile")
                return
            if answer.token:
                credentials.api_key["BearerToken"] = f"Bearer {answer.token}"
            self.expires, self._due = answer.expires, False

    def expire(self) -> None:
        self._due = True
