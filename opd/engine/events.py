"""Kubernetes Events about objects: handler outcomes, and ``opd.event/info/warn/exception``.

Posting never blocks processing: events go to a queue that one task drains,
folding identical events (same object, type, reason, message) into one with a
count. A failure to post is logged at debug level and dropped. An Event is a write
like any other: a replica that may no longer write to its object (``Ownership``)
does not send it, checked when it leaves, with a request timeout ending at the fence.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import math
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from loguru import logger

from opd.engine.ownership import EVERYTHING, Fenced, Ownership
from opd.kube.api import REQUEST_ERRORS, KubeClient
from opd.settings import PostingSettings

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _threshold(level: str | int) -> int:
    """A level's name, or a number as Kopf users set it (``logging.WARNING``)."""
    return level if isinstance(level, int) else _LEVELS.get(str(level).lower(), 20)
_Key = tuple[str, str, str, str]  # uid, type, reason, message


class EventPoster:
    def __init__(self, client: KubeClient, settings: PostingSettings, *, ownership: Ownership = EVERYTHING) -> None:
        self.client = client
        self.settings = settings
        self.ownership = ownership
        self._pending: dict[_Key, tuple[dict[str, Any], int, str]] = {}
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()  # sync handlers post from their threads: handed over to it
        self._lock = threading.Lock()
        self._instance = socket.gethostname()
        self.posted = 0

    def post(self, body: Any, type: str, reason: str, message: str, *, level: str = "info") -> None:
        """Queue an event about ``body``: a dict, or an object of kubernetes' or kubernetes_asyncio's
        models (anything with ``metadata``). Safe from any thread."""
        if not self.settings.enabled or _LEVELS.get(level, 20) < _threshold(self.settings.level):
            return
        ref = reference(body)
        key = (str(ref.get("uid")), type, reason, message)
        with self._lock:
            _, count, first = self._pending.get(key, (ref, 0, _now()))
            self._pending[key] = (ref, count + 1, first)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.settings.batch_window)  # fold bursts into one event each
            with self._lock:
                batch, self._pending = self._pending, {}
            for (_, type, reason, message), (ref, count, first) in batch.items():
                await self._send(ref, type, reason, message, count, first)

    async def _send(self, ref: dict[str, Any], type: str, reason: str, message: str, count: int,
                    first: str) -> None:
        namespace = ref.get("namespace") or "default"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": self.settings.event_name_prefix or f"{ref.get('name') or 'object'}.",
                         "namespace": namespace},
            "involvedObject": ref, "type": type, "reason": reason[:128], "message": _clip(message, MAX_MESSAGE),
            "source": {"component": self.settings.reporting_component},
            "reportingComponent": self.settings.reporting_component,
            "reportingInstance": self.settings.reporting_instance or self._instance,
            "firstTimestamp": first, "lastTimestamp": _now(), "count": count,
        }
        uid = str(ref.get("uid") or "")
        left = self.ownership.time_left(uid) if uid else math.inf
        if not left > 0:
            logger.debug(f"opd: an event for {namespace}/{ref.get('name')} not posted: no longer this replica's")
            return
        try:
            fenced = math.isfinite(left)
            await self.client.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event,
                                      timeout=min(left, self.client.settings.request_timeout) if fenced else None,
                                      fenced=fenced)
            self.posted += 1
        except Fenced as exc:
            logger.debug(f"opd: an event for {namespace}/{ref.get('name')}: {exc}")
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


def _get(obj: Any, key: str, attr: str) -> Any:
    """A field of a dict (by its API name) or of a client's model object (by its attribute name)."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, attr, None)


def reference(body: Any) -> dict[str, Any]:
    """The ``involvedObject`` of an event about ``body`` (a dict or a kubernetes/kubernetes_asyncio model)."""
    meta = _get(body, "metadata", "metadata") or {}
    return {"apiVersion": _get(body, "apiVersion", "api_version"), "kind": _get(body, "kind", "kind"),
            "name": _get(meta, "name", "name"), "namespace": _get(meta, "namespace", "namespace"),
            "uid": _get(meta, "uid", "uid")}


current_poster: contextvars.ContextVar[EventPoster | None] = contextvars.ContextVar("opd_poster", default=None)

# One object (a dict or a client's model), or several (Kopf's ``objs``: a list of children).
Objects = Any


def _post(objs: Objects, type: str, reason: str, message: str, level: str) -> None:
    many = isinstance(objs, list | tuple)
    if many and not objs:
        return
    poster = current_poster.get()
    if poster is None:
        logger.warning("opd: opd.event/info/warn/exception called outside a running operator; event not posted")
        return
    for body in objs if many else [objs]:
        poster.post(body, type, reason, message, level=level)


def event(objs: Objects, *, type: str, reason: str, message: str = "") -> None:
    """Post an event of any ``type`` about one object or each of a list (e.g. the children a handler
    made), from a handler. The API server keeps a type other than Normal or Warning as given."""
    _post(objs, type, reason, message, "warning" if type.lower() != "normal" else "info")


def info(objs: Objects, *, reason: str, message: str = "") -> None:
    """Post a Normal event about the object (or each of a list), from a handler."""
    _post(objs, "Normal", reason, message, "info")


def warn(objs: Objects, *, reason: str, message: str = "") -> None:
    """Post a Warning event about the object (or each of a list), from a handler."""
    _post(objs, "Warning", reason, message, "warning")


def exception(objs: Objects, *, reason: str, message: str = "", exc: BaseException | None = None) -> None:
    """Post a Warning event with the exception being handled (or ``exc``)."""
    error = exc if exc is not None else sys.exc_info()[1]
    text = f"{message} {type(error).__name__}: {error}".strip() if error is not None else message
    _post(objs, "Warning", reason, text, "error")
