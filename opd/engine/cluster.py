"""A connection to one cluster, shared by every operator of a process: the
authenticated client, API discovery, and the shared watch streams."""

from __future__ import annotations

from typing import Any

from opd.engine.hub import WatchHub
from opd.kube import credentials
from opd.kube.api import KubeClient
from opd.kube.credentials import Login
from opd.kube.discovery import Discovery
from opd.settings import OperatorSettings


class Cluster:
    def __init__(self, client: KubeClient, settings: OperatorSettings) -> None:
        self.client = client
        self.discovery = Discovery(client)
        self.hub = WatchHub(client, settings.watching)

    @classmethod
    async def connect(cls, login: Login | Any, settings: OperatorSettings) -> Cluster:
        """From an ``opd.Login`` (or None: find credentials), or a ready kubernetes_asyncio
        Configuration from a login handler."""
        return cls(await credentials.connect(login, settings.networking), settings)

    async def close(self) -> None:
        await self.hub.close()
        await self.client.close()
