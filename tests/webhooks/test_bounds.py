"""Hostile requests to a running `opd run`'s webhook server over TLS: bodies bounded in size
(compressed ones refused), in time (a trickling client is cut), in shape (every malformed review
a 400 in one line); connections capped; a handler's failure said to the requester in one line;
the process's memory measured around the largest bodies, with a small request answered meanwhile."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers.crds import ensure_crd, make_api
from helpers.webhook_process import CRD, OpdRun

MIB = 1024 * 1024
MAX_CONNECTIONS = 16  # the process's cap, small enough to reach in a test


@pytest.fixture(scope="module")
def opd_run(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpdRun]:
    async def crd() -> None:
        async with await make_api(kubeconfig) as api:
            await ensure_crd(api, CRD)

    asyncio.run(crd())
    proc = OpdRun(tmp_path_factory.mktemp("opd-run"), kubeconfig, "default",
                  WH_MAX_CONNECTIONS=str(MAX_CONNECTIONS))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def review(request: Any, kind: str = "AdmissionReview") -> dict[str, Any]:
    api = "admission.k8s.io/v1" if kind == "AdmissionReview" else "apiextensions.k8s.io/v1"
    return {"apiVersion": api, "kind": kind, "request": request}


def configmap_review(data: dict[str, str]) -> dict[str, Any]:
    return review({"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                   "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                   "operation": "CREATE", "namespace": "default", "name": "c",
                   "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}})


async def post(http: aiohttp.ClientSession, proc: OpdRun, path: str, body: bytes | Any,
               **headers: str) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(proc.url + path, data=data, ssl=proc.ssl,
                         headers={"Content-Type": "application/json", **headers}) as response:
        return response.status, await response.text()


def clean_log(proc: OpdRun) -> None:
    """No traceback and no line at level ERROR in the process's log."""
    out = proc.output()
    assert "Traceback" not in out and not re.search(r"^\S+ \S+ +ERROR ", out, re.M), out[-4000:]


MALFORMED: list[tuple[str, bytes | Any]] = [
    ("validate/check", {"request": {"uid": "1", "resource": "x"}}),  # a 500 and a traceback before
    ("validate/check", {"kind": "AdmissionReview", "request": {"uid": "1", "resource": "x"}}),
    ("validate/check", review({"uid": "1", "resource": {"resource": "configmaps"}, "operation": "CREATE"})),
    ("validate/check", review({"uid": 1, "resource": {"resource": "configmaps"}, "operation": "CREATE",
                               "object": {}})),
    ("validate/check", review({"uid": "1", "resource": ["configmaps"], "operation": "CREATE", "object": {}})),
    ("validate/check", review({"uid": "1", "resource": {"resource": "configmaps"}, "operation": "CREATE",
                               "object": {"metadata": ["name", "x"]}})),
    ("validate/check", review({"uid": "1", "resource": {"resource": "configmaps"}, "operation": "CREATE",
                               "object": {"metadata": {"labels": {"a": 1}}}})),
    ("validate/check", review({"uid": "1", "resource": {"resource": "configmaps"}, "operation": ["CREATE"],
                               "object": {}})),
    ("validate/check", review({"uid": "1", "resource": {"resource": "configmaps"}, "operation": "CREATE",
                               "object": {}, "userInfo": "root"})),
    ("validate/check", review({"uid": "1", "resource": {"resource": "configmaps"}, "operation": "CREATE",
                               "object": {}, "dryRun": "yes"})),
    ("validate/check", review([])),
    ("validate/check", []),
    ("validate/check", b"\xff\xfe{}"),  # not UTF-8
    ("validate/check", b'{"request": "\\ud800"}'),  # a lone surrogate
    ("validate/check", b"[" * 5000 + b"]" * 5000),  # deeper than any parser's stack
    ("validate/check", json.dumps(review({"uid": "1", "x": json.loads("[" * 500 + "]" * 500)})).encode()),
    ("validate/check", b'{"a": 1e999}'),
    ("validate/check", b""),
    ("convert/bolts.fuzz.opd.dev", review({"uid": "1"}, "ConversionReview")),
    ("convert/bolts.fuzz.opd.dev", review({"uid": "1", "desiredAPIVersion": "fuzz.opd.dev/v2",
                                            "objects": {"a": 1}}, "ConversionReview")),
    ("convert/bolts.fuzz.opd.dev", review({"uid": "1", "desiredAPIVersion": "fuzz.opd.dev/v2",
                                            "objects": [1, "x"]}, "ConversionReview")),
    ("convert/bolts.fuzz.opd.dev", review({"uid": "1", "desiredAPIVersion": "fuzz.opd.dev/v2",
                                            "objects": [{"apiVersion": 2}]}, "ConversionReview")),
    ("convert/bolts.fuzz.opd.dev", review({"uid": "1", "desiredAPIVersion": ["v2"], "objects": []},
                                          "ConversionReview")),
    ("convert/bolts.fuzz.opd.dev", review({"uid": "1", "desiredAPIVersion": "fuzz.opd.dev/v2",
                                            "objects": [{"apiVersion": "fuzz.opd.dev/v1", "metadata": "m"}]},
                                          "ConversionReview")),
    ("validate/check", review({"uid": "1", "desiredAPIVersion": "v2"}, "ConversionReview")),
]


