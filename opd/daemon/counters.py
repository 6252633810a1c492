"""The engine's counters (handler runs, queues, watch streams, writes), read as plain numbers for
the health server and /metrics; safe for a plugin running in another thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from opd.daemon.health import ResourceCounters, WatchSnapshot
from opd.engine.cluster import Cluster
from opd.engine.operation import Operation

if TYPE_CHECKING:
    from opd.engine.processing import ResourceProcessor

T = TypeVar("T")


# -- the engine's counters, read -------------------------------------------------------------------------------


def _copy(read: Callable[[], T]) -> T | None:
    """A copy of another thread's dict or list: a copy made while it grows may fail; try again."""
    for _ in range(5):
        try:
            return read()
        except RuntimeError:  # changed size during iteration
            continue
    return None


def _resource_counters(processor: ResourceProcessor) -> ResourceCounters:
    metrics, queue = processor.metrics, processor.queue
    stats = _copy(queue.stats) or {}
    return ResourceCounters(runs=_copy(lambda: dict(metrics.runs)) or {},
                            seconds=_copy(lambda: dict(metrics.seconds)) or {},
                            queue={"depth": len(queue), **{k: int(v) for k, v in stats.items()}})


def engine_counters(operation: Operation | None, cluster: Cluster | None,
                    connection: str) -> tuple[dict[str, ResourceCounters], int, list[WatchSnapshot], dict[str, int]]:
    """The engine's counters as plain numbers: the one place that knows their five shapes
    (processor.metrics, queue.stats(), watcher.stats, client.patches, poster.posted).

    Returns the operation's per-resource counters and events posted, and the cluster's watch streams
    and patch counts. Either may be None. Safe to call for an operation in another thread: only
    copies of its dicts and plain reads of ints.
    """
    resources: dict[str, ResourceCounters] = {}
    posted = 0
    if operation is not None:
        processors = operation.processors
        for processor in _copy(lambda: list(processors.values())) or []:
            resources[str(processor.resource)] = _resource_counters(processor)
        posted = operation.poster.posted if operation.poster is not None else 0
    watchers: list[WatchSnapshot] = []
    patches: dict[str, int] = {}
    if cluster is not None:
        hub = cluster.hub
        for w in _copy(lambda: hub.watchers) or []:
            watchers.append(WatchSnapshot(
                resource=str(w.resource), namespace=w.namespace, selector=w.label_selector,
                listed=w.listed.is_set(), healthy=w.healthy, error=w.last_error, stats=dict(w.stats),
                connection=connection))
        patches = {"requests": cluster.client.patches.requests, "merged": cluster.client.patches.merged}
    return resources, posted, watchers, patches


