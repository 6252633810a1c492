"""The HTTP relay behind ``FaultProxy(shards=...)``: KEP-5866's sharded LIST/WATCH in front of an API
server that lacks it. TLS ends here (with the serving certificate the clients trust) and starts again
to the target (verified with the CA); a request with a ``shardSelector`` gets only the objects in its
ranges (``opd.testing.shardselect``), and a LIST answer echoes the selector in ``metadata.shardInfo``.
Runs on the proxy's own loop; tests only: it parses every answer of a sharded request in memory."""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import ClientConnectionResetError, ClientSession, ClientTimeout, TCPConnector, web
from yarl import URL

from opd.testing.shardselect import ShardEmulation, ShardStats, parse_shard_selector, selected

_CONNECT_TIMEOUT = 10.0
_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "proxy-authorization",
        "proxy-authenticate", "host", "content-length", "content-encoding", "accept-encoding"}

Ranges = list[tuple[str, int, int]]


class ShardRelay:
    """Relays HTTP requests to ``target_host:target_port``, filtering sharded ones; counts in ``stats``
    what it sent and held back, and calls ``on_request`` for every request."""

    def __init__(self, target_host: str, target_port: int, tls: ShardEmulation, stats: ShardStats, *,
                 on_request: Callable[[], None]) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.tls, self.stats, self.on_request = tls, stats, on_request
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    async def start(self, listen_host: str) -> int:
        """Listen on a free port of ``listen_host``; the port."""
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(self.tls.certfile, self.tls.keyfile)
        upstream = ssl.create_default_context(cafile=self.tls.cafile)
        self._session = ClientSession(connector=TCPConnector(ssl=upstream, limit=0), auto_decompress=True,
                                      timeout=ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, listen_host, 0, ssl_context=serving).start()
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        self.on_request()
        asked = request.query.getall("shardSelector", [])
        ranges = None
        if asked and not self.tls.honour:
            self.stats.asked[asked[0]] += 1  # an older server's part: passed on, ignored there
        elif asked:
            try:
                if len(asked) > 1:
                    raise ValueError("given more than once")
                ranges = parse_shard_selector(asked[0])
            except ValueError as exc:
                self.stats.refused += 1
                return web.json_response(status=400, data={
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400,
                    "message": f"invalid shardSelector: {exc}"})
            self.stats.asked[asked[0]] += 1
        dropped = "shardSelector" if ranges is not None else ""
        query = urllib.parse.urlencode([(k, v) for k, v in request.query.items() if k != dropped])
        path = request.raw_path.split("?", 1)[0]
        url = URL(f"https://{self.target_host}:{self.target_port}{path}" + (f"?{query}" if query else ""),
                  encoded=True)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        try:
            return await self._forward(request, url, headers, body, ranges, asked)
        except (ConnectionError, ClientConnectionResetError):  # the client left (a watch ended): nothing to say
            return web.Response(status=499)

    async def _forward(self, request: web.Request, url: URL, headers: dict[str, str], body: bytes,
                       ranges: Ranges | None, asked: list[str]) -> web.StreamResponse:
        assert self._session is not None
        async with self._session.request(request.method, url, headers=headers, data=body or None) as answer:
            out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            if ranges is not None and request.method == "GET" and answer.status == 200:
                watch = request.query.get("watch") in ("true", "1") or "/watch/" in url.path
                if not watch:
                    return self._sharded_list(await answer.read(), ranges, asked[0], out_headers)
                return await self._sharded_watch(request, answer, ranges, out_headers)
            response = web.StreamResponse(status=answer.status, headers=out_headers)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def _sharded_list(self, raw: bytes, ranges: Ranges, asked: str, headers: dict[str, str]) -> web.Response:
        page = json.loads(raw)
        items = page.get("items") or []
        kept = [item for item in items if selected(item, ranges)]
        self.stats.listed += len(kept)
        self.stats.held_back += len(items) - len(kept)
        for item in kept:
            self.stats.sent[str(item.get("metadata", {}).get("uid"))] += 1
        page["items"] = kept
        page.setdefault("metadata", {})["shardInfo"] = {"selector": asked}
        return web.Response(status=200, body=json.dumps(page).encode(), headers=headers)

    async def _sharded_watch(self, request: web.Request, answer: Any, ranges: Ranges,
                             headers: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        rest = b""
        async for chunk in answer.content.iter_any():
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") if isinstance(event, dict) else None
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    if not selected(obj, ranges):
                        self.stats.held_back += 1
                        continue
                    self.stats.events += 1
                    self.stats.sent[str((obj or {}).get("metadata", {}).get("uid"))] += 1
                await response.write(line + b"\n")
        await response.write_eof()
        return response