async def test_every_malformed_review_is_a_400_in_one_line(opd_run: OpdRun, http: aiohttp.ClientSession) -> None:
    for path, body in MALFORMED:
        status, text = await post(http, opd_run, f"/{path}", body)
        assert status == 400, (path, body if isinstance(body, bytes) else json.dumps(body)[:200], status, text)
        assert text.count("\n") == 1 and text.endswith("\n") and len(text) < 400, text
    clean_log(opd_run)


async def test_a_handlers_failure_reaches_the_requester_in_one_line(opd_run: OpdRun,
                                                                    http: aiohttp.ClientSession) -> None:
    status, text = await post(http, opd_run, "/validate/check", configmap_review({"api-error": "1"}))
    assert status == 200, text
    outcome = json.loads(text)["response"]
    assert outcome["allowed"] is False and outcome["uid"] == "u-1"
    message = outcome["status"]["message"]
    # The API server's own words, not the exception's text: that one carries the response's headers.
    assert message.startswith("(404) Not Found: namespaces \"no-such-namespace-opd\" not found"), message
    assert "HTTP response headers" not in message and "Audit-Id" not in message and "\n" not in message
    status, text = await post(http, opd_run, "/validate/check", configmap_review({"crash": "1"}))
    assert status == 200 and json.loads(text)["response"]["status"] == {
        "code": 500, "message": "boom a second line"}
    status, text = await post(http, opd_run, "/validate/check", configmap_review({"refuse": "1"}))
    assert json.loads(text)["response"]["status"] == {"code": 422, "message": "refused by the test"}
    forged = configmap_review({"refuse": "1"})
    forged["request"]["name"] = "c\n2026-12-05 00:00:00.000 ERROR    opd: forged"  # a name is the requester's
    status, text = await post(http, opd_run, "/validate/check", forged)
    assert status == 200 and json.loads(text)["response"]["allowed"] is False
    await asyncio.sleep(0.5)
    assert "\n2026-12-05 00:00:00.000 ERROR" not in opd_run.output()
    status, text = await post(http, opd_run, "/validate/check", configmap_review({}))
    assert status == 200 and json.loads(text)["response"]["allowed"] is True


async def test_large_and_compressed_bodies_are_refused_with_memory_bounded(opd_run: OpdRun,
                                                                           http: aiohttp.ClientSession) -> None:
    small = configmap_review({})
    # Warm up what the first requests allocate (TLS, the handler's imports), then measure.
    for _ in range(3):
        assert (await post(http, opd_run, "/validate/check", small))[0] == 200
    before = opd_run.rss()

    padding = "0" * (30 * MIB)
    bomb = gzip.compress(json.dumps(configmap_review({"pad": padding})).encode(), 9)
    assert len(bomb) < 40 * 1024  # ~30 KiB that expand to 30 MiB
    bomb_status, bomb_text = await post(http, opd_run, "/validate/check", bomb, **{"Content-Encoding": "gzip"})
    after_bomb = opd_run.rss()

    big = json.dumps(configmap_review({"pad": "0" * (32 * MIB)})).encode()
    big_status, big_text = await post(http, opd_run, "/validate/check", big)  # with its Content-Length

    async def streamed() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse it by
        for start in range(0, len(big), MIB):
            yield big[start:start + MIB]
            await asyncio.sleep(0.05)

    async def chunked() -> int:
        try:
            async with http.post(opd_run.url + "/validate/check", data=streamed(), ssl=opd_run.ssl) as response:
                return response.status
        except aiohttp.ClientError:  # refused and closed while it was still sending
            return -1

    async def small_meanwhile() -> int:
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as other:
            return (await post(other, opd_run, "/validate/check", small))[0]

    chunked_status, small_status = await asyncio.gather(chunked(), small_meanwhile())
    just_under = json.dumps(configmap_review({"pad": "0" * (3 * MIB)})).encode()  # a body the API server may send
    under_status, under_text = await post(http, opd_run, "/validate/check", just_under)
    after = opd_run.rss()
    print(f"\nopd run RSS: {before / MIB:.1f} MiB before; +{(after_bomb - before) / MIB:.1f} MiB after a "
          f"{len(bomb) / 1024:.1f} KiB gzip bomb (30 MiB expanded); +{(after - before) / MIB:.1f} MiB after it, "
          f"a 32 MiB body (Content-Length), a 32 MiB chunked body and a 3 MiB review")
    assert after - before < 64 * MIB, (before, after)
    assert bomb_status == 415 and "uncompressed" in bomb_text, (bomb_status, bomb_text)
    assert big_status == 413 and "the limit is 4194304" in big_text, (big_status, big_text)
    assert chunked_status in (413, -1) and small_status == 200
    assert under_status == 200 and json.loads(under_text)["response"]["allowed"] is True
    clean_log(opd_run)


async def _open(proc: OpdRun) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proc.port, ssl=proc.ssl, server_hostname="127.0.0.1")


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closed the connection within ``within`` seconds (anything it says is read)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


