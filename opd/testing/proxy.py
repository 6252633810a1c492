"""A fault-injection TCP proxy: show that an operator survives dropped and stalled connections.

The proxy relays bytes unmodified (TLS passes through) between loopback clients
and one target. It runs its own event loop in a daemon thread, so it keeps
working whatever the code under test does with its loop, and sync and async
tests drive it alike: every public method hands its work to that loop and
waits for it.

    with FaultProxy("127.0.0.1", apiserver_port) as proxy:
        ...                     # point the client at proxy.address
        proxy.reset_all()       # every open connection gets a TCP RST
        proxy.blackhole_all()   # open connections go silent; new ones work
        proxy.refuse_new(True)  # new connections are dropped at once

With ``shards=ShardEmulation(...)`` it is an HTTP proxy instead (``opd.testing.shardrelay``), that
emulates KEP-5866's sharded LIST/WATCH (Kubernetes 1.36 alpha) in front of an API server that lacks it: a request with a
``shardSelector`` (``shardRange(object.metadata.uid, '0x<start>', '0x<end>') || ...``) gets only the
objects whose 64-bit FNV-1a hash of that field falls in one of the ranges, LIST items and WATCH
events alike, and a LIST answer echoes the selector in ``metadata.shardInfo``; a selector it cannot
parse is refused (400), as the server does. TLS ends at the proxy (with the serving certificate the
clients trust, e.g. a local control plane's) and starts again to the target (verified with the
CA). What it sent and held back is counted (``proxy.sharding``). The faults above are for the
relaying mode only. Tests only: it parses every answer of a sharded request in memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar, cast

from opd.testing.shardrelay import ShardRelay
from opd.testing.shardselect import ShardEmulation, ShardStats

__all__ = ["FaultProxy", "ShardEmulation", "ShardStats"]

_T = TypeVar("_T")

# l_onoff=1, l_linger=0: close() discards unsent data and sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)
_CALL_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 10.0


def _abort(transport: asyncio.BaseTransport | None, *, rst: bool) -> None:
    if transport is None or transport.is_closing():
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    cast(asyncio.Transport, transport).abort()


class _Side(asyncio.Protocol):
    """One socket of a pair; it only reports events to the pair, which decides."""

    def __init__(self, pair: _Pair) -> None:
        self.pair = pair
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.closed = False
        self.write_paused = False  # our outgoing buffer is full: the peer must stop reading

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.pair.side_made(self, self.transport)

    def data_received(self, data: bytes) -> None:
        self.pair.relay(self, data)

    def eof_received(self) -> bool:
        return self.pair.side_eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pair.side_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.pair.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.pair.update_reading()


class _Pair:
    """A client connection and its upstream connection; lives only on the proxy's loop."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.blackholed = False
        self.connect_task: asyncio.Task[Any] | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def peer(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def side_made(self, side: _Side, transport: asyncio.Transport) -> None:
        if side is self.client:
            # Nothing may be read before there is somewhere to send it.
            transport.pause_reading()
            self.proxy._on_accept(self)
        elif self.client.closed:
            _abort(transport, rst=False)  # the client left while we were connecting
        else:
            self.update_reading()

    def update_reading(self) -> None:
        """Read from a side only while relaying and while its peer can take more data."""
        connected = self.upstream.transport is not None
        for side in (self.client, self.upstream):
            transport = side.transport
            # After EOF asyncio has already stopped reading; resuming would re-read the EOF.
            if transport is None or side.closed or side.eof or transport.is_closing():
                continue
            if connected and not self.blackholed and not self.peer(side).write_paused:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def relay(self, side: _Side, data: bytes) -> None:
        peer = self.peer(side).transport
        if not self.blackholed and peer is not None and not peer.is_closing():
            peer.write(data)

    def side_eof(self, side: _Side) -> bool:
        side.eof = True
        peer = self.peer(side).transport
        # Pass the half-close on, and keep the other direction flowing until it ends too.
        if peer is not None and not peer.is_closing() and peer.can_write_eof():
            peer.write_eof()
        if self.client.eof and self.upstream.eof:
            self.close()
        return True

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if side is self.client and self.connect_task is not None:
            self.connect_task.cancel()
        # A reset on one side is passed on as a reset; a clean close flushes the peer, then closes it.
        peer = self.peer(side).transport
        if exc is not None:
            _abort(peer, rst=True)
        elif peer is not None:
            peer.close()
        self.check_done()

    def connect_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            _abort(self.client.transport, rst=True)  # as if the target refused
        self.check_done()

    def check_done(self) -> None:
        if self.done.done() or not self.client.closed:
            return
        if self.connect_task is not None and not self.connect_task.done():
            return
        if self.upstream.transport is not None and not self.upstream.closed:
            return
        self.done.set_result(None)
        self.proxy._pairs.discard(self)

    def close(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()

    def abort(self, *, rst: bool) -> None:
        if self.connect_task is not None:
            self.connect_task.cancel()
        _abort(self.client.transport, rst=rst)
        _abort(self.upstream.transport, rst=rst)


class FaultProxy:
    """A loopback TCP proxy to ``target_host:target_port`` that can reset, stall or refuse connections.

    ``start()``/``stop()`` or a ``with`` block. Public methods are thread-safe and
    block until the proxy's loop has done the work, so they must not be called
    from that loop (they raise RuntimeError there instead of deadlocking).
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1", *,
                 shards: ShardEmulation | None = None) -> None:
        try:
            ip = ipaddress.ip_address(listen_host)
        except ValueError:
            raise ValueError(f"listen_host must be a loopback IP address, not {listen_host!r}") from None
        if not ip.is_loopback:
            raise ValueError(f"listen_host must be loopback (127.0.0.0/8 or ::1), not {listen_host!r}")
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._lock = threading.Lock()  # serialises start() and stop()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._port: int | None = None
        self._accepted = 0
        self._refusing = False
        self.shards = shards
        self.sharding = ShardStats()
        self._relay: ShardRelay | None = None

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on a free port and relay in a daemon thread; a no-op while running."""
        with self._lock:
            if self._thread is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._serve, args=(loop,), name="opd-fault-proxy", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                asyncio.run_coroutine_threadsafe(self._listen(), loop).result(_CALL_TIMEOUT)
            except BaseException:
                self._halt(loop, thread)
                raise

    def stop(self, timeout: float = _CALL_TIMEOUT) -> None:
        """Close the listener and every connection, stop the thread; idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._check_not_on_loop()
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            except (concurrent.futures.TimeoutError, OSError):
                pass  # stop the loop anyway: its cleanup closes what is left
            finally:
                self._halt(loop, thread, timeout)

    def _halt(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout: float = 5.0) -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = self._server = None
        self._port = None

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Whatever is still pending (a connect in flight) is cancelled, so closing the loop is quiet.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    # -- the public faults ---------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not running")
        return self._port

    @property
    def address(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Open pairs, relaying or blackholed (a snapshot: len() of a set is atomic)."""
        return len(self._pairs)

    @property
    def accepted(self) -> int:
        """Every connection accepted since the proxy was created, refused ones included."""
        return self._accepted

    def reset_all(self) -> int:
        """Abort every open pair with a TCP RST to the client; return how many. New ones still work."""
        return self._call(self._reset_all)

    def blackhole_all(self) -> int:
        """Stop relaying on every open pair, both ways, with both sockets left open; return how many.

        They stay silent until ``reset_all()`` or ``stop()``; connections made afterwards relay normally.
        """
        return self._call(self._blackhole_all)

    def refuse_new(self, flag: bool = True) -> None:
        """While on, new connections are accepted and reset at once, like an unreachable server."""

        async def set_flag() -> None:
            self._refusing = flag

        self._call(set_flag)

    # -- on the proxy's loop ------------------------------------------------------
    def _call(self, fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not running")
        self._check_not_on_loop()
        return asyncio.run_coroutine_threadsafe(fn(), loop).result(_CALL_TIMEOUT)

    def _check_not_on_loop(self) -> None:
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            raise RuntimeError("FaultProxy methods block: do not call them from the proxy's own loop")

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        if self.shards is not None:
            self._relay = ShardRelay(self.target_host, self.target_port, self.shards, self.sharding,
                                     on_request=self._count_request)
            self._port = await self._relay.start(self.listen_host)
            return
        self._server = await loop.create_server(lambda: _Pair(self).client, self.listen_host, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    def _count_request(self) -> None:
        self._accepted += 1  # the HTTP relay's requests count as the TCP relay's connections do

    def _on_accept(self, pair: _Pair) -> None:
        self._accepted += 1
        if self._refusing:
            _abort(pair.client.transport, rst=True)
            return
        self._pairs.add(pair)
        pair.connect_task = asyncio.get_running_loop().create_task(self._connect(pair))
        pair.connect_task.add_done_callback(pair.connect_done)

    async def _connect(self, pair: _Pair) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            await loop.create_connection(lambda: pair.upstream, self.target_host, self.target_port)

    async def _drop_all(self, *, rst: bool) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            pair.abort(rst=rst)
        # connection_lost arrives a loop iteration later: wait, so the caller sees the pairs gone.
        if pairs:
            await asyncio.wait([pair.done for pair in pairs], timeout=_CALL_TIMEOUT / 2)
        return len(pairs)

    async def _reset_all(self) -> int:
        return await self._drop_all(rst=True)

    async def _blackhole_all(self) -> int:
        pairs = [pair for pair in self._pairs if not pair.blackholed]
        for pair in pairs:
            pair.blackholed = True
            pair.update_reading()
        return len(pairs)

    async def _shutdown(self) -> None:
        if self._relay is not None:
            await self._relay.close()
            self._relay = None
        if self._server is not None:
            self._server.close()
        await self._drop_all(rst=False)
        if self._server is not None:
            await self._server.wait_closed()
