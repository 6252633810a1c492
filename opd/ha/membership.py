"""Who is in the group (shards mode): one members Lease (``<lease>-members``) with an entry per
replica, an annotation ``members.opd.dev/<digest of its identity>`` that the replica rewrites
every ``retry_period`` by merge-patch, so entries never conflict. An entry says the replica's
identity, its shard count and how it hashes objects; one not renewed within ``lease_duration`` is
no longer counted, and one long expired (a crashed replica's) is removed by the first live member,
with a resourceVersion precondition, so that a member renewing at that moment is not removed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

from loguru import logger

from opd.ha.election import Timings
from opd.ha.leases import GROUP_LABEL, MAX_HOLDER, MEMBER_PREFIX, ROLE_LABEL, Lease, LeaseStore, micro_time
from opd.ha.observing import Observations, Seen
from opd.ha.shards import HASH, member_key
from opd.kube.api import REQUEST_ERRORS, ConflictError, NotFoundError

TIDY_AFTER = 3  # an entry expired this many lease durations ago is removed
OLD_HASH = "sha1"  # what an entry without "hash" means: opd before FNV-1a shards

Entry = tuple[str, str, str, str, float]  # annotation, identity, shard count as written, hash, first seen at


def member_entry(value: str) -> tuple[str, str, str] | None:
    """(identity, shard count as written, hash) from a member's annotation; None when it is not one."""
    try:
        entry = json.loads(value)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    identity, shards, hashed = entry.get("identity"), entry.get("shards"), entry.get("hash", OLD_HASH)
    if not isinstance(identity, str) or not identity or len(identity) > MAX_HOLDER:
        return None
    return identity, str(shards)[:20], str(hashed)[:20]


class Membership:
    """This replica's entry in the members Lease, and what the others' say."""

    def __init__(self, name: str, identity: str, shards: int, group: str, store: LeaseStore, seen: Observations,
                 timings: Timings, clock: Callable[[], float], wall: Callable[[], datetime.datetime]) -> None:
        self.name, self.identity, self.shards, self.group = name, identity, shards, group
        self.store, self.seen, self.timings, self.clock, self.wall = store, seen, timings, clock, wall
        self.key = member_key(identity)
        self.written_at: float | None = None  # monotonic start of the last write of this replica's entry
        self.failure: str | None = None  # the last trouble writing it, said once per kind
        self._mismatch: set[str] = set()  # members with another shard count, said once each
        self._foreign: set[str] = set()  # members hashing objects otherwise, said once each

    def due(self, now: float) -> bool:
        return self.written_at is None or now - self.written_at >= self.timings.retry_period

    def entries(self) -> tuple[Seen | None, list[Entry]]:
        """The members Lease as seen, and its entries."""
        seen = self.seen.get(self.name)
        if seen is None:
            return None, []
        found = []
        for key, value in seen.lease.annotations.items():
            if key.startswith(MEMBER_PREFIX) and (entry := member_entry(value)) is not None:
                found.append((key, *entry, seen.marks.get(key, seen.at)))
        return seen, found

    def live(self, now: float) -> tuple[set[str], set[str], set[str]]:
        """The members whose entries have not expired (this one too), those of them seen renewing,
        and those of them that hash objects otherwise (each misfit said once)."""
        found, active, foreign = {self.identity}, {self.identity}, set()
        seen, entries = self.entries()
        for _, identity, count, hashed, at in entries:
            if now >= at + self.timings.lease_duration:
                continue
            found.add(identity)
            if seen is not None and at > seen.since:
                active.add(identity)
            if identity == self.identity:
                continue
            if hashed != HASH:
                foreign.add(identity)
                if identity not in self._foreign:
                    self._foreign.add(identity)
                    logger.error(f"opd: ha: replica {identity[:80]!r} puts objects in shards by {hashed!r}, "
                                 f"this one by {HASH!r} (an older opd): this replica holds no shard while it "
                                 "runs (it keeps them all); upgrade every replica of the group")
            if count != str(self.shards) and identity not in self._mismatch:
                self._mismatch.add(identity)
                logger.error(f"opd: ha: replica {identity[:80]!r} runs with {count!r} shards, this one with "
                             f"{self.shards}: give every replica the same [ha].shards")
        return found, active, foreign

    def next_expiry(self, now: float, due: float) -> float:
        """The earlier of ``due`` and the next moment an entry seen expires."""
        for *_, at in self.entries()[1]:
            if at + self.timings.lease_duration > now:
                due = min(due, at + self.timings.lease_duration)
        return due

    async def renew(self) -> None:
        """Write this replica's entry (the Lease created when missing)."""
        started = self.clock()
        timeout = min(self.timings.request_timeout, self.timings.renew_deadline)
        value = json.dumps({"identity": self.identity, "shards": self.shards, "hash": HASH,
                            "renewed": micro_time(self.wall())})
        try:
            try:
                lease = await self.store.patch(self.name, {"metadata": {"annotations": {self.key: value}}},
                                               timeout=timeout)
            except NotFoundError:
                try:
                    lease = await self.store.create(Lease(self.name, labels={GROUP_LABEL: self.group,
                                                                             ROLE_LABEL: "members"},
                                                          annotations={self.key: value}), timeout=timeout)
                except ConflictError:  # another replica created it meanwhile: the next step patches it
                    return
        except REQUEST_ERRORS as exc:
            kind = f"{type(exc).__name__}:{getattr(exc, 'status', '')}"
            if kind != self.failure:
                self.failure = kind
                text = " ".join(str(exc).split()) or type(exc).__name__
                logger.warning(f"opd: ha: writing this replica's entry in Lease {self.store.namespace}/"
                               f"{self.name} failed: {text[:300]}; retrying every {self.timings.retry_period:g}s")
            return
        self.seen.saw(lease, at=started)
        self.written_at = started
        if self.failure is not None:
            logger.info(f"opd: ha: Lease {self.store.namespace}/{self.name} written again")
            self.failure = None

    async def remove(self) -> None:
        """Remove this replica's entry (if it wrote one)."""
        if self.written_at is None:
            return
        try:
            await self.store.patch(self.name, {"metadata": {"annotations": {self.key: None}}},
                                   timeout=min(self.timings.request_timeout, self.timings.renew_deadline))
        except REQUEST_ERRORS as exc:  # the others remove it once it has long expired
            logger.debug(f"opd: ha: removing this replica's entry from {self.name} failed: {exc}")
        self.written_at = None

    async def tidy(self) -> None:
        """Remove entries long expired (replicas that crashed), on the version seen (one renewed
        meanwhile stays). The caller makes sure one member only does it."""
        now = self.clock()
        seen, entries = self.entries()
        gone = {key: None for key, _, _, _, at in entries
                if key != self.key and now >= at + TIDY_AFTER * self.timings.lease_duration}
        if seen is None or not gone or not seen.lease.version:
            return
        patch = {"metadata": {"resourceVersion": seen.lease.version, "annotations": gone}}
        try:
            self.seen.saw(await self.store.patch(seen.lease.name, patch, timeout=self.timings.request_timeout))
        except REQUEST_ERRORS as exc:  # a conflict: someone wrote meanwhile; the next step looks again
            logger.debug(f"opd: ha: removing {len(gone)} expired member(s) from {seen.lease.name} failed: {exc}")
