"""Kopf's webhook server variants by name: where the API server runs in a VM or a container, the
host it dials differs (``WebhookServer`` itself advertises the address it listens on). Tunnels
through an outside service (ngrok) are not part of opd: they say so, in one line, when started.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from loguru import logger

from opd.errors import ConfigError
from opd.webhooks.server import ClientConfig, WebhookFn, WebhookServer


class WebhookK3dServer(WebhookServer):
    """For K3d/K3s clusters in a VM or container: every interface, advertised as host.k3d.internal."""

    DEFAULT_ADDR = "0.0.0.0"
    DEFAULT_HOST = "host.k3d.internal"


class WebhookDockerDesktopServer(WebhookServer):
    """For clusters of Docker Desktop (and others in a container with Docker's host name): every
    interface, advertised as host.docker.internal."""

    DEFAULT_ADDR = "0.0.0.0"
    DEFAULT_HOST = "host.docker.internal"


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
    """Kopf's picks what the cluster reaches (K3s/K3d, Minikube) and else opens an ngrok tunnel; opd has
    no tunnel, so where Kopf would open one it serves locally, and says so in one line."""

    async def detect(self, get: Probe) -> str:
        found = await super().detect(get)
        if found == "local":
            logger.warning("opd: WebhookAutoTunnel: Kopf would open an ngrok tunnel to this cluster; opd has none "
                           "and serves locally (reached by an API server on this host only; elsewhere, use "
                           "opd.WebhookServer(host=...))")
        return found


class WebhookNgrokTunnel:
    """Tunnels through ngrok (an outside service) are not part of opd: saying so is all this does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, fn: WebhookFn) -> AsyncIterator[ClientConfig]:
        raise ConfigError("settings.admission.server: WebhookNgrokTunnel cannot start: tunnels to the internet "
                          "(ngrok, pyngrok) are not part of opd; "
                          "use opd.WebhookServer(host=...) with an address the API server reaches, "
                          "or a tunnel of your own (an async iterator of client configs)")
