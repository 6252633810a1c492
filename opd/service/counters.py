"""The engine's status surface (``opd.engine.status``) as the health server's plain numbers: per
resource counters, the watch streams, the patch counts. Nothing here reads the engine's parts."""

from __future__ import annotations

from opd.engine.status import ConnectionStatus, OperationStatus, ProcessorStatus, StreamStatus
from opd.service.health import ResourceCounters, WatchSnapshot


def resource_counters(processor: ProcessorStatus, backlog: tuple[int, int] = (0, 0)) -> ResourceCounters:
    return ResourceCounters(runs=dict(processor.runs), seconds=dict(processor.seconds),
                            queue={"depth": processor.depth, "queued": processor.queued, "active": processor.active,
                                   "delayed": processor.delayed, "workers": processor.workers},
                            backlog=backlog)


def watch_snapshot(stream: StreamStatus, connection: str) -> WatchSnapshot:
    error = stream.error
    return WatchSnapshot(resource=stream.resource, namespace=stream.namespace, selector=stream.selector,
                         listed=stream.listed, healthy=stream.healthy, error=error.text if error else None,
                         status=error.status if error else None, stats=dict(stream.stats), connection=connection)


def operation_counters(status: OperationStatus | None) -> tuple[dict[str, ResourceCounters], int]:
    """An operation's per-resource counters and Events posted (none yet: empty)."""
    if status is None:
        return {}, 0
    backlog = status.backlog
    return ({name: resource_counters(p, backlog.get(name, (0, 0))) for name, p in status.processors.items()},
            status.events_posted)


def connection_counters(status: ConnectionStatus | None,
                        connection: str) -> tuple[list[WatchSnapshot], dict[str, int]]:
    """A connection's watch streams and patch counts (none yet: empty)."""
    if status is None:
        return [], {}
    return ([watch_snapshot(s, connection) for s in status.streams],
            {"requests": status.patch_requests, "merged": status.patches_merged})
