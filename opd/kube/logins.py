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
from pathlib import Path
from typing import Any

from loguru import logger

from opd.errors import ConfigError
from opd.kube import kubeconfig
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
    """Kopf's ``login_via_async_client``: what opd's own loader finds (where kubernetes_asyncio would look)."""
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
    # opd re-reads the (rotated) token when the pod's environment names the server.
    return with_source(info, Login(in_cluster=True)) if in_cluster_available() else info


def login_with_kubeconfig(**_: Any) -> ConnectionInfo | None:
    """Kopf's ``login_with_kubeconfig``: the current context of ``$KUBECONFIG`` (several files
    merged) or ``~/.kube/config``, as written (no exec plugin runs for the returned fields), or None
    when there is no such file."""
    path = default_kubeconfig()
    if not kubeconfig_exists(path):
        return None
    try:
        merged = kubeconfig.read(path)
        if not merged.current_context:
            raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: no current-context")
        context = merged.contexts.get(merged.current_context)
        if context is None:
            raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: no context named "
                             f"{merged.current_context!r:.80}")
        cluster_name, user_name = context.string("cluster"), context.string("user")
        cluster = merged.clusters.get(cluster_name or "")
        if cluster is None:
            raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: no cluster named {cluster_name!r:.80}")
        user = merged.users.get(user_name) if user_name else None
        if user_name and user is None:
            raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: no user named {user_name!r:.80}")
        provider = user.section("auth-provider") if user is not None else None
        provider_config = provider.section("config") if provider is not None else None
        provider_token = provider_config.string("access-token") if provider_config is not None else None

        def field(entry: kubeconfig.Entry | None, key: str) -> Any:
            return entry.string(key) if entry is not None else None

        def path_of(entry: kubeconfig.Entry | None, key: str) -> str | None:
            found = entry.file(key) if entry is not None else None
            return str(found) if found is not None else None

        info = ConnectionInfo(
            server=cluster.string("server") or "",
            ca_path=path_of(cluster, "certificate-authority"),
            ca_data=cluster.string("certificate-authority-data"),
            insecure=cluster.boolean("insecure-skip-tls-verify"),
            certificate_path=path_of(user, "client-certificate"),
            certificate_data=field(user, "client-certificate-data"),
            private_key_path=path_of(user, "client-key"),
            private_key_data=field(user, "client-key-data"),
            username=field(user, "username"), password=field(user, "password"),
            token=field(user, "token") or provider_token,
            default_namespace=context.string("namespace"), proxy_url=cluster.string("proxy-url"),
            priority=PRIORITY_OF_KUBECONFIG,
        )
    except LoginError:
        raise
    except ConfigError as exc:
        raise LoginError(f"login_with_kubeconfig: {exc}") from None
    except Exception as exc:  # wrong shapes: one line
        raise LoginError(f"login_with_kubeconfig: kubeconfig {path}: {one_line(exc)}") from None
    return with_source(info, Login(kubeconfig=path, in_cluster=False))
