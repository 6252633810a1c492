"""Kopf's login helpers (``kopf.login_via_client``, ``login_via_pykube``, ``login_via_async_client``,
``login_with_kubeconfig``, ``login_with_service_account``), for ``on.login`` handlers written for Kopf.

Each returns a ``ConnectionInfo`` (or None where it does not apply), read from the same source opd
would use by itself (``credentials.resolve``); the info remembers that source, so that connecting
with it loads the source as opd does (exec plugins, token refresh). The third-party clients are
imported only when called, and only if installed: opd depends on neither.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio.config.kube_config import KubeConfigMerger
from loguru import logger

from opd.errors import ConfigError
from opd.kube.credentials import (
    ConnectionInfo,
    Login,
    LoginError,
    configure_kubernetes_client,
    default_kubeconfig,
    in_cluster_available,
    kubeconfig_exists,
    load_configuration,
    one_line,
    resolve,
    service_account_files,
    with_source,
)

# Kopf's priorities (the highest wins): pykube's over the clients', the service account's over a kubeconfig's.
PRIORITY_OF_CLIENT = 10
PRIORITY_OF_ASYNC_CLIENT = 15
PRIORITY_OF_PYKUBE = 20
PRIORITY_OF_KUBECONFIG = 10
PRIORITY_OF_SERVICE_ACCOUNT = 20


def _resolved(library: str) -> Login:
    try:
        return resolve()
    except ConfigError as exc:
        raise LoginError(f"{library}: no credentials, neither in-cluster nor in a kubeconfig ({exc})") from None


def _split_authorization(header: str | None) -> tuple[str | None, str | None]:
    """'Bearer abc' -> ('Bearer', 'abc'); 'abc' -> (None, 'abc') (RFC 7235)."""
    if not header:
        return None, None
    scheme, _, token = header.partition(" ")
    return (scheme, token) if token else (None, scheme)


def login_via_client(**_: Any) -> ConnectionInfo | None:
    """Kopf's ``login_via_client``: configure the official ``kubernetes`` client (as a side effect,
    its default configuration, which ``kubernetes.client.CoreV1Api()`` then uses) and return what it
    found. None, said in one line, when the package is not installed."""
    if importlib.util.find_spec("kubernetes") is None:
        logger.warning("opd: login_via_client: the kubernetes package is not installed "
                       "(pip install kubernetes); no credentials from it")
        return None
    login = _resolved("login_via_client")
    try:
        cfg = configure_kubernetes_client(login)
    except ConfigError as exc:
        raise LoginError(str(exc)) from None
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, token = _split_authorization(header)
    return with_source(ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None, scheme=scheme, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file, proxy_url=cfg.proxy or None,
        priority=PRIORITY_OF_CLIENT,
    ), login)


async def login_via_async_client(**_: Any) -> ConnectionInfo:
    """Kopf's ``login_via_async_client``: what kubernetes_asyncio finds (opd's own client library)."""
    login = _resolved("login_via_async_client")
    cfg, _source = await load_configuration(login)
    scheme, token = _split_authorization((cfg.api_key or {}).get("BearerToken"))
    return with_source(ConnectionInfo(
        server=cfg.host or "", ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl, scheme=scheme, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file, proxy_url=cfg.proxy or None,
        priority=PRIORITY_OF_ASYNC_CLIENT,
    ), login)


def login_via_pykube(**_: Any) -> ConnectionInfo | None:
    """Kopf's ``login_via_pykube``: pykube-ng's reading of the service account or the kubeconfig.
    None, said in one line, when pykube-ng is not installed."""
    if importlib.util.find_spec("pykube") is None:
        logger.warning("opd: login_via_pykube: pykube-ng is not installed (pip install pykube-ng); "
                       "no credentials from it")
        return None
    pykube = importlib.import_module("pykube")
    login = _resolved("login_via_pykube")
    try:
        if login.in_cluster:
            kcfg = pykube.KubeConfig.from_service_account(path=str(service_account_files()[0].parent))
        else:
            first = next(p for p in (login.kubeconfig or "").split(os.pathsep) if p and Path(p).expanduser().exists())
            kcfg = pykube.KubeConfig.from_file(first)
            if login.context:
                kcfg.set_current_context(login.context)
        cluster, user = kcfg.cluster, kcfg.user
        # An auth-provider's token appears once pykube has made a request with it (as Kopf does).
        provider_token = None
        if user.get("auth-provider"):
            pykube.HTTPClient(kcfg).get(version="", base="/")
            provider_token = user.get("auth-provider", {}).get("config", {}).get("access-token")
        ca, cert, key = cluster.get("certificate-authority"), user.get("client-certificate"), user.get("client-key")
        info = ConnectionInfo(
            server=cluster.get("server"), ca_path=ca.filename() if ca else None,
            insecure=cluster.get("insecure-skip-tls-verify"),
            username=user.get("username"), password=user.get("password"),
            token=user.get("token") or provider_token,
            certificate_path=cert.filename() if cert else None, private_key_path=key.filename() if key else None,
            default_namespace=kcfg.namespace, proxy_url=cluster.get("proxy-url"), priority=PRIORITY_OF_PYKUBE,
        )
    except LoginError:
        raise
    except Exception as exc:  # pykube's own errors, missing files, malformed YAML: one line
        where = "the service account" if login.in_cluster else f"kubeconfig {login.kubeconfig}"
        raise LoginError(f"login_via_pykube: {where}: {one_line(exc)}") from None
    return with_source(info, login)


def login_with_service_account(**_: Any) -> ConnectionInfo | None:
    """Kopf's ``login_with_service_account``: the pod's service account as it is on disk (token, CA,
    namespace), or None outside a pod."""
    token_file, ca_file, namespace_file = service_account_files()
    if not token_file.exists():
        return None
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    server = (f"https://[{host}]:{port}" if host and ":" in host else f"https://{host}:{port}" if host
              else "https://kubernetes.default.svc")  # Kopf's, when the pod's environment does not say
    info = ConnectionInfo(
        server=server,
        ca_path=str(ca_file) if ca_file.exists() else None,
        token=token_file.read_text().strip() or None,
        default_namespace=(namespace_file.read_text().strip() or None) if namespace_file.exists() else None,
        priority=PRIORITY_OF_SERVICE_ACCOUNT,
    )
    # kubernetes_asyncio re-reads the (rotated) token when the pod's environment names the server.
    return with_source(info, Login(in_cluster=True)) if in_cluster_available() else info


def _from_file(section: Mapping[str, Any], node: Any, key: str) -> str | None:
    """A path in a kubeconfig, relative to the file that holds it (as kubectl reads it)."""
    value = section.get(key)
    if not value:
        return None
    base = Path(node.path).parent if getattr(node, "path", None) else Path.cwd()
    return str(base / os.path.expanduser(str(value)))


def login_with_kubeconfig(**_: Any) -> ConnectionInfo | None:
    """Kopf's ``login_with_kubeconfig``: the current context of ``$KUBECONFIG`` (several files
    merged) or ``~/.kube/config``, as written (no exec plugin runs for the returned fields), or None
    when there is no such file."""
    path = default_kubeconfig()
    if not kubeconfig_exists(path):
        return None
    try:
        merged = KubeConfigMerger(path).config
        root: Mapping[str, Any] = merged.value if merged is not None else {}
        current = root.get("current-context")
        if not current:
            raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: no current-context")

        def named(section: str, name: Any) -> Any:
            for node in root.get(section) or []:
                if node.value.get("name") == name:
                    return node
            raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: no {section[:-1]} named {name!r}")

        context = named("contexts", current).value.get("context") or {}
        cluster_node = named("clusters", context.get("cluster"))
        user_node = named("users", context.get("user")) if context.get("user") else None
        cluster = cluster_node.value.get("cluster") or {}
        user = (user_node.value.get("user") or {}) if user_node is not None else {}
        provider_token = (user.get("auth-provider") or {}).get("config", {}).get("access-token")
        info = ConnectionInfo(
            server=cluster.get("server") or "",
            ca_path=_from_file(cluster, cluster_node, "certificate-authority"),
            ca_data=cluster.get("certificate-authority-data"),
            insecure=cluster.get("insecure-skip-tls-verify"),
            certificate_path=_from_file(user, user_node, "client-certificate"),
            certificate_data=user.get("client-certificate-data"),
            private_key_path=_from_file(user, user_node, "client-key"),
            private_key_data=user.get("client-key-data"),
            username=user.get("username"), password=user.get("password"),
            token=user.get("token") or provider_token,
            default_namespace=context.get("namespace"), proxy_url=cluster.get("proxy-url"),
            priority=PRIORITY_OF_KUBECONFIG,
        )
    except LoginError:
        raise
    except Exception as exc:  # YAML errors (where, never the line: it may hold a token), wrong shapes: one line
        raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: {one_line(exc)}") from None
    return with_source(info, Login(kubeconfig=path, in_cluster=False))

