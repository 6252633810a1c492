"""A connection to one cluster, shared by every operator of a process: the
authenticated client, API discovery, and the shared watch streams."""

from __future__ import annotations

from kubernetes_asyncio import client

from opd.engine.hub import WatchHub
from opd.kube.api import KubeClient
from opd.kube.credentials import Login, load_configuration
from opd.kube.discovery import Discovery
from opd.settings import OperatorSettings


class Cluster:
    def __init__(self, client: KubeClient, settings: OperatorSettings) -> None:
        self.client = client
        self.discovery = Discovery(client)
        self.hub = WatchHub(client, settings.watching)

    @classmethod
    async def connect(cls, login: Login | client.Configuration | None, settings: OperatorSettings) -> Cluster:
        """From an ``opd.Login`` (or None: find credentials), or a ready Configuration from a login handler."""
        if isinstance(login, client.Configuration):
            configuration, source = login, "a login handler"
        else:
            configuration, source = await load_configuration(login)
        return cls(KubeClient(configuration, settings.networking, source=source), settings)

    async def close(self) -> None:
        await self.hub.close()
        await self.client.close()
