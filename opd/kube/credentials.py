"""Credentials and connection settings, loaded by kubernetes_asyncio (never hand-rolled).

Order: an explicit kubeconfig; in a pod, its service account unless ``$KUBECONFIG`` is set;
``$KUBECONFIG``; ``~/.kube/config``. Exec plugins and token refresh come with it.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from loguru import logger

from opd.errors import ConfigError
from opd.kube.api import KubeClient
from opd.settings import NetworkingSettings

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
    ``private_key_path``/``private_key_data`` (data: bytes or PEM text). Accepted and not used:
    ``default_namespace``, ``priority`` (the highest wins; among equals, the first login handler's),
    ``expiration`` (opd does not log in again: a token that expires needs a kubeconfig whose
    exec plugin or refresh kubernetes_asyncio runs)."""

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
    priority: int = 0
    expiration: datetime.datetime | None = None


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


def configuration_from(info: ConnectionInfo) -> client.Configuration:
    """A kubernetes_asyncio Configuration from Kopf-shaped credentials."""
    cfg = client.Configuration()
    cfg.host = info.server.rstrip("/")
    cfg.verify_ssl = not info.insecure
    if info.ca_path or info.ca_data:
        cfg.ssl_ca_cert = info.ca_path or _data_file(info.ca_data or b"", "ca_data")
    if info.certificate_path or info.certificate_data:
        cfg.cert_file = info.certificate_path or _data_file(info.certificate_data or b"", "certificate_data")
    if info.private_key_path or info.private_key_data:
        cfg.key_file = info.private_key_path or _data_file(info.private_key_data or b"", "private_key_data")
    # kubernetes_asyncio sends api_key["BearerToken"] as the Authorization header, scheme included.
    if info.token:
        cfg.api_key = {"BearerToken": f"{info.scheme or 'Bearer'} {info.token}"}
    elif info.username and info.password:
        basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
        cfg.api_key = {"BearerToken": f"Basic {basic}"}
    return cfg


def login_with_service_account(**_: Any) -> Login | None:
    """For an ``on.login`` handler (Kopf's spelling): the pod's service account, or None outside a pod."""
    return Login(in_cluster=True) if _in_cluster_available() else None


def login_with_kubeconfig(**_: Any) -> Login | None:
    """For an ``on.login`` handler (Kopf's spelling): ``$KUBECONFIG`` or ``~/.kube/config``, or None
    when neither exists."""
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not any(Path(p).expanduser().exists() for p in path.split(os.pathsep) if p):
        return None
    return Login(kubeconfig=path, in_cluster=False)


async def login_via_async_client(**_: Any) -> client.Configuration:
    """For an ``on.login`` handler (Kopf's spelling): what kubernetes_asyncio finds by itself
    (in a pod, its service account unless ``$KUBECONFIG`` is set; else the kubeconfig)."""
    cfg, _source = await load_configuration()
    return cfg


def _in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and _SA_TOKEN.exists()


def _one_line(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:  # a YAML syntax error: where, and what
        return f"malformed YAML at line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', '')}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ConfigException) else f"malformed ({type(exc).__name__}: {text})"


async def load_configuration(login: Login | None = None) -> tuple[client.Configuration, str]:
    """A client Configuration and a short description of its source (for logs)."""
    login = login or Login()
    cfg = client.Configuration()
    use_cluster = login.in_cluster
    if use_cluster is None:
        use_cluster = login.kubeconfig is None and not os.environ.get("KUBECONFIG") and _in_cluster_available()
    if use_cluster:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise ConfigError(f"in-cluster credentials: {exc}") from exc
        return cfg, "in-cluster service account"

    path = login.kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    first = path.split(os.pathsep)[0]
    if not any(Path(p).expanduser().exists() for p in path.split(os.pathsep) if p):
        raise ConfigError(
            f"kubeconfig {first}: no such file (and not in a pod); set KUBECONFIG, pass a kubeconfig, "
            "or run 'opd local-cluster start'"
        )
    try:
        await config.load_kube_config(
            config_file=path, context=login.context, client_configuration=cfg, persist_config=False
        )
    except ConfigException as exc:
        raise ConfigError(f"kubeconfig {path}: {_one_line(exc)}") from exc
    except Exception as exc:  # yaml errors, wrong types inside: the file is malformed
        raise ConfigError(f"kubeconfig {path}: {_one_line(exc)}") from exc
    where = f"kubeconfig {path}" + (f" context {login.context}" if login.context else "")
    return cfg, where


async def connect(login: Login | ConnectionInfo | client.Configuration | None,
                  settings: NetworkingSettings) -> KubeClient:
    """An authenticated client from an ``opd.Login`` (None: find credentials), or from what a
    login handler may return: a ready kubernetes_asyncio Configuration, or Kopf's ConnectionInfo."""
    if isinstance(login, client.Configuration):
        configuration, source = login, "a login handler"
    elif isinstance(login, ConnectionInfo):
        if login.expiration is not None:
            logger.warning("opd: the login handler's ConnectionInfo.expiration is not used: opd does not "
                           "log in again when it passes")
        configuration, source = configuration_from(login), "a login handler (ConnectionInfo)"
    else:
        configuration, source = await load_configuration(login)
    return KubeClient(configuration, settings, source=source)
