"""One LIST + WATCH stream per (resource, namespace), kept alive forever.

Resumes from the last resourceVersion (bookmarks keep it fresh); on 410 Gone it
relists and reports what changed while away, deletions included; on errors it
backs off (honouring Retry-After); a stream silent past the inactivity timeout
is presumed dead and resumed.

Every line and listed object passes ``shapes`` first: one that is not what the
API server sends (not JSON, nested past 1024 levels, no uid, labels that are
not a map, a line past 16 MiB) is skipped with one line (at most one a minute per
stream, with a count of the others), and the stream goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from loguru import logger

from opd.engine import shapes
from opd.engine.backoff import Backoff
from opd.engine.listing import LIST_BUFFER, Items, ListProgress, PageBuffer
from opd.kube.api import TRANSIENT_ERRORS, APIError, GoneError, InactivityTimeout, KubeClient, LineTooLong
from opd.resources import Resource
from opd.settings import WatchingSettings

# (event type, object body): ADDED, MODIFIED, DELETED.
Deliver = Callable[[str, dict[str, Any]], None]

REFUSED = frozenset({401, 403, 404})  # answers that retrying will not change by itself
MAX_SHARD_INFO = 16384  # characters of an echoed shard selector read at most (opd's own are < 4 KiB)
MAX_ERROR_TEXT = 300  # characters of an error's one line kept for status output


def echoed_shards(page: object) -> str | None:
    """KEP-5866: the shard selector a LIST's answer says was applied (``metadata.shardInfo.selector``),
    bounded in shape: anything but a string of at most MAX_SHARD_INFO characters in a map in a map
    counts as none (an older server sends none: it ignored the parameter and sent everything)."""
    meta = page.get("metadata") if isinstance(page, dict) else None
    info = meta.get("shardInfo") if isinstance(meta, dict) else None
    selector = info.get("selector") if isinstance(info, dict) else None
    return selector if isinstance(selector, str) and 0 < len(selector) <= MAX_SHARD_INFO else None


@dataclass(frozen=True)
class WatchError:
    """Why a stream last failed, as data: the error's type, the HTTP status when the API server
    answered (None for a connection's failure), and one line for people."""

    kind: str
    status: int | None
    text: str

    @property
    def refused(self) -> bool:
        """Unauthorized, forbidden or not served: retrying goes on, but only a change outside opd
        (credentials, RBAC, the CRD) ends it."""
        return self.status in REFUSED

    @classmethod
    def of(cls, exc: BaseException, text: str) -> WatchError:
        status = exc.status if isinstance(exc, APIError) else None
        line = " ".join(text.split())
        if len(line) > MAX_ERROR_TEXT:
            line = line[:MAX_ERROR_TEXT - 3] + "..."
        return cls(kind=type(exc).__name__, status=status, text=line or type(exc).__name__)


class Watcher:
    def __init__(self, client: KubeClient, resource: Resource, namespace: str | None, *,
                 settings: WatchingSettings, deliver: Deliver, label_selector: str | None = None,
                 shard_selector: str | None = None) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.settings = settings
        self.label_selector = label_selector
        # KEP-5866 (opd.ha, filtering by the server): ANDed by the server with the label selector.
        self.shard_selector = shard_selector
        self.unsharded = False  # a LIST's answer did not echo the shard selector (said once)
        self._deliver = deliver
        self.resource_version: str | None = None
        # uid -> (resourceVersion, namespace, name): enough to skip unchanged objects on a
        # relist and to report the ones deleted meanwhile, without keeping bodies.
        self._known: dict[str, tuple[str, str | None, str]] = {}
        # The first LIST: received whole (readiness), and delivered to the consumers (fed).
        self.received = asyncio.Event()
        self.received_callbacks: list[Callable[[], None]] = []
        self.listed = asyncio.Event()
        self.listed_callbacks: list[Callable[[], None]] = []
        self.progress = ListProgress()  # the first LIST's
        self.list_buffer = LIST_BUFFER  # bytes of pages received ahead of the consumers
        # Awaited between LIST pages: the consumers' queues make room before more bodies come.
        self.backlog: Callable[[], Awaitable[None]] | None = None
        self.healthy = False
        self.failure: WatchError | None = None  # the last failure, until the stream recovers
        self._last_kind: str | None = None
        self.stats = {"lists": 0, "watches": 0, "events": 0, "gone": 0, "errors": 0, "malformed": 0}
        self._unsaid = 0  # malformed events skipped since the last one said
        self._said_at: float | None = None  # when a malformed event was last said
        self._too_long_at: str | None = None  # the resourceVersion a too long line followed
        self.max_line = shapes.MAX_LINE
        # While a list is delivered: the uids the watch has reported since the list's snapshot.
        self._fresh: set[str] | None = None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.resource}{where}"

    @property
    def last_error(self) -> str | None:
        """The last failure's one line, until the stream recovers."""
        return self.failure.text if self.failure is not None else None

    @property
    def path(self) -> str:
        return self.resource.path(self.namespace)

    async def run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while True:
            try:
                if self.resource_version is None:
                    await self._list_and_watch()
                else:
                    await self._watch()
                backoff.reset()
            except GoneError:
                self.stats["gone"] += 1
                logger.info(f"opd: watch {self}: resourceVersion {self.resource_version} expired (410); relisting")
                self.resource_version = None
            except LineTooLong as exc:
                if self._too_long(exc):
                    await asyncio.sleep(backoff.next())
            except shapes.BadShape as exc:  # a LIST's answer that is no list
                await asyncio.sleep(self._failed(exc, backoff.next()))
                self.resource_version = None
            except InactivityTimeout:
                logger.debug(f"opd: watch {self}: silent for {self.settings.inactivity_timeout:.0f}s; resuming")
                # If the network dropped it, the pooled request connections died with it: start those
                # afresh too, rather than let the next writes find out one read timeout at a time.
                self.client.recycle()
            except asyncio.CancelledError:
                raise
            except APIError as exc:
                delay = self._failed(exc, backoff.next())
                await asyncio.sleep(exc.retry_after or delay)
            except TRANSIENT_ERRORS as exc:
                await asyncio.sleep(self._failed(exc, backoff.next()))
            except Exception as exc:  # a bug: log it loudly, never leave a dead watcher behind
                logger.opt(exception=exc).error(f"opd: watch {self} crashed; restarting it")
                delay = self._failed(exc, backoff.next())
                self.resource_version = None
                await asyncio.sleep(delay)

    def _too_long(self, exc: LineTooLong) -> bool:
        """Resumed from the last state delivered: lines run together (a proxy's fault) heal so. The
        same again from that same version (the server replays that event) relists instead, which
        starts past it, after a backoff (True)."""
        again = self._too_long_at == self.resource_version
        self._malformed(f"{exc} (" + ("relisting" if again else f"resuming from {self.resource_version}") + ")")
        self._too_long_at = None if again else self.resource_version
        if again:
            self.resource_version = None
        return again

    def _malformed(self, problem: str) -> None:
        """A line or object skipped: said at most once a minute per stream, with how many went unsaid."""
        self.stats["malformed"] += 1
        now = time.monotonic()
        if self._said_at is not None and now - self._said_at < 60.0:
            self._unsaid += 1
            logger.debug(f"opd: watch {self}: skipped {problem}")
            return
        more = f" ({self._unsaid} more since the last one said)" if self._unsaid else ""
        logger.warning(f"opd: watch {self}: skipped {problem}{more}")
        self._said_at, self._unsaid = now, 0

    def _failed(self, exc: BaseException, delay: float) -> float:
        self.healthy = False
        self.stats["errors"] += 1
        message = str(exc) or type(exc).__name__
        if isinstance(exc, APIError) and exc.status in (401, 403):
            message = f"not allowed ({exc.status}): {exc.message}; check the credentials and RBAC"
        elif isinstance(exc, APIError) and exc.status == 404:
            message = "not served (404): was the CRD deleted?"
            self.resource_version = None
        kind = f"{type(exc).__name__}:{getattr(exc, 'status', '')}"
        if kind != self._last_kind:  # each kind of trouble once, not at every retry
            logger.warning(f"opd: watch {self}: {message}; retrying in {delay:.1f}s")
        self._last_kind = kind
        self.failure = WatchError.of(exc, message)
        return delay

    def _query(self) -> dict[str, Any]:
        query = {"labelSelector": self.label_selector} if self.label_selector else {}
        if self.shard_selector:
            query["shardSelector"] = self.shard_selector
        return query

    @property
    def started(self) -> bool:
        """Whether it has delivered objects already: a consumer joining now has missed those."""
        return self.listed.is_set() or bool(self._known)

    async def fetch(self, token: str | None = None) -> tuple[bytes, Items, str, str | None, int | None]:
        """One page of the current objects, as received: its bytes, its items (not checked yet, see
        ``checked``), the list's resourceVersion, the next page's token, and how many objects remain
        after it when the API server says so."""
        query = {**self._query(), "limit": self.settings.list_page_size}
        if token:
            query["continue"] = token
        raw = await self.client.get_raw(self.path, **query)
        return (raw, *self.parse(raw))

    def parse(self, raw: bytes) -> tuple[Items, str, str | None, int | None]:
        """A page's bytes: its items (not checked yet), resourceVersion, continue token, remaining count."""
        try:
            page = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise shapes.BadShape(f"the list of {self} is not JSON: {exc}") from None
        listed = page.get("items") if isinstance(page, dict) else None
        meta = page.get("metadata") if isinstance(page, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        token = meta.get("continue") if isinstance(meta, dict) else None
        remaining = meta.get("remainingItemCount") if isinstance(meta, dict) else None
        if not isinstance(listed, list | None) or not isinstance(version, str) or not version \
                or not isinstance(token, str | None):
            raise shapes.BadShape(f"the list of {self} is no list (no items or resourceVersion)")
        if self.shard_selector and not self.unsharded and echoed_shards(page) != self.shard_selector:
            # Still right (every event's object is asked whether it is owned), only not divided.
            self.unsharded = True
            logger.warning(f"opd: watch {self}: the API server did not apply the shardSelector asked (no "
                           "metadata.shardInfo echoing it): it sends every object, and this replica drops "
                           "those of shards it does not hold")
        return listed or [], version, token or None, remaining if type(remaining) is int else None

    def checked(self, listed: Items, skipped: set[str] | None = None) -> Items:
        """The well-formed items of a page, as whole bodies. Malformed items are left out (said once);
        their uids, where they have one, go to ``skipped``."""
        items = []
        api_version, kind = self.resource.api_version, self.resource.kind
        for item in listed:
            try:
                shapes.check_object(item)
            except shapes.BadShape as exc:
                self._malformed(f"a listed object: {exc}")
                meta = item.get("metadata") if isinstance(item, dict) else None
                uid = meta.get("uid") if isinstance(meta, dict) else None
                if skipped is not None and isinstance(uid, str):
                    skipped.add(uid)
                continue
            # Items of a list carry no apiVersion/kind; handlers expect a whole body.
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            items.append(item)
        return items

    async def _receive(self, token: str | None, pages: PageBuffer, progress: ListProgress, started: float) -> None:
        """The LIST's pages after the first, as fast as the API server answers them (and the buffer
        holds them); then the first LIST counts as received."""
        count = 1
        while token is not None:
            raw, listed, _, token, remaining = await self.fetch(token)
            progress.page(len(listed), remaining, last=token is None)
            await pages.put(listed, raw)
            count += 1
            del raw, listed
        pages.finish()
        if not self.received.is_set():
            # Said when it took more than one page: how long a big LIST took is what readiness waited for.
            (logger.info if count > 1 else logger.debug)(
                f"opd: watch {self}: LIST received, {progress.received} object(s) in {count} page(s), "
                f"{time.monotonic() - started:.2f}s")
            self.received.set()
            for callback in self.received_callbacks:
                callback()

    async def _list_and_watch(self) -> None:
        """LIST, and WATCH from the list's snapshot as soon as its first page is in.

        The pages are received as fast as the API server answers (see ``opd.engine.listing``), then
        delivered as the consumers make room (a big backlog is throttled), which can take minutes.
        A watch started only after that would have to replay everything written meanwhile, and
        kube-apiserver drops a watcher that falls that far behind: measured here, 5 to 16 dropped
        and resumed watches in one 3000-object backlog, each stalling the server's event delivery.
        So both run at once; the list skips objects the watch already reported.
        """
        skipped: set[str] = set()  # malformed, left out, yet there: no deletion to report
        progress = self.progress if not self.listed.is_set() else ListProgress()  # the first LIST is counted
        progress.restart()
        started = time.monotonic()
        _, listed, self.resource_version, token, remaining = await self.fetch()  # every page has this version
        progress.page(len(listed), remaining, last=token is None)
        pages = PageBuffer(lambda raw: self.parse(raw)[0], self.list_buffer)
        receiving = asyncio.get_running_loop().create_task(self._receive(token, pages, progress, started))
        self._fresh = set()
        listing = asyncio.get_running_loop().create_task(
            self._deliver_list(listed, pages, self._fresh, skipped, progress))
        del listed
        watch: asyncio.Task[None] | None = None
        try:
            while not listing.done():
                watch = asyncio.get_running_loop().create_task(self._watch())
                while not (watch.done() or listing.done()):
                    await asyncio.wait({watch, listing, *([receiving] if not receiving.done() else [])},
                                       return_when=asyncio.FIRST_COMPLETED)
                    if receiving.done():
                        receiving.result()  # a page that failed fails the list, at once
                if watch.done():
                    # Ended by the server, or silent (a quiet resource under a long, throttled list):
                    # resume it while the list goes on. Any other error ends both.
                    with contextlib.suppress(InactivityTimeout):
                        watch.result()
            listing.result()
            self._fresh = None
            if watch is not None and not watch.done():
                await watch
        finally:
            self._fresh = None
            for task in (receiving, listing, watch):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(receiving, listing, *([watch] if watch else []), return_exceptions=True)
            if not listing.done() or listing.cancelled() or listing.exception() is not None:
                self.resource_version = None  # the list is incomplete: start over

    async def _deliver_list(self, listed: Items, pages: PageBuffer, fresh: set[str], skipped: set[str],
                            progress: ListProgress) -> None:
        seen: set[str] = set()
        api_version, kind = self.resource.api_version, self.resource.kind
        before = set(self._known)
        await pages.received()  # handlers at work on the first pages would slow the LIST down
        while True:
            items = self.checked(listed, skipped)
            for item in items:
                meta = item["metadata"]
                uid = meta["uid"]
                seen.add(uid)
                if uid in fresh:  # the watch has a newer state (or its deletion) already
                    continue
                old = self._known.get(uid)
                if old is None or old[0] != meta["resourceVersion"]:
                    self._deliver("ADDED" if old is None else "MODIFIED", item)
                    # Only once delivered: a consumer that raised gets it again after the restart.
                    self._known[uid] = (meta["resourceVersion"], meta.get("namespace"), meta["name"])
            progress.fed += len(listed)
            del items, listed
            if pages.exhausted:
                break
            if self.backlog is not None:
                await self.backlog()
            page = await pages.get()
            if page is None:
                break
            listed = page
        for uid in before - seen - fresh - skipped:
            _, namespace, name = self._known.pop(uid)
            self._deliver("DELETED", {
                "apiVersion": api_version, "kind": kind,
                "metadata": {"uid": uid, "name": name, "namespace": namespace},
            })
        self.stats["lists"] += 1
        self._recovered()
        if not self.listed.is_set():
            self.listed.set()
            for callback in self.listed_callbacks:
                callback()

    def _recovered(self) -> None:
        if self.failure is not None:
            logger.info(f"opd: watch {self}: recovered")
        self.healthy = True
        self.failure = None
        self._last_kind = None

    async def _watch(self) -> None:
        query = {
            **self._query(),
            "watch": "true",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self.settings.server_timeout,
        }
        self.stats["watches"] += 1
        stream = self.client.stream(self.path, query, inactivity_timeout=self.settings.inactivity_timeout,
                                    connect_timeout=self.settings.connect_timeout, max_line=self.max_line)
        async for line in stream:
            self.take(line)

    def take(self, line: bytes | bytearray) -> None:
        """One line of the watch: delivered, a bookmark kept, skipped (said), or an ERROR raised."""
        try:
            kind, obj = shapes.parse_line(line)
        except shapes.BadShape as exc:
            self._malformed(f"an event: {exc}")
            return
        if kind == "ERROR":
            status, reason, message = shapes.error_status(obj)
            cls = GoneError if status == 410 else APIError
            raise cls(status, reason, message, method="WATCH", path=self.path)
        if kind == "BOOKMARK":
            self.resource_version = shapes.bookmark_version(obj) or self.resource_version
            return
        meta = obj["metadata"]
        rv = meta["resourceVersion"]
        if not self.healthy:
            self._recovered()
        uid = meta["uid"]
        self._deliver(kind, obj)
        # Only once delivered: after a consumer raised, the relist finds this change again.
        if self._fresh is not None:
            self._fresh.add(uid)
        if kind == "DELETED":
            self._known.pop(uid, None)
        else:
            self._known[uid] = (rv, meta.get("namespace"), meta["name"])
        self.resource_version = rv
        self.stats["events"] += 1
