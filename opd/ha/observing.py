"""What this replica has seen of its group's Leases, and since when, by its own monotonic clock.

As in client-go, a Lease's expiry is judged by the observer's clock: a lease that has not changed
for its duration, since this replica first saw it in that state, is expired, whatever the
holder's clock says (no two hosts' clocks are compared). The observations come from a watch
on the group (and from this replica's own reads and writes); one that is stale is only ever
too optimistic about a lease being free, and then the write that would take it, made with the
resourceVersion seen, fails with 409: safety rests on the preconditions, speed on the watch.

A record's ``leaseDurationSeconds`` is its holder's claim, not a promise: it is honoured from the
group's own ``lease_duration`` up to ``MAX_HONOURED`` times that, never more (a record edited to
claim 2147483647 s would otherwise freeze failover for good). With a step due at each expiry, a
holder that stops renewing is replaced within 2 x ``lease_duration`` of its last renewal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opd.ha.leases import Lease

# The longest lease a record may claim, in multiples of the group's own lease_duration: room for a
# peer configured a little longer (a rolling change of timings), and for the step and its request
# that take the lease over within 2 x lease_duration.
MAX_HONOURED = 1.5


def honoured(claimed: float, least: float) -> float:
    """The duration a record's claim stands for here: at least ``least``, at most MAX_HONOURED x it."""
    return min(max(claimed, least), MAX_HONOURED * least)


@dataclass(frozen=True)
class Seen:
    lease: Lease
    at: float  # monotonic: when this replica first saw the lease's current record
    since: float  # monotonic: when this replica first saw the lease at all
    # Monotonic, per annotation: when this replica first saw its current value (a member's heartbeat).
    marks: Mapping[str, float] = field(default_factory=dict)

    @property
    def renewed(self) -> bool:
        """Whether it changed while this replica watched: its holder is alive, not just a name left
        behind by one that crashed (which looks alive until it has been watched for its duration)."""
        return self.at > self.since

    def expires(self, least: float) -> float:
        """When it counts as expired: its record's duration (at least ``least``, the group's own
        lease_duration, and at most MAX_HONOURED x that) after it was seen."""
        return self.at + honoured(float(self.lease.record.duration), least)


class Observations:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._seen: dict[str, Seen] = {}
        self.deleted: set[str] = set()  # names whose deletion was seen (and nothing since)
        # Set when a lease appears, goes, or changes hands (not on renewals): worth a look at once.
        self.changed = asyncio.Event()

    def get(self, name: str) -> Seen | None:
        return self._seen.get(name)

    def __iter__(self) -> Iterator[Seen]:
        return iter(list(self._seen.values()))

    def saw(self, lease: Lease, at: float | None = None) -> Seen:
        """A state of a lease, read or written: kept if newer than what was seen (by resourceVersion);
        its time restarts only when its record changed."""
        old = self._seen.get(lease.name)
        if old is not None and lease.version_number() <= old.lease.version_number() and lease.version_number() >= 0:
            return old
        now = self.clock() if at is None else at
        since = now if old is None else old.since
        when = old.at if old is not None and old.lease.record == lease.record else now
        marks = {key: old.marks[key] if old is not None and key in old.marks and
                 old.lease.annotations.get(key) == value else now for key, value in lease.annotations.items()}
        seen = self._seen[lease.name] = Seen(lease, when, since, marks)
        self.deleted.discard(lease.name)
        if old is None or old.lease.record.holder != lease.record.holder:
            self.changed.set()
        return seen

    def forget(self, name: str, *, deleted: bool = False) -> None:
        """Drop what was seen of a lease (to read it afresh); ``deleted``: it is gone from the API."""
        if deleted:
            self.deleted.add(name)
        if self._seen.pop(name, None) is not None or deleted:
            self.changed.set()

    def deliver(self, event_type: str, body: dict[str, Any]) -> None:
        """A watch event of the group (the Watcher's callback)."""
        lease = Lease.from_body(body)
        if not lease.name:
            return  # nothing to match it with
        if event_type == "DELETED":
            old = self._seen.get(lease.name)
            if old is None or not lease.version or lease.version_number() >= old.lease.version_number():
                self.forget(lease.name, deleted=True)
            return
        self.saw(lease)
