"""Where credentials come from, and loading them.

Order: an explicit kubeconfig; in a pod, its service account unless ``$KUBECONFIG`` is set;
``$KUBECONFIG``; ``~/.kube/config``. Kubeconfigs are read by opd (``opd.kube.kubeconfig``: client
certificates and keys as files or data, tokens, token files, basic auth, exec plugins renewed
before they expire); a user with an ``auth-provider`` (gcp, oidc, azure) is left to
kubernetes_asyncio's loader, imported then. The service account's token is read again when the
kubelet rotates it.

Kopf's default login configures the official ``kubernetes`` client as a side effect, and Kopf
operators call ``kubernetes.client.CoreV1Api()`` without loading a config: opd loads that client's
default configuration from the same source it uses itself (same server, same credentials), when
the ``kubernetes`` package is there; it is never a dependency of opd.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import datetime
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from opd.errors import ConfigError
from opd.kube import asyncclient, kubeconfig
from opd.kube.api import KubeClient
from opd.kube.auth import Credentials, ExecRefresh, TokenFile
from opd.kube.execplugin import ExecPlugin, cluster_info
from opd.settings import NetworkingSettings

# A pod's service account; its ca.crt and namespace lie beside the token (tests point it elsewhere).
_SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True)
class Login:
    """Where to get credentials; all None means: find them as kubectl would, or in-cluster."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None


