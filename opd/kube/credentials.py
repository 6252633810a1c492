"""Credentials and connection settings, loaded by kubernetes_asyncio (never hand-rolled).

Order: an explicit kubeconfig; in a pod, its service account unless ``$KUBECONFIG`` is set;
``$KUBECONFIG``; ``~/.kube/config``. Exec plugins and token refresh come with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

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


async def connect(login: Login | client.Configuration | None, settings: NetworkingSettings) -> KubeClient:
    """An authenticated client from an ``opd.Login`` (None: find credentials), or from a ready
    kubernetes_asyncio Configuration (what a login handler may return)."""
    if isinstance(login, client.Configuration):
        configuration, source = login, "a login handler"
    else:
        configuration, source = await load_configuration(login)
    return KubeClient(configuration, settings, source=source)