async def test_a_trickling_client_is_cut_within_30_seconds(opd_run: OpdRun) -> None:
    async def trickle(head: bytes, drip: bytes) -> float:
        reader, writer = await _open(opd_run)
        started = time.monotonic()
        writer.write(head)

        async def drop() -> None:
            while True:
                await asyncio.sleep(1.0)
                writer.write(drip)
                await writer.drain()

        dripping = asyncio.create_task(drop())
        try:
            closed = await _closed(reader, 40)
        finally:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
            writer.close()
        assert closed, "still connected after 40 s"
        return time.monotonic() - started

    async def no_handshake() -> float:  # TCP only: it never starts TLS
        reader, writer = await asyncio.open_connection("127.0.0.1", opd_run.port)
        started = time.monotonic()
        try:
            assert await _closed(reader, 40), "still connected after 40 s"
        finally:
            writer.close()
        return time.monotonic() - started

    body = (b"POST /validate/check HTTP/1.1\r\nHost: opd\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{")
    headers = b"POST /validate/check HTTP/1.1\r\nHost: opd\r\n"
    cut_body, cut_headers, cut_tls = await asyncio.gather(trickle(body, b" "), trickle(headers, b"X-Drip: 1\r\n"),
                                                          no_handshake())
    print(f"\ntrickling clients cut after {cut_body:.1f} s (body), {cut_headers:.1f} s (headers), "
          f"{cut_tls:.1f} s (no TLS handshake)")
    assert cut_body < 30 and cut_headers < 30 and cut_tls < 30


def _request(body: Any) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /validate/check HTTP/1.1\r\nHost: opd\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data))


async def test_connections_beyond_the_cap_wait_their_turn_and_beyond_that_are_closed(opd_run: OpdRun) -> None:
    served = [await _open(opd_run) for _ in range(MAX_CONNECTIONS)]
    waiting = [await _open(opd_run) for _ in range(MAX_CONNECTIONS)]
    try:
        first_reader, first_writer = waiting[0]
        first_writer.write(_request(configmap_review({})))
        with pytest.raises(TimeoutError):  # queued, unread: no answer yet
            async with asyncio.timeout(1.0):
                await first_reader.read(1)
        reader, writer = await _open(opd_run)  # its TLS handshake completes; then it is closed
        try:
            assert await _closed(reader, 5), "a connection beyond the cap and the queue stayed open"
        finally:
            writer.close()
        served[0][1].close()  # one ends: the first waiting one is served
        async with asyncio.timeout(5):
            assert (await first_reader.readline()).startswith(b"HTTP/1.1 200")
    finally:
        for _, w in served + waiting:
            w.close()
    assert "connections served and 16 waiting; one more closed" in opd_run.output()


async def test_a_client_gone_mid_body_or_with_a_broken_chunk_leaves_no_traceback(opd_run: OpdRun,
                                                                                 http: aiohttp.ClientSession) -> None:
    gone = b"Content-Length: 1000\r\n\r\n{\"request\":"
    broken = b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"req\r\nzz\r\n"
    for head in (gone, broken):
        _, writer = await _open(opd_run)
        writer.write(b"POST /validate/check HTTP/1.1\r\nHost: opd\r\nContent-Type: application/json\r\n" + head)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
    await asyncio.sleep(1.0)
    assert (await post(http, opd_run, "/validate/check", configmap_review({})))[0] == 200
    clean_log(opd_run)


async def test_clients_announcing_large_bodies_they_never_send_do_not_hold_up_small_reviews(
        opd_run: OpdRun, http: aiohttp.ClientSession) -> None:
    liars = []
    for _ in range(5):  # 5 x 4 MiB announced: more than all the bodies the server holds at once
        _, writer = await _open(opd_run)
        writer.write(b"POST /validate/check HTTP/1.1\r\nHost: opd\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 4194304\r\n\r\n{")
        await writer.drain()
        liars.append(writer)
    try:
        await asyncio.sleep(0.5)
        async with asyncio.timeout(8):  # well before the liars' 10 s are up
            status, text = await post(http, opd_run, "/validate/check", configmap_review({}))
        assert status == 200 and json.loads(text)["response"]["allowed"] is True
    finally:
        for writer in liars:
            writer.close()


async def test_a_client_that_asks_before_sending_is_refused_or_invited(opd_run: OpdRun) -> None:
    """Expect: 100-continue (curl's way with large bodies): an oversize body is refused before it is sent."""
    body = json.dumps(configmap_review({})).encode()
    for length, first in ((5 * MIB, b"HTTP/1.1 413"), (len(body), b"HTTP/1.1 100 Continue")):
        reader, writer = await _open(opd_run)
        try:
            writer.write(b"POST /validate/check HTTP/1.1\r\nHost: opd\r\nContent-Type: application/json\r\n"
                         b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length)
            async with asyncio.timeout(5):
                assert (await reader.readline()).startswith(first)
            if length == len(body):
                writer.write(body)
                async with asyncio.timeout(5):
                    while (await reader.readline()).strip():
                        pass  # the rest of the 100 Continue
                    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
