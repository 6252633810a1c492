"""A request that waits for a pooled connection while the pool is recycled as hung (what opd does when
the API server stops answering: a restart), against the real API server.

aiohttp cancels the requests still waiting for a connection of a pool that is closed. Taken for a
cancellation, that ended the work of whoever waited, silently and without a retry: in the chaos
scenario "apiserver restarts", objects whose first write waited so were never handled (their create
handlers never ran, 7 of 203 in one run under load). It must be a connection failure, which every
caller retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from opd.kube.api import TRANSIENT_ERRORS, KubeClient
from opd.kube.credentials import Login, load_configuration
from opd.settings import NetworkingSettings


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    cfg, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
    # One request connection: a second request waits for it, as opd's writes do when the API server hangs.
    settings = NetworkingSettings(request_connections=1, read_timeout=30.0)
    async with KubeClient(cfg, settings, source=source) as kube_client:
        yield kube_client


def _connector(kube: KubeClient) -> aiohttp.BaseConnector:
    connector = kube._api.connector
    assert connector is not None
    return connector


async def _until(check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the request never queued for the connection"
        await asyncio.sleep(0.01)


async def test_a_request_waiting_for_a_recycled_pool_fails_as_a_connection_failure(
        kube: KubeClient, namespace: str) -> None:
    # The one connection held by a request that takes its time (a watch read whole, ends in 20 s).
    holder = asyncio.create_task(kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps", query={"watch": "true", "timeoutSeconds": "20"}))
    connector = _connector(kube)
    await _until(lambda: connector._acquired)
    waiter = asyncio.create_task(kube.get(f"/api/v1/namespaces/{namespace}"))
    await _until(lambda: connector._waiters)  # queued for the connection, not sent

    kube.recycle(hung=True)  # as the liveness probe does when the API server does not answer
    outcomes = await asyncio.gather(holder, waiter, return_exceptions=True)

    assert isinstance(outcomes[1], TRANSIENT_ERRORS), repr(outcomes[1])  # was: CancelledError
    assert "pool was closed" in str(outcomes[1])
    assert isinstance(outcomes[0], TRANSIENT_ERRORS), repr(outcomes[0])  # in flight: its connection closed
    # The client goes on, on its new pool.
    assert (await kube.get(f"/api/v1/namespaces/{namespace}"))["metadata"]["name"] == namespace


async def test_a_cancelled_caller_is_still_cancelled(kube: KubeClient, namespace: str) -> None:
    task = asyncio.create_task(kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps", query={"watch": "true", "timeoutSeconds": "20"}))
    connector = _connector(kube)
    await _until(lambda: connector._acquired)
    waiting = asyncio.create_task(kube.get(f"/api/v1/namespaces/{namespace}"))
    await _until(lambda: connector._waiters)
    waiting.cancel()
    task.cancel()
    outcomes = await asyncio.gather(task, waiting, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