@dataclass(frozen=True)
class ConnectionInfo:
    """Credentials in Kopf's shape (``kopf.ConnectionInfo``), for ``on.login`` handlers written for Kopf.

    Used: ``server``, ``scheme`` (Basic or Bearer for ``token``), ``token``, ``username`` and
    ``password``, ``ca_path``/``ca_data``, ``insecure``, ``certificate_path``/``certificate_data``,
    ``private_key_path``/``private_key_data`` (data: bytes or PEM text), ``proxy_url``. Accepted and
    not used: ``default_namespace``, ``trust_env``, ``priority`` (the highest wins; among equals, the
    first login handler's), ``expiration`` (opd does not log in again: a token that expires needs a
    kubeconfig whose exec plugin opd runs again). Those that opd's login helpers
    return remember their source: connecting with one loads that source as opd itself would."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | str | None = None
    insecure: bool | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    scheme: str | None = None
    token: str | None = field(default=None, repr=False)
    certificate_path: str | None = None
    certificate_data: bytes | str | None = field(default=None, repr=False)
    private_key_path: str | None = None
    private_key_data: bytes | str | None = field(default=None, repr=False)
    default_namespace: str | None = None
    proxy_url: str | None = None
    trust_env: bool = False
    priority: int = 0
    expiration: datetime.datetime | None = None

    def __post_init__(self) -> None:
        for what in ("ca", "certificate", "private_key"):  # as Kopf: one of the two, never both
            if getattr(self, f"{what}_path") and getattr(self, f"{what}_data"):
                raise ValueError(f"ConnectionInfo: both {what}_path and {what}_data are set; give one")
        if not isinstance(self.server, str) or not self.server.startswith(("https://", "http://")):
            raise ValueError(f"ConnectionInfo.server: expected https://HOST[:PORT], got {self.server!r:.80}")


def with_source(info: ConnectionInfo, login: Login) -> ConnectionInfo:
    """Remember where opd's login helpers found ``info``: connecting loads that source with everything
    opd does (exec plugins, token renewal) rather than the static copy. A copy made
    with ``dataclasses.replace`` forgets it, and is used as it is."""
    object.__setattr__(info, "_opd_source", login)
    return info


def source_of(info: ConnectionInfo) -> Login | None:
    source = getattr(info, "_opd_source", None)
    return source if isinstance(source, Login) else None


class LoginError(ConfigError):
    """A login handler could not find credentials (Kopf's ``kopf.LoginError``)."""


_data_folder: str | None = None


def _data_file(data: bytes | str, what: str, *, decoded: bool = False) -> str:
    """Certificate or key data as a file (TLS reads only files), private to this process's user.
    ``decoded``: the bytes as they go to the file (else PEM, or base64 of it, as Kopf's fields hold)."""
    global _data_folder
    if _data_folder is None:
        _data_folder = tempfile.mkdtemp(prefix="opd-login-")  # 0700
        atexit.register(shutil.rmtree, _data_folder, True)
    raw = data.encode() if isinstance(data, str) else data
    if not decoded and not raw.lstrip().startswith(b"-----"):  # base64 of PEM, as in a kubeconfig
        try:
            raw = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise LoginError(f"ConnectionInfo.{what}: neither PEM nor base64 ({exc})") from None
    fd, path = tempfile.mkstemp(dir=_data_folder, suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
    return path


def _path(value: str | os.PathLike[str] | bytes) -> str:
    return os.path.expanduser(os.fsdecode(value))  # Kopf's page writes '~/.minikube/client.crt'


def configuration_from(info: ConnectionInfo) -> Credentials:
    """Credentials from Kopf-shaped ones (static: nothing to renew)."""
    ca = cert = key = None
    if info.ca_path or info.ca_data:
        ca = _path(info.ca_path) if info.ca_path else _data_file(info.ca_data or b"", "ca_data")
    if info.certificate_path or info.certificate_data:
        cert = (_path(info.certificate_path) if info.certificate_path
                else _data_file(info.certificate_data or b"", "certificate_data"))
    if info.private_key_path or info.private_key_data:
        key = (_path(info.private_key_path) if info.private_key_path
               else _data_file(info.private_key_data or b"", "private_key_data"))
    authorization = None
    if info.token:
        authorization = f"{info.scheme or 'Bearer'} {info.token}"
    elif info.username and info.password:
        authorization = "Basic " + base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
    return Credentials(info.server, ssl_ca_cert=ca, cert_file=cert, key_file=key, verify_ssl=not info.insecure,
                       proxy=info.proxy_url or None, authorization=authorization)


def service_account_files() -> tuple[Path, Path, Path]:
    """A pod's service account: its token, CA bundle and namespace files."""
    return _SA_TOKEN, _SA_TOKEN.parent / "ca.crt", _SA_TOKEN.parent / "namespace"


def in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and _SA_TOKEN.exists()


def default_kubeconfig() -> str:
    """``$KUBECONFIG`` (one path or several) or ``~/.kube/config``, as kubectl reads it."""
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def kubeconfig_exists(path: str) -> bool:
    return any(Path(p).expanduser().exists() for p in path.split(os.pathsep) if p)


def resolve(login: Login | None = None) -> Login:
    """Where the credentials come from, decided: the service account (``in_cluster=True``) or a
    kubeconfig path (``in_cluster=False``). One decision for opd and for the clients it configures."""
    login = login or Login()
    use_cluster = login.in_cluster
    if use_cluster is None:
        use_cluster = login.kubeconfig is None and not os.environ.get("KUBECONFIG") and in_cluster_available()
    if use_cluster:
        return Login(in_cluster=True, context=login.context)
    path = login.kubeconfig or default_kubeconfig()
    if not kubeconfig_exists(path):
        raise ConfigError(
            f"kubeconfig {path.split(os.pathsep)[0]}: no such file (and not in a pod); set KUBECONFIG, "
            "pass a kubeconfig, or run 'opd local-cluster start'"
        )
    return Login(kubeconfig=path, context=login.context, in_cluster=False)


def one_line(exc: BaseException) -> str:
    """An error reading credentials as one line that quotes no value of the file (a token, maybe)."""
    if getattr(exc, "problem_mark", None) is not None:
        return kubeconfig.one_line_yaml(exc)
    if isinstance(exc, ConfigError):
        return str(exc)
    # Other libraries name a malformed entry by its repr, which may hold a user's token: not that.
    text = re.sub(r"\{.*\}", "{...}", " ".join(str(exc).split())) or type(exc).__name__
    return text if type(exc).__name__ == "ConfigException" else f"malformed ({type(exc).__name__}: {text})"


def in_cluster_credentials() -> Credentials:
    """The pod's service account: the API server from the pod's environment, the mounted CA, and
    the token file, read again whenever the kubelet rotates it."""
    token, ca, _ = service_account_files()
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("in-cluster credentials: KUBERNETES_SERVICE_HOST/PORT are not set")
    if not ca.is_file() or ca.stat().st_size == 0:
        raise ConfigError(f"in-cluster credentials: {ca}: missing or empty")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    refresher = TokenFile(token)
    credentials = Credentials(server, ssl_ca_cert=str(ca), refresher=refresher)
    try:
        refresher.load(credentials)
    except ConfigError as exc:
        raise ConfigError(f"in-cluster credentials: {exc}") from None
    return credentials


async def kubeconfig_credentials(path: str, context: str | None = None) -> Credentials:
    """Credentials from a kubeconfig (``path``: one file or several, ``os.pathsep``-separated)."""
    chosen = kubeconfig.select(kubeconfig.read(path), context)
    cluster, user = chosen.cluster, chosen.user
    if user is not None and user.body.get("auth-provider") is not None:
        return await asyncclient.load_kubeconfig(path, context)  # gcp, oidc, azure: kubernetes_asyncio's
    server = cluster.string("server")
    if server is None:
        raise cluster.fail("server", "missing")
    if not server.startswith(("https://", "http://")):
        raise cluster.fail("server", "expected https://HOST[:PORT]")
    ca = _file_or_data(cluster, "certificate-authority")
    credentials = Credentials(server, ssl_ca_cert=ca, verify_ssl=not cluster.boolean("insecure-skip-tls-verify"),
                              tls_server_name=cluster.string("tls-server-name"), proxy=cluster.string("proxy-url"))
    if user is None:
        return credentials
    credentials.cert_file = _file_or_data(user, "client-certificate")
    credentials.key_file = _file_or_data(user, "client-key")
    exec_ = user.section("exec")
    if exec_ is not None:
        plugin = ExecPlugin.from_entry(exec_)
        info = cluster_info(cluster)
        answer = await plugin.run(info)
        if answer.token:
            credentials.api_key["BearerToken"] = f"Bearer {answer.token}"
            credentials.refresher = ExecRefresh(plugin, info, answer)
        else:
            assert answer.certificate and answer.key
            credentials.cert_file = _data_file(answer.certificate, "clientCertificateData", decoded=True)
            credentials.key_file = _data_file(answer.key, "clientKeyData", decoded=True)
        return credentials
    token, token_file = user.string("token"), user.file("tokenFile")
    if token:
        credentials.api_key["BearerToken"] = f"Bearer {token}"
    elif token_file is not None:
        refresher = TokenFile(token_file)
        try:
            refresher.load(credentials)
        except ConfigError as exc:
            raise user.fail("tokenFile", str(exc)) from None
        credentials.refresher = refresher
    else:
        username, password = user.string("username"), user.string("password")
        if username and password:
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            credentials.api_key["BearerToken"] = f"Basic {basic}"
    return credentials


def _file_or_data(entry: kubeconfig.Entry, key: str) -> str | None:
    """A certificate or key as a file: the data (preferred, as kubectl) in a private file, or the
    named file, which must exist."""
    data = entry.data(f"{key}-data")
    if data:
        return _data_file(data, f"{entry.where}.{key}-data", decoded=True)
    path = entry.file(key)
    if path is None:
        return None
    if not path.is_file():
        raise entry.fail(key, f"{path}: no such file")
    return str(path)


async def load_configuration(login: Login | None = None) -> tuple[Credentials, str]:
    """Credentials and a short description of their source (for logs)."""
    login = resolve(login)
    if login.in_cluster:
        return in_cluster_credentials(), "in-cluster service account"
    path = login.kubeconfig or default_kubeconfig()
    try:
        credentials = await kubeconfig_credentials(path, login.context)
    except ConfigError:
        raise
    except Exception as exc:  # kubernetes_asyncio's loader (auth providers): its errors, one line
        raise ConfigError(f"kubeconfig {path}: {one_line(exc)}") from exc
    where = f"kubeconfig {path}" + (f" context {login.context}" if login.context else "")
    return credentials, where


# -- the official `kubernetes` client, configured as Kopf's default login does -----------------------------------------

def kubernetes_imported() -> bool:
    return sys.modules.get("kubernetes") is not None  # None there: an import that was blocked


def kubernetes_installed() -> bool:
    return kubernetes_imported() or importlib.util.find_spec("kubernetes") is not None


async def import_kubernetes_client() -> bool:
    """True when the ``kubernetes`` package is there to configure. It is not imported here (~0.3 CPU s
    that most operators never use): ``connect()`` configures it if it is imported by then, or else
    when something first imports it (``configure_on_import``)."""
    return kubernetes_installed()


class _ConfigureOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``kubernetes`` is first imported (a handler's late ``import
    kubernetes``), it lets the import run and then loads that client's default configuration from
    opd's source. Process-wide, as that default configuration is."""

    def __init__(self) -> None:
        self.login: Login | None = None

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "kubernetes" or self.login is None:
            return None
        login, self.login = self.login, None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec is not None else None
        if spec is None or not isinstance(loader, importlib.abc.Loader):
            return None
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            try:
                configure_kubernetes_client(login)
            except ConfigError as exc:  # the import itself succeeded: say why the client is not configured
                logger.warning(f"opd: {exc}")

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader
        return spec


_on_import = _ConfigureOnImport()


def configure_on_import(login: Login) -> None:
    """Configure the ``kubernetes`` client from ``login`` when it is first imported."""
    _on_import.login = login
    if _on_import not in sys.meta_path:
        sys.meta_path.insert(0, _on_import)


def configure_kubernetes_client(login: Login) -> Any:
    """Load the ``kubernetes`` client's default configuration from ``login`` (a resolved one) and
    return it; blocking (an exec plugin may run). The package must be importable."""
    kube_config = importlib.import_module("kubernetes.config")
    try:
        if login.in_cluster:
            token, ca, _ = service_account_files()
            incluster = importlib.import_module("kubernetes.config.incluster_config")
            incluster.InClusterConfigLoader(token_filename=str(token), cert_filename=str(ca)).load_and_set()
        else:
            kube_config.load_kube_config(config_file=login.kubeconfig, context=login.context, persist_config=False)
    except Exception as exc:  # ConfigException and the YAML errors alike: one line, no traceback
        where = "in-cluster credentials" if login.in_cluster else f"kubeconfig {login.kubeconfig}"
        raise ConfigError(f"the kubernetes client's {where}: {one_line(exc)}") from None
    return importlib.import_module("kubernetes.client").Configuration.get_default_copy()


async def connect(login: Login | ConnectionInfo | Credentials | Any | None,
                  settings: NetworkingSettings) -> KubeClient:
    """An authenticated client from an ``opd.Login`` (None: find credentials), or from what a
    login handler may return: a ready kubernetes_asyncio Configuration, or Kopf's ConnectionInfo.

    With opd's own login (no handler's answer), the ``kubernetes`` client's default configuration
    is loaded from the same source: now if that package is imported, else when it first is."""
    credentials: Credentials
    if isinstance(login, ConnectionInfo) and source_of(login) is not None:
        credentials, source = await load_configuration(source_of(login))
        source = f"a login handler ({source})"
    elif isinstance(login, Credentials):
        credentials, source = login, "a login handler"
    elif asyncclient.is_configuration(login):
        credentials, source = asyncclient.from_configuration(login), "a login handler"
    elif isinstance(login, ConnectionInfo):
        if login.expiration is not None:
            logger.warning("opd: the login handler's ConnectionInfo.expiration is not used: opd does not "
                           "log in again when it passes")
        credentials, source = configuration_from(login), "a login handler (ConnectionInfo)"
    elif login is None or isinstance(login, Login):
        resolved = resolve(login)
        credentials, source = await load_configuration(resolved)
        if kubernetes_imported():
            await asyncio.to_thread(configure_kubernetes_client, resolved)
            logger.debug(f"opd: the kubernetes client is configured from the same {source}")
        elif kubernetes_installed():
            configure_on_import(resolved)
    else:
        raise ConfigError(f"login: expected opd.Login, ConnectionInfo or a kubernetes_asyncio Configuration, "
                          f"got {type(login).__name__}")
    return KubeClient(credentials, settings, source=source)
