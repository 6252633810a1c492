"""What an operation and a connection are doing, as frozen plain data: the one surface that the
daemon (its supervisor, health endpoint and metrics) and opd.ha read of the engine.

A watch stream's failure stays what it was raised as (``WatchError``: its type, the HTTP status
the API server answered with, one line), so a reader decides by the status, never by the text.

Snapshots may be taken from another thread than the engine's (a plugin isolated in a thread of
its own): they copy dicts and read ints, and a dict that grows while it is copied is copied again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from opd.engine.watching import REFUSED, WatchError

if TYPE_CHECKING:
    from opd.engine.cluster import Cluster
    from opd.engine.listing import ListProgress
    from opd.engine.processing import ResourceProcessor
    from opd.engine.watching import Watcher

T = TypeVar("T")


@dataclass(frozen=True)
class StreamStatus:
    """One watch stream (resource, namespace, label selector)."""

    resource: str
    namespace: str | None
    selector: str | None
    # An operation's stream: the LIST it gets (the stream's, or its own catch-up) was received whole;
    # a connection's: the stream's first LIST was. Received, not yet processed: see ``fed``.
    listed: bool
    healthy: bool
    error: WatchError | None  # its last failure, until it recovers
    stats: Mapping[str, int] = field(default_factory=dict)  # lists, watches, events, gone, errors, malformed
    objects: int = 0  # objects in that first LIST (those received so far, until the API server says how many)
    fed: int = 0  # of those, given to the subscriber (the handlers' queues) so far

    def __str__(self) -> str:
        return f"{self.resource}{' in ' + self.namespace if self.namespace else ''}"

    @property
    def received(self) -> int:
        """Events received (listed objects are not events)."""
        return self.stats.get("events", 0)

    @property
    def malformed(self) -> int:
        """Lines and listed objects skipped as not what the API server sends."""
        return self.stats.get("malformed", 0)

    @property
    def refusal(self) -> str | None:
        """Why this stream cannot be served until something outside opd changes: not listed, and
        refused (401, 403) or not served (404). None: no such reason (it may still fail, and retry)."""
        if self.listed or self.error is None or not self.error.refused:
            return None
        return f"cannot watch {self}: {self.error.text}"


@dataclass(frozen=True)
class ProcessorStatus:
    """One operation's processing of one resource."""

    resource: str
    depth: int = 0  # objects with a state waiting to be processed
    queued: int = 0  # of those, ready for a worker now
    active: int = 0  # being processed now
    delayed: int = 0  # retries and re-runs waiting for their time
    workers: int = 0
    runs: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (handler id, outcome) -> runs
    seconds: Mapping[str, float] = field(default_factory=dict)  # handler id -> seconds spent

    @property
    def handled(self) -> int:
        """Handler runs that succeeded."""
        return sum(n for (_, outcome), n in self.runs.items() if outcome == "success")

    @property
    def failed(self) -> int:
        """Handler runs that raised (retried or not)."""
        return sum(n for (_, outcome), n in self.runs.items() if outcome != "success")


@dataclass(frozen=True)
class OperationStatus:
    """One operation (an ``opd run``, or a plugin of the daemon)."""

    name: str
    ready: bool  # every stream's first LIST received (with index handlers: indexed too); see ``backlog``
    streams: tuple[StreamStatus, ...] = ()  # the streams it subscribes to; ``listed`` is its own subscription's
    unservable: tuple[str, ...] = ()  # why it cannot list, where only a change outside opd helps
    processors: Mapping[str, ProcessorStatus] = field(default_factory=dict)  # by resource
    events_posted: int = 0

    @property
    def backlog(self) -> dict[str, tuple[int, int]]:
        """By resource: (objects fed to the handlers' queues, objects listed) of its streams' first LISTs."""
        found: dict[str, tuple[int, int]] = {}
        for s in self.streams:
            fed, listed = found.get(s.resource, (0, 0))
            found[s.resource] = (fed + s.fed, listed + s.objects)
        return found


@dataclass(frozen=True)
class ConnectionStatus:
    """One connection to the cluster: every stream on it (whoever subscribes), and its writes."""

    streams: tuple[StreamStatus, ...] = ()
    patch_requests: int = 0
    patches_merged: int = 0  # patches sent inside another one's request
    hung: int = 0  # times the path to the API server was found hung and reconnected


# -- reading the engine's parts ------------------------------------------------------------------------------------


def copied(read: Callable[[], T]) -> T | None:
    """A copy of a dict or list that another thread may change meanwhile: tried again while it fails
    (None if it kept failing)."""
    for _ in range(5):
        try:
            return read()
        except RuntimeError:  # changed size during iteration
            continue
    return None


def stream(watcher: Watcher, listed: bool | None = None, progress: ListProgress | None = None) -> StreamStatus:
    """A stream's status; ``listed`` and ``progress``: a subscriber's own (a late one lists after the stream did)."""
    progress = watcher.progress if progress is None else progress
    objects = progress.listed
    return StreamStatus(resource=str(watcher.resource), namespace=watcher.namespace, selector=watcher.label_selector,
                        listed=watcher.received.is_set() if listed is None else listed, healthy=watcher.healthy,
                        error=watcher.failure, stats=(copied(lambda: dict(watcher.stats)) or {}),
                        objects=objects, fed=min(progress.fed, objects))


def processor(found: ResourceProcessor) -> ProcessorStatus:
    metrics, queue = found.metrics, found.queue
    stats = copied(queue.stats) or {}
    return ProcessorStatus(resource=str(found.resource), depth=len(queue), queued=int(stats.get("queued", 0)),
                           active=int(stats.get("active", 0)), delayed=int(stats.get("delayed", 0)),
                           workers=int(stats.get("workers", 0)), runs=(copied(lambda: dict(metrics.runs)) or {}),
                           seconds=(copied(lambda: dict(metrics.seconds)) or {}))


def connection(cluster: Cluster) -> ConnectionStatus:
    """A connection's status: every stream of its hub, and its patch counts."""
    hub = cluster.hub
    return ConnectionStatus(streams=tuple(stream(w) for w in (copied(lambda: hub.watchers) or [])),
                            patch_requests=cluster.client.patches.requests,
                            patches_merged=cluster.client.patches.merged, hung=hub.hung)


__all__ = ["REFUSED", "ConnectionStatus", "OperationStatus", "ProcessorStatus", "StreamStatus", "WatchError",
           "connection"]
