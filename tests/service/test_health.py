"""The daemon's health endpoint on its own: named checks over a snapshot, probes (cached, single-flight,
bounded, errors by type only), slow and malformed clients; and a probe's secret through opd start's supervisor."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loguru import logger

import opd
from opd.service import config as daemon_config
from opd.service.config import Listen
from opd.service.health import HealthServer, PluginSnapshot, Probes, ResourceCounters, Snapshot, WatchSnapshot

SECRET = "hunter2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _snapshot() -> Snapshot:
    return Snapshot(running=True, plugins={
        "good": PluginSnapshot(name="good", status="ready", ready=True),
        "broken": PluginSnapshot(name="broken", status="starting", ready=False,
                                 failure="unknown resource widgets.example.com"),
    }, watchers=[WatchSnapshot(resource="kopfexamples.v1.kopf.dev", namespace="ns", selector=None, listed=True,
                               healthy=True, error=None, stats={"events": 3})])


class Server:
    def __init__(self, server: HealthServer) -> None:
        self.server = server
        self.url = f"http://{server.listen}"


@pytest.fixture
async def probed() -> AsyncIterator[tuple[Server, list[str]]]:
    """A server whose plugin 'good' has a probe that counts its runs (slowly) and leaks a secret if it can."""
    calls: list[str] = []

    async def probe(name: str) -> Mapping[str, Any]:
        calls.append(name)
        await asyncio.sleep(0.3)
        return {"calls": len(calls)}

    server = HealthServer(Listen("127.0.0.1", _free_port()), _snapshot, probe=probe, probe_ttl=1.0)
    await server.start()
    try:
        yield Server(server), calls
    finally:
        await server.stop()


async def test_checks_decide_the_status_and_a_failed_plugin_is_detail(probed: tuple[Server, list[str]]) -> None:
    server, _ = probed
    verdicts: dict[str, Any] = {"ok": None}
    server.server.add_check("healthz", "supervisor", lambda: verdicts["ok"])
    server.server.add_check("readyz", "plugins", lambda: None)
    with pytest.raises(ValueError, match="already"):
        server.server.add_check("healthz", "supervisor", lambda: None)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            body = await response.json()
            assert response.status == 200  # the broken plugin is shown, not fatal
            assert body["checks"] == {"supervisor": "ok"}
            assert body["plugins"]["broken"]["failed"] == "unknown resource widgets.example.com"
        verdicts["ok"] = "stopping"
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 503
            assert (await response.json())["checks"] == {"supervisor": "failed: stopping"}
        async with http.get(f"{server.url}/healthz/supervisor") as response:
            assert response.status == 503
            assert await response.text() == "failed: stopping\n"
        verdicts["ok"] = RuntimeError("loop gone")  # an error returned counts as failing, like one raised
        async with http.get(f"{server.url}/healthz/supervisor") as response:
            assert (response.status, await response.text()) == (503, "failed: loop gone\n")
        async with http.get(f"{server.url}/readyz/plugins") as response:
            assert (response.status, await response.text()) == (200, "ok\n")
        async with http.get(f"{server.url}/readyz/nothing") as response:
            assert response.status == 404
        async with http.get(f"{server.url}/readyz") as response:
            body = await response.json()
            assert response.status == 200
            assert body["plugins"]["good"]["probes"] == {"calls": 1}
            assert "probes" not in body["plugins"]["broken"]  # not ready: not probed
            assert body["watchers"][0]["resource"] == "kopfexamples.v1.kopf.dev"


async def test_probes_are_cached_and_shared_by_concurrent_requests(probed: tuple[Server, list[str]]) -> None:
    server, calls = probed
    async with aiohttp.ClientSession() as http:

        async def probes() -> Any:
            async with http.get(f"{server.url}/readyz") as response:
                return (await response.json())["plugins"]["good"]["probes"]

        first = await asyncio.gather(*(probes() for _ in range(5)))
        assert first == [{"calls": 1}] * 5 and calls == ["good"]  # five requests, one run
        assert await probes() == {"calls": 1}  # within the TTL: cached
        await asyncio.sleep(1.1)
        assert await probes() == {"calls": 2}


async def test_a_probe_that_hangs_or_leaks_a_secret() -> None:
    async def probe(name: str) -> Mapping[str, Any]:
        if name == "hangs":
            await asyncio.sleep(60)
        raise ConnectionError(f"cannot reach postgres://opd:{SECRET}@db:5432/opd")

    probes = Probes(probe, ttl=10, timeout=0.3)
    started = time.monotonic()
    assert await probes.get("hangs") == {"error": "TimeoutError"}
    assert time.monotonic() - started < 2
    assert await probes.get("leaks") == {"error": "ConnectionError"}
    await probes.close()


async def test_a_half_sent_request_is_closed_within_the_header_timeout() -> None:
    server = HealthServer(Listen("127.0.0.1", _free_port()), _snapshot, header_timeout=1.0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.listen.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        await writer.drain()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed, nothing answered
        assert time.monotonic() - started < 4
        writer.close()
        # A whole request is still answered.
        async with aiohttp.ClientSession() as http, http.get(f"http://{server.listen}/healthz") as response:
            assert response.status == 200
    finally:
        await server.stop()


async def test_a_malformed_request_is_a_debug_line() -> None:
    records: list[tuple[str, str]] = []
    sink = logger.add(lambda m: records.append((m.record["level"].name, str(m))), level="DEBUG")
    server = HealthServer(Listen("127.0.0.1", _free_port()), _snapshot)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.listen.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nthis is no header\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        writer.close()
    finally:
        await server.stop()
        logger.remove(sink)
    malformed = [(level, text) for level, text in records if "malformed request" in text]
    assert malformed and all(level == "DEBUG" for level, _ in malformed), records
    assert not [r for r in records if r[0] in ("WARNING", "ERROR")], records
    assert not any("Traceback" in text for _, text in records)


# -- through the supervisor, against the apiserver ------------------------------------------------------------


class LeakyProbe:
    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.probe(registry=registry, id="database")
        def database(**_: Any) -> None:
            raise ValueError(f"cannot connect to postgres://opd:{SECRET}@db:5432/opd")

        @opd.on.probe(registry=registry, id="answer")
        def answer(**_: Any) -> int:
            return 42

        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(**_: Any) -> None:
            pass


leaky = LeakyProbe()


async def test_readyz_shows_a_failing_probe_by_its_type_only(
        tmp_path: Path, kubeconfig: Path, namespace: str, crd: str) -> None:
    from importlib import metadata

    from helpers.operators import eventually

    from opd.service.supervisor import Supervisor

    port = _free_port()
    path = tmp_path / "opd.toml"
    path.write_text(f'[opd]\nnamespaces = ["{namespace}"]\nshutdown_timeout = 3\nlisten = "127.0.0.1:{port}"\n'
                    f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n')
    eps = [metadata.EntryPoint("leaky", f"{__name__}:leaky", "opd.plugins")]
    supervisor = Supervisor(daemon_config.load(path), env={}, entry_points=eps)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        await eventually(lambda: supervisor.ready(), timeout=30)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
            text = await response.text()
        assert response.status == 200, text
        assert SECRET not in text
        body = await response.json()
        assert body["plugins"]["leaky"]["probes"] == {"database": {"error": "ValueError"}, "answer": 42}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def test_status_says_the_backlog_while_a_plugin_has_listed_objects_left_to_feed() -> None:
    def kex(fed: int, listed: int, depth: int) -> dict[str, ResourceCounters]:
        return {"kopfexamples.v1.kopf.dev": ResourceCounters(queue={"depth": depth}, backlog=(fed, listed))}

    behind = Snapshot(running=True, plugins={
        "a": PluginSnapshot(name="a", status="ready", ready=True, resources=kex(500, 2000, 1000)),
        "b": PluginSnapshot(name="b", status="ready", ready=True, resources=kex(2000, 2000, 10)),
        "off": PluginSnapshot(name="off", status="disabled", ready=False, resources=kex(0, 99, 0)),
    })
    assert behind.settled and behind.summary() == "2 of 2 plugin(s) ready"
    assert behind.status() == ("2 of 2 plugin(s) ready; backlog: 2500 of 4000 listed objects fed to the handlers, "
                               "1010 queued (1 plugin(s) behind)")
    assert behind.plugins["a"].to_dict()["backlog"] == {"listed": 2000, "fed": 500, "queued": 1000}
    caught_up = Snapshot(running=True, plugins={
        "a": PluginSnapshot(name="a", status="ready", ready=True, resources=kex(2000, 2000, 3))})
    assert caught_up.status() == caught_up.summary() == "1 of 1 plugin(s) ready"
