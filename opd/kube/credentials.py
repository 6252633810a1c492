"""Credentials and connection settings, loaded by kubernetes_asyncio (never hand-rolled).

Order: an explicit kubeconfig; in a pod, its service account unless ``$KUBECONFIG`` is set;
``$KUBECONFIG``; ``~/.kube/config``. Exec plugins and token refresh come with it.

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
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from loguru import logger

from opd.errors import ConfigError
from opd.kube.api import KubeClient
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
    kubeconfig whose exec plugin or refresh kubernetes_asyncio runs). Those that opd's login helpers
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
    kubernetes_asyncio does (exec plugins, token refresh) rather than the static copy. A copy made
    with ``dataclasses.replace`` forgets it, and is used as it is."""
    object.__setattr__(info, "_opd_source", login)
    return info


def source_of(info: ConnectionInfo) -> Login | None:
    source = getattr(info, "_opd_source", None)
    return source if isinstance(source, Login) else None


class LoginError(ConfigError):
    """A login handler could not find credentials (Kopf's ``kopf.LoginError``)."""


_data_folder: str | None = None


def _data_file(data: bytes | str, what: str) -> str:
    """Certificate or key data as a file (the client reads only files), private to this process's user."""
    global _data_folder
    if _data_folder is None:
        _data_folder = tempfile.mkdtemp(prefix="opd-login-")  # 0700
        atexit.register(shutil.rmtree, _data_folder, True)
    raw = data.encode() if isinstance(data, str) else data
    if not raw.lstrip().startswith(b"-----"):  # base64 of PEM, as in a kubeconfig
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


def configuration_from(info: ConnectionInfo) -> client.Configuration:
    """A kubernetes_asyncio Configuration from Kopf-shaped credentials."""
    cfg = client.Configuration()
    cfg.host = info.server.rstrip("/")
    cfg.verify_ssl = not info.insecure
    if info.ca_path or info.ca_data:
        cfg.ssl_ca_cert = _path(info.ca_path) if info.ca_path else _data_file(info.ca_data or b"", "ca_data")
    if info.certificate_path or info.certificate_data:
        cfg.cert_file = (_path(info.certificate_path) if info.certificate_path
                         else _data_file(info.certificate_data or b"", "certificate_data"))
    if info.private_key_path or info.private_key_data:
        cfg.key_file = (_path(info.private_key_path) if info.private_key_path
                        else _data_file(info.private_key_data or b"", "private_key_data"))
    if info.proxy_url:
        cfg.proxy = info.proxy_url
    # kubernetes_asyncio sends api_key["BearerToken"] as the Authorization header, scheme included.
    if info.token:
        cfg.api_key = {"BearerToken": f"{info.scheme or 'Bearer'} {info.token}"}
    elif info.username and info.password:
        basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
        cfg.api_key = {"BearerToken": f"Basic {basic}"}
    return cfg


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
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:  # a YAML syntax error: where, and what, never the text it quotes (a token, maybe)
        problem = " ".join(re.sub(r"'[^']*'|\"[^\"]*\"", "...", str(getattr(exc, "problem", "") or "")).split())
        return f"malformed YAML at line {mark.line + 1}, column {mark.column + 1}: {problem[:120]}"
    # kubernetes_asyncio names a malformed entry by its repr, which may hold a user's token: not that.
    text = re.sub(r"\{.*\}", "{...}", " ".join(str(exc).split())) or type(exc).__name__
    return text if isinstance(exc, ConfigException) else f"malformed ({type(exc).__name__}: {text})"


async def load_configuration(login: Login | None = None) -> tuple[client.Configuration, str]:
    """A client Configuration and a short description of its source (for logs)."""
    login = resolve(login)
    cfg = client.Configuration()
    if login.in_cluster:
        token, ca, _ = service_account_files()
        try:
            InClusterConfigLoader(token_filename=str(token), cert_filename=str(ca)).load_and_set(cfg)
        except ConfigException as exc:
            raise ConfigError(f"in-cluster credentials: {exc}") from exc
        return cfg, "in-cluster service account"
    path = login.kubeconfig or default_kubeconfig()
    try:
        await config.load_kube_config(
            config_file=path, context=login.context, client_configuration=cfg, persist_config=False
        )
    except ConfigException as exc:
        raise ConfigError(f"kubeconfig {path}: {one_line(exc)}") from exc
    except Exception as exc:  # yaml errors, wrong types inside: the file is malformed
        raise ConfigError(f"kubeconfig {path}: {one_line(exc)}") from exc
    where = f"kubeconfig {path}" + (f" context {login.context}" if login.context else "")
    return cfg, where


# -- the official `kubernetes` client, configured as Kopf's default login does -----------------------------------------

def kubernetes_imported() -> bool:
    return sys.modules.get("kubernetes") is not None  # None there: an import that was blocked


def kubernetes_installed() -> bool:
    return kubernetes_imported() or importlib.util.find_spec("kubernetes") is not None


async def import_kubernetes_client() -> bool:
    """Import the ``kubernetes`` package if it is installed (in a thread: ~0.2 s of imports that the
    loop need not wait on); True when it is there to configure."""
    if kubernetes_imported():
        return True
    if not kubernetes_installed():
        return False
    try:
        await asyncio.to_thread(importlib.import_module, "kubernetes.config")
    except Exception as exc:  # a broken install is the user's; opd's own connection does not need it
        logger.warning(f"opd: the kubernetes package is installed but cannot be imported "
                       f"({type(exc).__name__}: {exc}); its client is not configured")
        return False
    return True


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


async def connect(login: Login | ConnectionInfo | client.Configuration | None,
                  settings: NetworkingSettings) -> KubeClient:
    """An authenticated client from an ``opd.Login`` (None: find credentials), or from what a
    login handler may return: a ready kubernetes_asyncio Configuration, or Kopf's ConnectionInfo.

    With opd's own login (no handler's answer) and the ``kubernetes`` package imported, that
    client's default configuration is loaded from the same source (``import_kubernetes_client()``
    imports it first where that is wanted)."""
    if isinstance(login, ConnectionInfo) and source_of(login) is not None:
        configuration, source = await load_configuration(source_of(login))
        source = f"a login handler ({source})"
    elif isinstance(login, client.Configuration):
        configuration, source = login, "a login handler"
    elif isinstance(login, ConnectionInfo):
        if login.expiration is not None:
            logger.warning("opd: the login handler's ConnectionInfo.expiration is not used: opd does not "
                           "log in again when it passes")
        configuration, source = configuration_from(login), "a login handler (ConnectionInfo)"
    else:
        resolved = resolve(login)
        configuration, source = await load_configuration(resolved)
        if kubernetes_imported():
            await asyncio.to_thread(configure_kubernetes_client, resolved)
            logger.debug(f"opd: the kubernetes client is configured from the same {source}")
    return KubeClient(configuration, settings, source=source)
