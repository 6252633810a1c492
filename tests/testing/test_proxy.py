"""The fault-injection proxy: relays, resets, blackholes and refuses, against an echo server and the apiserver."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.crds import make_api
from kubernetes_asyncio import client

from opd.localcluster import LocalControlPlane
from opd.testing.proxy import FaultProxy

WAIT = 2.0  # the bound on every wait for something that should happen at once


class _EchoHandler(socketserver.BaseRequestHandler):
    server: _EchoServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        with self.server.lock:
            self.server.conns.append(sock)
        try:
            while data := sock.recv(65536):
                self.server.received.append(data)
                sock.sendall(data)
        except OSError:
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.received: list[bytes] = []


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        with server.lock:
            for conn in server.conns:  # handler threads blocked in recv() wake up and end
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        thread.join(WAIT)


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    host, port = echo.server_address[:2]
    with FaultProxy(str(host), int(port)) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def connect(proxy: FaultProxy) -> Iterator[Callable[[], socket.socket]]:
    socks: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
        socks.append(sock)
        return sock

    yield make
    for sock in socks:
        sock.close()


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def wait_for(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "opd-fault-proxy"]


def test_listen_host_must_be_loopback() -> None:
    for host in ("0.0.0.0", "10.0.0.1", "::", "localhost", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            FaultProxy("127.0.0.1", 1, listen_host=host)
    FaultProxy("127.0.0.1", 1, listen_host="127.0.0.2")
    FaultProxy("127.0.0.1", 1, listen_host="::1")


def test_relays_both_ways_with_half_close(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    sock = connect()
    assert roundtrip(sock, b"hello") == b"hello"
    assert (proxy.accepted, proxy.connections) == (1, 1)

    # More than the socket buffers hold, sent while reading: backpressure, not loss or deadlock.
    payload = bytes(range(256)) * 16384  # 4 MiB

    def send() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the EOF reaches the echo server, which then closes

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = bytearray()
    while chunk := sock.recv(1 << 20):
        got += chunk
    sender.join(WAIT)
    assert bytes(got) == payload
    assert wait_for(lambda: proxy.connections == 0)


def test_reset_all_sends_rst_and_new_connections_work(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    old = connect()
    assert roundtrip(old, b"before") == b"before"

    started = time.monotonic()
    assert proxy.reset_all() == 1
    assert proxy.connections == 0
    with pytest.raises(ConnectionResetError):
        old.recv(1)
    assert time.monotonic() - started < 1.0

    new = connect()
    assert roundtrip(new, b"after") == b"after"
    assert (proxy.accepted, proxy.connections) == (2, 1)


def test_blackhole_all_stalls_open_connections_only(
    proxy: FaultProxy, echo: _EchoServer, connect: Callable[[], socket.socket]
) -> None:
    old = connect()
    assert roundtrip(old, b"before") == b"before"
    assert proxy.blackhole_all() == 1

    old.sendall(b"lost")
    old.settimeout(1.0)
    with pytest.raises(TimeoutError):  # no data, and no EOF (b"") or RST either
        old.recv(1)
    old.setblocking(False)
    with pytest.raises(BlockingIOError):  # still open and still empty
        old.recv(1, socket.MSG_PEEK)
    old.setblocking(True)
    assert b"lost" not in b"".join(echo.received)  # the upstream direction is stalled too
    assert proxy.connections == 1

    new = connect()
    assert roundtrip(new, b"fresh") == b"fresh"
    assert proxy.connections == 2

    # reset_all() ends blackholed pairs too.
    assert proxy.reset_all() == 2
    with pytest.raises(ConnectionResetError):
        old.recv(1)


def test_refuse_new_closes_new_connections_only(
    proxy: FaultProxy, echo: _EchoServer, connect: Callable[[], socket.socket]
) -> None:
    kept = connect()
    assert roundtrip(kept, b"kept") == b"kept"

    proxy.refuse_new(True)
    # The RST may come before connect() has returned: either way, the connection is refused.
    with pytest.raises(ConnectionResetError):
        connect().recv(1)
    assert wait_for(lambda: proxy.accepted == 2)
    assert proxy.connections == 1
    assert len(echo.conns) == 1  # the target never saw it
    assert roundtrip(kept, b"still") == b"still"

    proxy.refuse_new(False)
    assert roundtrip(connect(), b"again") == b"again"


def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # bound but not listening: connecting is refused
        port = placeholder.getsockname()[1]
        with FaultProxy("127.0.0.1", port) as proxy:
            with pytest.raises(ConnectionResetError), socket.create_connection(
                ("127.0.0.1", proxy.port), timeout=WAIT
            ) as sock:
                sock.recv(1)
            assert wait_for(lambda: proxy.connections == 0)


def test_stop_closes_everything_and_ends_the_thread(echo: _EchoServer) -> None:
    host, port = echo.server_address[:2]
    proxy = FaultProxy(str(host), int(port))
    proxy.start()
    proxy.start()  # idempotent
    assert len(proxy_threads()) == 1
    listen_port = proxy.port
    sock = socket.create_connection(("127.0.0.1", listen_port), timeout=WAIT)
    assert roundtrip(sock, b"x") == b"x"
    proxy.blackhole_all()

    started = time.monotonic()
    proxy.stop()
    proxy.stop()  # idempotent
    assert time.monotonic() - started < WAIT
    assert proxy_threads() == []
    with sock:
        assert sock.recv(1) == b""  # closed, blackholed or not
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", listen_port), timeout=WAIT).close()
    with pytest.raises(RuntimeError, match="not running"):
        proxy.reset_all()
    with pytest.raises(RuntimeError, match="not running"):
        _ = proxy.port


async def test_driven_from_an_async_test(proxy: FaultProxy) -> None:
    # The proxy's own loop does the relaying, so blocking calls here cannot deadlock the test's loop.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"async")
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"async"
        proxy.reset_all()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), WAIT)
    finally:
        writer.close()


@pytest.mark.apiserver
async def test_apiserver_survives_reset_through_proxy(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    with FaultProxy("127.0.0.1", control_plane.apiserver_port) as proxy:
        # The apiserver's certificate is for 127.0.0.1, so TLS verifies through the proxy.
        kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", server=f"https://{proxy.address}")
        async with await make_api(kubeconfig) as api:
            core = client.CoreV1Api(api)
            names = {ns.metadata.name for ns in (await core.list_namespace(_request_timeout=WAIT * 5)).items}
            assert "default" in names
            assert proxy.connections >= 1  # a kept-alive connection to reset

            accepted = proxy.accepted
            assert proxy.reset_all() >= 1
            listing = await core.list_namespace(_request_timeout=WAIT * 5)
            assert "default" in {ns.metadata.name for ns in listing.items}
            assert proxy.accepted > accepted  # on a new connection
