"""What this replica has seen of its group's Leases, and since when, by its own monotonic clock.

As in client-go, a Lease's expiry is judged by the observer's clock: a lease that has not changed
for its duration, since this replica first saw it in that state, is expired, whatever the
holder's clock says (no two hosts' clocks are compared). The observations come from a watch
on the group (and from this replica's own reads and writes); one that is stale is only ever
too optimistic about a lease being free, and then the write that would take it, made with the
resourceVersion seen, fails with 409: safety rests on the preconditions, speed on the watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from opd.ha.leases import Lease


@dataclass(frozen=True)
class Seen:
    lease: Lease
    at: float  # monotonic: when this replica first saw the lease's current record
    since: float  # monotonic: when this replica first saw the lease at all

    @property
    def renewed(self) -> bool:
        """Whether it changed while this replica watched: its holder is alive, not just a name left
        behind by one that crashed (which looks alive until it has been watched for its duration)."""
        return self.at > self.since

    def expires(self, least: float) -> float:
        """When it counts as expired: its record's duration (at least ``least``) after it was seen."""
        return self.at + max(float(self.lease.record.duration), least)


class Observations:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._seen: dict[str, Seen] = {}
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
        when = self.clock() if at is None else at
        since = when if old is None else old.since
        if old is not None and old.lease.record == lease.record:
            when = old.at
        seen = self._seen[lease.name] = Seen(lease, when, since)
        if old is None or old.lease.record.holder != lease.record.holder:
            self.changed.set()
        return seen

    def forget(self, name: str) -> None:
        if self._seen.pop(name, None) is not None:
            self.changed.set()

    def deliver(self, event_type: str, body: dict[str, Any]) -> None:
        """A watch event of the group (the Watcher's callback)."""
        lease = Lease.from_body(body)
        if event_type == "DELETED":
            old = self._seen.get(lease.name)
            if old is None or not lease.version or lease.version_number() >= old.lease.version_number():
                self.forget(lease.name)
            return
        self.saw(lease)
