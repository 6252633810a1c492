"""Kubernetes Events about objects: handler outcomes, and ``opd.info/warn/exception``.

Posting never blocks processing: events go to a queue that one task drains,
folding identical events (same object, type, reason, message) into one with a
count. A failure to post is logged at debug level and dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import socket
import sys
from collections.abc import Mapping
from typing import Any

from loguru import logger

from opd.kube.api import REQUEST_ERRORS, KubeClient
from opd.settings import PostingSettings

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_Key = tuple[str, str, str, str]  # uid, type, reason, message


class EventPoster:
    def __init__(self, client: KubeClient, settings: PostingSettings) -> None:
        self.client = client
        self.settings = settings
        self._pending: dict[_Key, tuple[dict[str, Any], int, str]] = {}
        self._wake = asyncio.Event()
        self._instance = socket.gethostname()
        self.posted = 0

    def post(self, body: Mapping[str, Any], type: str, reason: str, message: str, *, level: str = "info") -> None:
        if not self.settings.enabled or _LEVELS.get(level, 20) < _LEVELS.get(self.settings.level, 20):
            return
        meta = body.get("metadata") or {}
        ref = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta.get("name"),
               "namespace": meta.get("namespace"), "uid": meta.get("uid")}
        key = (str(meta.get("uid")), type, reason, message)
        _, count, first = self._pending.get(key, (ref, 0, _now()))
        self._pending[key] = (ref, count + 1, first)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.settings.batch_window)  # fold bursts into one event each
            batch, self._pending = self._pending, {}
            for (_, type, reason, message), (ref, count, first) in batch.items():
                await self._send(ref, type, reason, message, count, first)

    async def _send(self, ref: dict[str, Any], type: str, reason: str, message: str, count: int,
                    first: str) -> None:
        namespace = ref.get("namespace") or "default"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{ref.get('name') or 'object'}.", "namespace": namespace},
            "involvedObject": ref, "type": type, "reason": reason[:128], "message": _clip(message, MAX_MESSAGE),
            "source": {"component": "opd"}, "reportingComponent": "opd", "reportingInstance": self._instance,
            "firstTimestamp": first, "lastTimestamp": _now(), "count": count,
        }
        try:
            await self.client.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
            self.posted += 1
        except REQUEST_ERRORS as exc:
            logger.debug(f"opd: posting an event for {namespace}/{ref.get('name')} failed: {exc}")


MAX_MESSAGE = 1024  # bytes of an Event's message: it is read by people, and stored in etcd


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut at a character boundary, marked as cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode(errors="ignore") + "…"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


current_poster: contextvars.ContextVar[EventPoster | None] = contextvars.ContextVar("opd_poster", default=None)


def _post(body: Mapping[str, Any], type: str, reason: str, message: str, level: str) -> None:
    poster = current_poster.get()
    if poster is None:
        logger.warning("opd: opd.info/warn/exception called outside a running operator; event not posted")
        return
    poster.post(body, type, reason, message, level=level)


def info(body: Mapping[str, Any], *, reason: str, message: str) -> None:
    """Post a Normal event about the object, from a handler."""
    _post(body, "Normal", reason, message, "info")


def warn(body: Mapping[str, Any], *, reason: str, message: str) -> None:
    """Post a Warning event about the object, from a handler."""
    _post(body, "Warning", reason, message, "warning")


def exception(body: Mapping[str, Any], *, reason: str, message: str = "", exc: BaseException | None = None) -> None:
    """Post a Warning event with the exception being handled (or ``exc``)."""
    error = exc if exc is not None else sys.exc_info()[1]
    text = f"{message} {type(error).__name__}: {error}".strip() if error is not None else message
    _post(body, "Warning", reason, text, "error")
