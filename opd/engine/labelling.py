"""The shard label, written once on each object that lacks it (opd.ha's label filtering).

One replica of a group, the labeller, has its operations watch each resource's objects without
the label (``<handlers' selector>,<prefix>/shards notin (S)``: only objects its handlers select,
unlabelled or labelled for another shard count S) and write it with the count beside it
(``<prefix>/shards: "S"``): one merge patch per object, ``metadata.uid`` in it so that a patch never lands on a
newer object of the same name (the server refuses a changed uid). An object labelled leaves
that stream, and enters the stream of the replica that holds its shard. The value comes from
the ownership (the object's shard), so two labellers for a moment write the same thing.

What waits to be labelled is bounded (``MAX_PENDING``): the stream's LIST pages wait for room,
as the processors' queues make them wait. A write that fails for the request's sake is tried
again after a backoff; one the server refuses for the object's sake (gone, changed uid) is
dropped, and an object that is still there comes again with its next event or relist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from loguru import logger

from opd.engine.backoff import Backoff
from opd.kube.api import REQUEST_ERRORS, APIError, KubeClient
from opd.resources import Resource

MAX_PENDING = 1000  # objects waiting for their label, at most: a LIST page waits for room
WRITERS = 4  # labels written at once


class Labeller:
    def __init__(self, client: KubeClient, label: str, value: Callable[[str], str], count_label: str,
                 count: int) -> None:
        self.client = client
        self.label = label
        self.value = value
        self.count_label, self.count = count_label, str(count)
        self._pending: dict[str, str] = {}  # uid -> the object's path, in arrival order
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.written = 0  # labels written (its extra writes per object: one, when nothing fails)
        self.failed = 0
        self._reported: str | None = None

    def deliver(self, resource: Resource) -> Callable[[str, dict[str, Any]], None]:
        """The stream's callback for one resource: objects without the label are queued."""
        def deliver(kind: str, body: dict[str, Any]) -> None:
            meta = body.get("metadata") or {}
            uid, name = meta.get("uid"), meta.get("name")
            if not isinstance(uid, str) or not isinstance(name, str):
                return
            found = meta.get("labels")
            labels: dict[str, Any] = found if isinstance(found, dict) else {}
            if kind == "DELETED" or (labels.get(self.count_label) == self.count and self.label in labels):
                self._pending.pop(uid, None)
                if len(self._pending) < MAX_PENDING:
                    self._room.set()
                return
            namespace = meta.get("namespace") if resource.namespaced else None
            self._pending[uid] = resource.path(namespace if isinstance(namespace, str) else None, name)
            self._wake.set()
            if len(self._pending) >= MAX_PENDING:
                self._room.clear()
        return deliver

    async def room(self) -> None:
        """Until fewer than MAX_PENDING objects wait (awaited between the stream's LIST pages)."""
        await self._room.wait()

    async def run(self) -> None:
        await asyncio.gather(*(self._write() for _ in range(WRITERS)))

    async def _write(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            uid = next((uid for uid in self._pending if uid not in self._busy), None)  # the oldest free
            if uid is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            path = self._pending[uid]
            self._busy.add(uid)
            try:
                await self.client.request("PATCH", path, content_type="application/merge-patch+json", body={
                    "metadata": {"uid": uid, "labels": {self.label: self.value(uid), self.count_label: self.count}}})
            except APIError as exc:
                if exc.status not in (404, 409, 422) and exc.status < 500 and exc.status != 429:
                    self._say(f"{exc.status}", f"writing label {self.label} on {path} refused: {exc}")
                if exc.status >= 500 or exc.status == 429:
                    await asyncio.sleep(exc.retry_after or backoff.next())
                    continue  # the same object again
                self.failed += 1
            except REQUEST_ERRORS as exc:
                self._say(type(exc).__name__, f"writing label {self.label} on {path} failed: {exc}; retrying")
                await asyncio.sleep(backoff.next())
                continue
            else:
                self.written += 1
                backoff.reset()
                self._reported = None
            finally:
                self._busy.discard(uid)
            if self._pending.get(uid) == path:
                del self._pending[uid]
            if len(self._pending) < MAX_PENDING:
                self._room.set()

    def _say(self, kind: str, text: str) -> None:
        """Each kind of trouble once until a label is written again."""
        if kind != self._reported:
            self._reported = kind
            logger.warning(f"opd: {text}")
