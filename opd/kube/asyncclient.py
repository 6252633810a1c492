"""The bridge to kubernetes_asyncio, imported only when it is used.

That package's ``__init__`` imports every API model (~0.25 s of CPU): opd's own connection never
needs it. It is imported when a handler asks for its ``api`` kwarg and uses it (an ``ApiClient``
with the operator's credentials, made on first use), when a login handler returns a
kubernetes_asyncio ``Configuration``, and for kubeconfig users with an ``auth-provider`` (gcp,
oidc, azure), whose refresh logic is kubernetes_asyncio's.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from opd.kube.auth import Credentials


def is_configuration(value: object) -> bool:
    """A kubernetes_asyncio ``Configuration`` (without importing the package: whoever made one did)."""
    module = sys.modules.get("kubernetes_asyncio.client.configuration")
    return module is not None and isinstance(value, module.Configuration)


class ConfigurationAuth:
    """The Authorization header as a kubernetes_asyncio Configuration gives it (with its own
    ``refresh_api_key_hook``: exec plugins, oidc, in-cluster token files it loaded)."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration

    async def __call__(self, credentials: Credentials) -> None:
        auth = await self.configuration.auth_settings()
        value = (auth.get("BearerToken") or {}).get("value")
        if value:
            credentials.api_key["BearerToken"] = value
        else:
            credentials.api_key.pop("BearerToken", None)

    def expire(self) -> None:
        pass  # kubernetes_asyncio renews on its own schedule


def from_configuration(configuration: Any) -> Credentials:
    """Credentials from a kubernetes_asyncio Configuration; its header is asked for at every request."""
    return Credentials(
        configuration.host or "", ssl_ca_cert=configuration.ssl_ca_cert, cert_file=configuration.cert_file,
        key_file=configuration.key_file, verify_ssl=bool(configuration.verify_ssl),
        tls_server_name=getattr(configuration, "tls_server_name", None), proxy=configuration.proxy or None,
        refresher=ConfigurationAuth(configuration))


async def load_kubeconfig(path: str, context: str | None) -> Credentials:
    """A kubeconfig loaded by kubernetes_asyncio itself (for what opd's loader leaves to it)."""
    client = importlib.import_module("kubernetes_asyncio.client")
    config = importlib.import_module("kubernetes_asyncio.config")
    configuration = client.Configuration()
    await config.load_kube_config(config_file=path, context=context, client_configuration=configuration,
                                  persist_config=False)
    return from_configuration(configuration)


def configuration_of(credentials: Credentials) -> Any:
    """A kubernetes_asyncio Configuration for ``credentials``, its header renewed as opd renews it."""
    client = importlib.import_module("kubernetes_asyncio.client")
    configuration = client.Configuration(host=credentials.host)
    configuration.ssl_ca_cert = credentials.ssl_ca_cert
    configuration.cert_file = credentials.cert_file
    configuration.key_file = credentials.key_file
    configuration.verify_ssl = credentials.verify_ssl
    configuration.tls_server_name = credentials.tls_server_name
    configuration.proxy = credentials.proxy
    if isinstance(credentials.refresher, ConfigurationAuth):
        return credentials.refresher.configuration  # a login handler's own: used as it is
    configuration.api_key = dict(credentials.api_key)

    async def refresh(target: Any) -> None:
        header = await credentials.authorization()
        target.api_key = {"BearerToken": header} if header else {}

    configuration.refresh_api_key_hook = refresh
    return configuration


class LazyApiClient:
    """A kubernetes_asyncio ``ApiClient`` made on first use: handlers get one as their ``api`` kwarg,
    and most never use it. Anything asked of it is asked of the real client."""

    def __init__(self, credentials: Credentials, *, connections: int = 32) -> None:
        self._credentials = credentials
        self._connections = connections
        self._client: Any = None

    def real(self) -> Any:
        if self._client is None:
            client = importlib.import_module("kubernetes_asyncio.client")
            configuration = configuration_of(self._credentials)
            configuration.connection_pool_maxsize = self._connections  # as many as opd's own requests
            self._client = client.ApiClient(configuration=configuration)
        return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.real(), name)

    async def __aenter__(self) -> Any:
        return await self.real().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self.real().__aexit__(*exc)

    async def close(self) -> None:
        """Close the real client if there is one (opd does, when the operator stops)."""
        if self._client is not None:
            await self._client.close()

    def __repr__(self) -> str:
        return f"<LazyApiClient of {self._credentials.host}{' (made)' if self._client is not None else ''}>"
