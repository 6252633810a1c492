"""client-go's leader election on one Lease: acquire it when free or expired, renew it, give it up.

``Claim.step()`` is client-go's ``tryAcquireOrRenew``: read the Lease (from the observations,
or the API when it was never seen); if another replica holds it and it has not expired by this
replica's clock, do nothing; otherwise write it with this identity, conditional on the
resourceVersion read. Whoever's write lands first holds it; the others get 409.

Fencing by time: a holder counts as holding only until ``renew_deadline`` after the *start* of
its last successful write (monotonic clock). Another replica can take the lease over only when
it has seen it unchanged for ``lease_duration``, which began no earlier than that write reached
the server. So a holder that cannot renew stops acting at least ``lease_duration -
renew_deadline`` (5 s with the defaults) before anyone else may start; what it sent before its
deadline can still land in that margin (every write's request timeout ends at the deadline: see
``opd.kube.batching``). A release writes an empty holder once the holder has stopped acting: the
others may take over at once.

Fencing by what the watch shows: a holder also stops the moment it sees a newer record that is
not its own — another holder, an emptied ``holderIdentity``, the Lease deleted — not a
``retry_period`` later. A record is this process's own when it names its identity *and* carries a
``renewTime`` this process wrote: one naming its identity that it did not write means another
process runs with the same identity. Holding, it says so and stops (it does not fight); not
holding, it treats that record as another's, which it may take only once it has expired.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from loguru import logger

from opd.ha.leases import MAX_INT32, Lease, LeaseRecord, LeaseStore, micro_time
from opd.ha.observing import Observations
from opd.kube.api import REQUEST_ERRORS, APIError, ConflictError, NotFoundError


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# The fence's clock: seconds since boot with the time suspended included (Linux's CLOCK_BOOTTIME),
# so that a host waking from sleep does not take a lease it renewed before it slept for fresh, as
# time.monotonic (which stops while suspended) would; elsewhere time.monotonic.
CLOCK: Callable[[], float] = _boot_clock if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


@dataclass(frozen=True)
class Timings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    request_timeout: float = 10.0  # the most one request may take (renewals: until the deadline)


class Claim:
    """This replica's hold on one Lease."""

    def __init__(self, name: str, identity: str, store: LeaseStore, seen: Observations, timings: Timings, *,
                 labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
                 clock: Callable[[], float], wall: Callable[[], datetime.datetime] = _now) -> None:
        self.name = name
        self.identity = identity
        self.store = store
        self.seen = seen
        self.timings = timings
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.clock = clock
        self.wall = wall
        self.renewed_at: float | None = None  # monotonic start of the last write that made or kept us holder
        self.acquired_at: float | None = None  # monotonic start of the write that made us holder
        self.failure: str | None = None  # the last request's trouble, said once per kind
        self._lock = asyncio.Lock()  # one request at a time: a release must not race a renewal
        # The renewTimes this process wrote (the last few, the one in flight included): what tells
        # its own records from those of another process with the same identity. Replaced whole,
        # never mutated: read from the operations' threads.
        self._stamps: tuple[str, ...] = ()
        self.hold_off_until = -1.0  # monotonic: no acquisition before (after being superseded)

    def __repr__(self) -> str:
        return f"Claim({self.name!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this replica holds the lease now: written by it, renewed within the deadline, and
        nothing newer seen that is not its own. Read from any thread (plain reads): the fence needs
        no help from the loop."""
        renewed = self.renewed_at
        return renewed is not None and self.clock() < renewed + self.timings.renew_deadline and not self.superseded()

    def ours(self, record: LeaseRecord) -> bool:
        """Whether this process wrote ``record`` (its identity alone is not enough: see the module)."""
        return record.holder == self.identity and record.renewed is not None and record.renewed in self._stamps

    def _others(self, record: LeaseRecord) -> bool:
        """Whether ``record`` holds the lease for someone else (another identity, or ours in another process)."""
        return bool(record.holder) and not self.ours(record)

    def superseded(self) -> str | None:
        """Why the newest record seen ends this replica's hold ('' or None: it does not)."""
        if self.name in self.seen.deleted:
            return "the Lease was deleted"
        seen = self.seen.get(self.name)
        if seen is None or self.ours(seen.lease.record):
            return None
        record = seen.lease.record
        if not record.holder:
            return "released: holderIdentity cleared"
        if record.holder == self.identity:
            return (f"renewed by another process with this replica's identity {self.identity!r}: two replicas share "
                    "it (give each its own); this one stops acting and stands by")
        return f"taken by {record.holder[:80]!r}"

    def twinned(self) -> bool:
        """Whether the newest record seen names this identity but was written by another process."""
        seen = self.seen.get(self.name)
        return seen is not None and seen.lease.record.holder == self.identity and not self.ours(seen.lease.record)

    def why_lost(self) -> str:
        """For the line that says the lease was lost."""
        return self.superseded() or f"not renewed within {self.timings.renew_deadline:g}s"

    @property
    def deadline(self) -> float | None:
        renewed = self.renewed_at
        return None if renewed is None else renewed + self.timings.renew_deadline

    def holder(self) -> str:
        """The holder as last seen ('' when free or never seen)."""
        seen = self.seen.get(self.name)
        return seen.lease.record.holder if seen is not None else ""

    def free(self, now: float | None = None) -> bool:
        """Whether a step could take it now: never seen, free, ours, or expired by our clock."""
        now = self.clock() if now is None else now
        if now < self.hold_off_until:
            return False
        seen = self.seen.get(self.name)
        if seen is None or not self._others(seen.lease.record):
            return True
        return now >= seen.expires(self.timings.lease_duration)

    def superseded_now(self) -> None:
        """Told that a newer record ended this replica's hold: stop, and leave the lease to the
        others for a ``retry_period`` (a holder cleared by hand is a hand-over, not a free-for-all
        the old holder wins by being first)."""
        self._lost()
        self.hold_off_until = self.clock() + self.timings.retry_period

    def expires(self) -> float | None:
        """When the lease, held by another, expires by our clock (None: not held by another)."""
        seen = self.seen.get(self.name)
        if seen is None or not self._others(seen.lease.record):
            return None
        return seen.expires(self.timings.lease_duration)

    def _timeout(self, started: float) -> float:
        deadline = self.deadline
        if deadline is not None and started < deadline:
            return max(0.05, min(self.timings.request_timeout, deadline - started))
        return min(self.timings.request_timeout, self.timings.renew_deadline)

    def _trouble(self, what: str, exc: BaseException) -> None:
        kind = f"{type(exc).__name__}:{getattr(exc, 'status', '')}"
        if kind != self.failure:
            self.failure = kind
            text = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, APIError) and exc.status in (401, 403):
                text += f" (the account needs get, list, watch, create, update and patch on leases in " \
                        f"namespace {self.store.namespace})"
            logger.warning(f"opd: ha: {what} Lease {self.store.namespace}/{self.name} failed: {text}; "
                           f"retrying every {self.timings.retry_period:g}s")

    def _record(self, old: LeaseRecord, now: datetime.datetime) -> LeaseRecord:
        """The record to write: ours, renewed now; a change of hands counts as a transition (the
        API's int32 wraps to 0 rather than make every later write invalid)."""
        stamp = micro_time(now)
        while stamp in self._stamps:  # a coarse clock: each write's stamp must be its own
            now += datetime.timedelta(microseconds=1)
            stamp = micro_time(now)
        self._stamps = (*self._stamps[-7:], stamp)
        if self.ours(old) and self.renewed_at is not None:
            acquired, transitions = old.acquired or stamp, old.transitions
        else:
            never_held = not old.holder and old.acquired is None
            acquired, transitions = stamp, (old.transitions + (0 if never_held else 1)) % (MAX_INT32 + 1)
        return LeaseRecord(holder=self.identity, duration=math.ceil(self.timings.lease_duration),
                           acquired=acquired, renewed=stamp, transitions=transitions)

    async def step(self) -> bool:
        """Acquire or renew, once; whether this replica holds the lease afterwards."""
        async with self._lock:
            started = self.clock()
            timeout = self._timeout(started)
            try:
                seen = self.seen.get(self.name)
                if seen is None:
                    found = await self.store.get(self.name, timeout=timeout)
                    if found is None:
                        lease = Lease(self.name, self._record(LeaseRecord(), self.wall()), labels=self.labels,
                                      annotations=self.annotations)
                        return self._won(await self.store.create(lease, timeout=timeout), started)
                    seen = self.seen.saw(found)
                old = seen.lease.record
                if self._others(old) and started < seen.expires(self.timings.lease_duration):
                    self._lost()
                    return False
                lease = replace(seen.lease, record=self._record(old, self.wall()),
                                labels={**seen.lease.labels, **self.labels},
                                annotations={**seen.lease.annotations, **self.annotations})
                return self._won(await self.store.update(lease, timeout=timeout), started)
            except ConflictError:
                # Someone wrote it since we read it: read it afresh; the next step decides.
                await self._refresh(timeout)
                seen = self.seen.get(self.name)
                if seen is None or not self.ours(seen.lease.record):
                    self._lost()
                return self.held
            except NotFoundError as exc:  # deleted (or its namespace is missing): read it afresh next time
                self.seen.forget(self.name, deleted=True)
                self._trouble("renewing" if self.renewed_at is not None else "acquiring", exc)
                return self.held
            except REQUEST_ERRORS as exc:
                self._trouble("renewing" if self.renewed_at is not None else "acquiring", exc)
                return self.held

    async def _refresh(self, timeout: float) -> None:
        try:
            fresh = await self.store.get(self.name, timeout=timeout)
        except REQUEST_ERRORS:
            self.seen.forget(self.name)  # read it at the next step
            return
        if fresh is None:
            self.seen.forget(self.name, deleted=True)
        else:
            self.seen.saw(fresh)

    def _won(self, lease: Lease, started: float) -> bool:
        self.seen.saw(lease, at=started)
        if self.renewed_at is None:
            self.acquired_at = started
        self.renewed_at = started
        if self.failure is not None:
            logger.info(f"opd: ha: Lease {self.store.namespace}/{self.name} written again")
            self.failure = None
        return True

    def _lost(self) -> None:
        self.renewed_at = self.acquired_at = None

    def stop(self) -> None:
        """Stop holding at once (the fence), without a request: e.g. before a release."""
        self._lost()

    async def release(self) -> bool:
        """Give the lease up if it says this replica holds it; whether that was written. Holding
        ends before the request is sent."""
        async with self._lock:
            self._lost()
            # Also when the deadline has passed: the precondition keeps a lease that another
            # replica took meanwhile from being cleared.
            seen = self.seen.get(self.name)
            if seen is None or not self.ours(seen.lease.record):
                return False  # not ours to release (another's, or a twin's with our identity)
            timeout = min(self.timings.request_timeout, self.timings.renew_deadline)
            for _ in range(2):  # once more after a 409: read afresh, and if it is still ours, again
                try:
                    record = replace(seen.lease.record, holder="", renewed=micro_time(self.wall()))
                    self.seen.saw(await self.store.update(seen.lease.with_record(record), timeout=timeout))
                    return True
                except ConflictError:
                    await self._refresh(timeout)
                    seen = self.seen.get(self.name)
                    if seen is None or not self.ours(seen.lease.record):
                        return False
                except REQUEST_ERRORS as exc:  # it expires by itself: the others wait lease_duration
                    self._trouble("releasing", exc)
                    return False
            return False
