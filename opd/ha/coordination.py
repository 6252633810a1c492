"""A replica's decisions, one step at a time: which Leases to hold, and what to tell its operations.

Leader mode: one Lease (``<lease>``), key 0 for every object. A candidate takes the Lease when it
is free or expired; the holder renews it every ``retry_period``; a holder whose renewal has not
succeeded within ``renew_deadline`` is fenced (its operations stop acting at once, by time) and
stands by again.

Shards mode: ``S`` Leases (``<lease>-<i>``), the key of an object is its shard (``shards.shard_of``),
and the group's members (``opd.ha.membership``). Each step renews what this replica holds and its
member entry, then follows
``shards.plan``: claim free shards while below the fair share, hand extras over. A hand-over
stops taking new work on the shard (what is queued of it goes at once, however long the
backlog), waits (bounded) until none of its objects is in process, fences, and only then
releases the Lease: another replica starts on a shard only after that release, or after the
lease expired.

A replica that starts first **settles**: it claims nothing for one ``retry_period`` after its
member entry is written (longer while more members keep appearing, at most ``SETTLE_MOST``
retry periods), so that replicas started together see each other before any claims: else the
first one takes every shard and, over objects that already exist, handles them all before the
others' entries appear. A member whose entry says it hashes objects otherwise (an older opd:
sha1) is not shared with: while one is live this replica holds no shard and keeps no entry
(said once), so that the older ones, which do not know to yield, see only each other and keep
every shard; once they are gone it writes its entry again and settles anew.

With label filtering (``settings.filtering``), one more Lease, ``<lease>-labeller``, makes one
replica the labeller: it claims the role once settled, as a shard is claimed (free or expired),
renews it with its shards, and tells its operations to write the shard label on objects that lack
it. Two labellers for a moment (one fenced, one new) do no harm: the label's value is the
object's shard, the same whoever writes it.

Nothing here waits for the operations: what they must do (gain, drain, lose) goes through one
ordered queue, so a slow operation never delays a renewal.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from loguru import logger

from opd.ha.election import CLOCK, Claim, Timings
from opd.ha.leases import GROUP_LABEL, ROLE_LABEL, LeaseStore, group_label
from opd.ha.membership import Membership
from opd.ha.observing import MAX_HONOURED, Observations
from opd.ha.settings import HaSettings
from opd.ha.shards import labeller_name, members_name, plan, shard_name, shard_of

HANDOVER_TIMEOUT = 30.0  # seconds a hand-over waits for work in process before it fences anyway
SETTLE_MOST = 3  # retry periods: the longest a starting replica waits to see its group before claiming


class Listener(Protocol):
    """The operations of this replica, as the coordinator sees them."""

    async def gain(self, keys: frozenset[int], reason: str) -> None: ...

    async def drain(self, keys: frozenset[int], reason: str) -> None: ...

    async def lose(self, keys: frozenset[int], reason: str) -> None: ...

    async def drained(self, keys: frozenset[int], timeout: float) -> bool:
        """Until no object of these keys that was in process when they began to drain still is."""
        ...

    async def labelling(self, keys: frozenset[int], reason: str) -> None:
        """Write shard labels from now on (``keys`` not empty: this replica is the labeller) or stop."""
        ...


@dataclass(frozen=True)
class State:
    """For health output and logs: plain data."""

    mode: str
    identity: str
    lease: str
    namespace: str
    role: str  # leader, standby, shards
    held: tuple[int, ...]
    shards: int
    members: int
    requests: int = 0  # Lease requests sent so far
    filtering: str = "client"  # how its operations get only their shards' events: server, labels or client
    labeller: bool = False  # whether it holds the labeller role (label filtering)


class Coordinator:
    def __init__(self, settings: HaSettings, store: LeaseStore, seen: Observations, listener: Listener, *,
                 clock: Callable[[], float] = CLOCK,
                 wall: Callable[[], datetime.datetime] | None = None,
                 request_timeout: float = 10.0, handover_timeout: float = HANDOVER_TIMEOUT) -> None:
        self.settings = settings
        self.store = store
        self.seen = seen
        self.listener = listener
        self.clock = clock
        self.handover_timeout = handover_timeout
        self.identity = settings.identity
        self.leader_mode = settings.mode == "leader"
        self.timings = Timings(settings.lease_duration, settings.renew_deadline, settings.retry_period,
                               request_timeout=request_timeout)
        group = group_label(settings.lease)
        extra = {"wall": wall} if wall is not None else {}

        def claim(name: str, role: str, annotations: dict[str, str] | None = None) -> Claim:
            return Claim(name, self.identity, store, seen, self.timings, labels={GROUP_LABEL: group, ROLE_LABEL: role},
                         annotations=annotations, clock=clock, **extra)

        self.membership: Membership | None = None  # this replica's entry, the others' (shards mode)
        # server, labels or client (shards mode): decided at start (opd.ha.replica), before any view is made
        self.filtering = "client"
        self.labeller: Claim | None = None  # the labeller role's claim (label filtering)
        self._labelling = False  # whether the operations were told to label
        if self.leader_mode:
            self.claims = {0: claim(settings.lease, "leader")}
        else:
            self.claims = {i: claim(shard_name(settings.lease, i), "shard") for i in range(settings.shards)}
            self.membership = Membership(members_name(settings.lease), self.identity, settings.shards, group,
                                         store, seen, self.timings, clock,
                                         wall or (lambda: datetime.datetime.now(datetime.UTC)))
            self.labeller = claim(labeller_name(settings.lease), "labeller")
        self.group = group
        self._overclaimed: set[str] = set()  # Leases whose records claim more than is honoured, said once each
        self._granted: frozenset[int] = frozenset()  # keys held and told to the operations
        self._handovers: dict[int, asyncio.Task[None]] = {}
        self._notices: asyncio.Queue[tuple[str, frozenset[int], str, asyncio.Future[None]]] | None = None
        self._notifier: asyncio.Task[None] | None = None
        self._members: frozenset[str] = frozenset({self.identity})
        self._said: str | None = None  # the last role line logged
        self.yielding = False  # while such a member is live: no shard held, no member entry of its own
        # Settling at start: when it began and ends (monotonic), the members seen meanwhile.
        self._settle: tuple[float, float] | None = None
        self._settle_seen: frozenset[str] = frozenset()
        self.settled_at: float | None = None  # when it settled (shards mode): it claims from then on
        self.stopping = False

    # -- read from any thread (the operations' views) ----------------------------------------------------------
    def key_of(self, uid: str) -> int:
        return 0 if self.leader_mode else shard_of(uid, self.settings.shards)

    def holds(self, key: int) -> bool:
        claim = self.claims.get(key)
        return claim is not None and claim.held

    def granted(self) -> frozenset[int]:
        return self._granted

    def narrowed(self) -> bool:
        """Whether the operations watch only their shards' labels."""
        return self.filtering == "labels"

    def sharded(self) -> bool:
        """Whether the operations ask the server for their shards' hash ranges (KEP-5866: no label)."""
        return self.filtering == "server"

    def labels(self) -> bool:
        """Whether this replica holds the labeller role (its operations write the shard labels)."""
        return self._labelling

    def shard_count(self) -> int:
        return len(self.claims)

    def left(self, key: int) -> float:
        """Seconds until the fence of a key held (0 when not held): the deadline of its last renewal."""
        claim = self.claims.get(key)
        deadline = claim.deadline if claim is not None and claim.held else None
        return max(0.0, deadline - self.clock()) if deadline is not None else 0.0

    def state(self) -> State:
        held = tuple(sorted(self._granted))
        role = ("leader" if held and self.holds(0) else "standby") if self.leader_mode else "shards"
        return State(mode=self.settings.mode, identity=self.identity, lease=self.settings.lease,
                     namespace=self.settings.namespace, role=role, held=held, shards=len(self.claims),
                     members=len(self._members), requests=getattr(self.store, "requests", 0),
                     filtering=self.filtering if not self.leader_mode else "none", labeller=self._labelling)

    # -- one step ----------------------------------------------------------------------------------------------
    async def step(self) -> None:
        now = self.clock()
        period = self.timings.retry_period
        renewing = [c for c in self.claims.values() if c.renewed_at is not None and now - c.renewed_at >= period]
        membership = self.membership
        member_due = membership is not None and not self.yielding and membership.due(now)
        if renewing or member_due:
            await asyncio.gather(*(c.step() for c in renewing),
                                 *([membership.renew()] if membership is not None and member_due else []))
        self._fence()
        self._overclaims()
        if self.stopping:
            return
        tried = {c.name for c in renewing}  # one request per lease and step
        if self.leader_mode:
            claim = self.claims[0]
            if not claim.held and claim.free() and claim.name not in tried:
                await claim.step()
        else:
            # The role first: whoever takes it claims a lighter share of shards in the same step
            # (after, it would claim a full share and hand part of it over at once).
            await self._label_role(now)
            await self._shards(tried)
        gained = frozenset(k for k, c in self.claims.items()
                           if c.held and k not in self._granted and k not in self._handovers)
        if gained:
            self._granted |= gained
            self._tell("gain", gained, "lease acquired")
        self._say()
        if membership is not None and min(self._members) == self.identity:
            await membership.tidy()  # the first live member removes the entries of crashed ones

    async def _label_role(self, now: float) -> None:
        """The labeller role: claimed once settled (when free), renewed every retry period, dropped
        when its renewal fails (by time, as a shard's); the operations told of each change."""
        claim = self.labeller
        if claim is None or self.filtering != "labels":
            return
        if not self.yielding:
            due = claim.renewed_at is None or now - claim.renewed_at >= self.timings.retry_period
            if due and (claim.held or (claim.free(now) and self._member_failure() is None
                                       and self._may_claim(now))):
                await claim.step()
        held = claim.held and not self.yielding
        if held != self._labelling:
            self._labelling = held
            line = "labeller: writing the shard label on objects without it" if held else "labeller role lost"
            logger.info(f"opd: ha: {line} [{self.identity}, Lease {self.settings.namespace}/{claim.name}]")
            self._tell("labelling", frozenset({1}) if held else frozenset(), "labeller role")

    def _fence(self) -> None:
        """Keys whose lease is no longer held (not renewed in time, or taken): stop acting on them."""
        lost = frozenset(k for k in self._granted if not self.claims[k].held)
        if not lost:
            return
        self._granted -= lost
        for key in lost:
            task = self._handovers.pop(key, None)
            if task is not None:
                task.cancel()
        names = ", ".join(self.claims[k].name for k in sorted(lost))
        why = self.claims[min(lost)].why_lost()
        for key in lost:
            if self.claims[key].superseded():
                self.claims[key].superseded_now()
        line = (f"opd: ha: lost Lease {self.settings.namespace}/{names} ({why}): its objects' handlers stopped, "
                "outcomes in flight are dropped")
        if any(self.claims[k].twinned() for k in lost):  # a misconfiguration, not a hand-over
            logger.error(line)
        else:
            logger.warning(line)
        self._tell("lose", lost, f"Lease {why}")

    def _overclaims(self) -> None:
        """Say once per Lease when a record claims a longer lease than this replica honours."""
        most = MAX_HONOURED * self.timings.lease_duration
        for claim in self.claims.values():
            seen = self.seen.get(claim.name)
            if seen is None or seen.lease.record.duration <= most or claim.ours(seen.lease.record) \
                    or claim.name in self._overclaimed:
                continue
            self._overclaimed.add(claim.name)
            logger.warning(f"opd: ha: Lease {self.settings.namespace}/{claim.name} claims "
                           f"{seen.lease.record.duration}s for {seen.lease.record.holder[:80]!r}; this replica "
                           f"honours at most {most:g}s ({MAX_HONOURED:g} x its lease_duration): give every replica "
                           "the same timings")

    async def _shards(self, tried: set[str]) -> None:
        now = self.clock()
        holders: dict[int, str] = {}
        for key, claim in self.claims.items():
            if key in self._handovers:
                continue  # on its way out: neither ours to keep nor free to take
            if claim.held:
                holders[key] = self.identity
            elif (holder := claim.holder()) and not claim.free(now):
                # Held by another (one with this identity in another process counts as someone else).
                holders[key] = holder if holder != self.identity else f"{holder} (another process)"
        assert self.membership is not None
        members, active, foreign = self.membership.live(now)
        self._members = frozenset(members | set(holders.values()))
        todo = plan(self.identity, self._members, holders, len(self.claims), active | set(holders.values()),
                    light=self._labeller_identity(now))
        # With a member that hashes otherwise, one object is in two shards: the older ones keep
        # every shard (they do not know to yield) and this one hands its own over.
        release = [k for k, c in self.claims.items() if c.held and k not in self._handovers] if foreign \
            else todo.release
        for key in release:
            self._handovers[key] = asyncio.get_running_loop().create_task(
                self._hand_over(key), name=f"opd ha hand-over {self.claims[key].name}")
        if foreign:
            if not self.yielding:
                self.yielding = True
                await self.membership.remove()
            return
        if self.yielding:  # they are gone: write the entry again and settle anew before claiming
            self.yielding, self.settled_at, self._settle = False, None, None
            return
        if self.membership.failure is not None and not self._granted:
            return  # the API did not answer its member entry: claiming shards now would only add requests
        if not self._may_claim(now):
            return
        taken = 0
        for key in todo.claim:
            if taken >= todo.want or self.stopping:
                break
            claim = self.claims[key]
            if claim.held or (claim.name not in tried and claim.free() and await claim.step()):
                taken += 1
            elif claim.failure is not None:
                break  # the API is away (or refuses): the next step tries again, not the next shard now

    def _labeller_identity(self, now: float) -> str | None:
        """Who holds the labeller role now, as this replica sees it (label filtering): its share
        of shards is lighter."""
        claim = self.labeller
        if claim is None or self.filtering != "labels":
            return None
        if claim.held and not self.yielding:
            return self.identity
        holder = claim.holder()
        return holder if holder and holder != self.identity and not claim.free(now) else None

    def _member_failure(self) -> str | None:
        return self.membership.failure if self.membership is not None else None

    def _may_claim(self, now: float) -> bool:
        """Whether this replica has seen its group long enough to claim: one retry period from its
        first step with its member entry written, extended by one more each time a member appears
        meanwhile (replicas started together come up over a few seconds), at most SETTLE_MOST."""
        if self.settled_at is not None:
            return True
        if self.membership is None or self.membership.written_at is None:
            return False  # nobody can see this replica yet
        period = self.timings.retry_period
        if self._settle is None:
            self._settle, self._settle_seen = (now, now + period), self._members
            logger.info(f"opd: ha: settling: {len(self._members)} replica(s) seen; claiming shards in "
                        f"{period:g}s (at most {SETTLE_MOST * period:g}s while more appear)")
        elif self._members - self._settle_seen:
            began, end = self._settle
            self._settle = began, min(max(end, now + period), began + SETTLE_MOST * period)
            self._settle_seen |= self._members
        if now < self._settle[1]:
            return False
        self.settled_at = now
        logger.info(f"opd: ha: settled after {now - self._settle[0]:.1f}s: {len(self._members)} replica(s) seen")
        return True

    async def _hand_over(self, key: int) -> None:
        claim = self.claims[key]
        began = self.clock()
        try:
            await self._tell("drain", frozenset({key}), "shard handed over to another replica")
            drained = await self.listener.drained(frozenset({key}), self.handover_timeout)
            if not drained:
                logger.warning(f"opd: ha: handing {claim.name} over: work still in process after "
                               f"{self.handover_timeout:g}s; its outcomes are dropped")
            claim.stop()  # the fence first: nothing of it is written from here on
            self._granted -= {key}
            await self._tell("lose", frozenset({key}), "shard handed over to another replica")
            await claim.release()
        finally:
            if self._handovers.get(key) is asyncio.current_task():
                del self._handovers[key]
        logger.info(f"opd: ha: released {claim.name} after {self.clock() - began:.1f}s (fair share: "
                    f"{len(self.claims)} shards over {len(self._members)} replicas)")

    def _say(self) -> None:
        state = self.state()
        if self.leader_mode:
            holder = self.claims[0].holder()
            line = "leading: running handlers" if state.role == "leader" else (
                f"standing by: Lease held by {holder!r}" if holder and holder != self.identity else "standing by")
        else:
            held = ", ".join(map(str, state.held)) or "none"
            line = f"holding shards {held} ({len(state.held)} of {state.shards}; {state.members} replica(s))"
        if line != self._said:
            self._said = line
            logger.info(f"opd: ha: {line} [{self.identity}, Lease {self.settings.namespace}/{self.settings.lease}]")

    def next_step(self) -> float:
        """When the next step is due (monotonic): a renewal, a fence, or a lease that expires."""
        now = self.clock()
        due = now + self.timings.retry_period
        membership = self.membership
        if membership is not None:
            due = min(due, (membership.written_at if membership.written_at is not None else now)
                      + self.timings.retry_period)
        for claim in [*self.claims.values(), *([self.labeller] if self.labeller is not None else [])]:
            if claim.renewed_at is not None:
                due = min(due, claim.renewed_at + self.timings.retry_period)
                if claim.deadline is not None and claim.deadline > now:
                    due = min(due, claim.deadline)
            expires = claim.expires()
            if expires is not None and expires > now:
                due = min(due, expires)
        if membership is not None:
            due = membership.next_expiry(now, due)
        if self.settled_at is None and self._settle is not None:
            due = min(due, max(now, self._settle[1]))
        return due

    # -- telling the operations, in order ----------------------------------------------------------------------
    def _tell(self, kind: str, keys: frozenset[int], reason: str) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._notices is None:
            self._notices = asyncio.Queue()
            self._notifier = loop.create_task(self._notify(self._notices), name="opd ha notices")
        done: asyncio.Future[None] = loop.create_future()
        self._notices.put_nowait((kind, keys, reason, done))
        return done

    async def _notify(self, notices: asyncio.Queue[tuple[str, frozenset[int], str, asyncio.Future[None]]]) -> None:
        while True:
            kind, keys, reason, done = await notices.get()
            try:
                await getattr(self.listener, kind)(keys, reason)
            except Exception:  # a bug: said loudly; the next notice still goes out
                logger.opt(exception=True).error(f"opd: ha: telling the operations to {kind} {sorted(keys)} failed")
            finally:
                if not done.done():
                    done.set_result(None)
                notices.task_done()

    async def settled(self) -> None:
        """Until every hand-over begun has ended and every notice given has been acted on."""
        while self._handovers:
            await asyncio.gather(*self._handovers.values(), return_exceptions=True)
        if self._notices is not None:
            await self._notices.join()

    # -- the end -----------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop acting, then release every Lease held (and remove this replica's member entry): the
        others take over at once instead of after lease_duration. The operations should have stopped."""
        self.stopping = True
        handovers = list(self._handovers.values())
        for task in handovers:
            task.cancel()
        await asyncio.gather(*handovers, return_exceptions=True)
        self._handovers.clear()
        for claim in self.claims.values():
            claim.stop()
        if self.labeller is not None:
            self.labeller.stop()
            if self._labelling:
                self._labelling = False
                await self._tell("labelling", frozenset(), "replica stopping")
        if self._granted:
            lost, self._granted = self._granted, frozenset()
            await self._tell("lose", lost, "replica stopping")
        released = await asyncio.gather(*(c.release() for c in [*self.claims.values(),
                                                                *([self.labeller] if self.labeller else [])]))
        if self.membership is not None:
            await self.membership.remove()
        if any(released):
            logger.info(f"opd: ha: released {sum(released)} Lease(s) in {self.settings.namespace}: "
                        "the other replicas take over now")
        if self._notifier is not None:
            self._notifier.cancel()
            await asyncio.gather(self._notifier, return_exceptions=True)
            self._notifier = self._notices = None
