"""Shards by KEP-5866's function (64-bit FNV-1a of the uid in S equal ranges), and the split at
start and under a backlog (issue #21): replicas on a fake clock and the simulated Lease API, each
with a real ``opd.ha.View`` over a model of an operation's queue (objects queued, in process,
done), so that a hand-over goes through the same drain, disown and fence as in a process."""

from __future__ import annotations

import collections
import json
import random
import uuid
from collections.abc import Callable, Iterator

import pytest
from helpers.leases import TIMINGS, Clock, Store
from loguru import logger

from opd.ha.coordination import SETTLE_MOST, Coordinator
from opd.ha.grants import View
from opd.ha.leases import Lease
from opd.ha.observing import Observations
from opd.ha.settings import HaSettings
from opd.ha.shards import (
    HASH,
    SPACE,
    bounds,
    fnv1a_64,
    hex_bound,
    member_key,
    members_name,
    range_of,
    selector,
    shard_of,
)

# -- the function -------------------------------------------------------------------------------------------------


def test_fnv1a_64_gives_the_published_vectors() -> None:
    # The FNV reference's test vectors for FNV-1a 64 (offset basis, 'a', 'foobar').
    assert fnv1a_64("") == 0xCBF29CE484222325
    assert fnv1a_64("a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64("foobar") == 0x85944171F73967E8
    # A uid is hashed as its text (UTF-8 bytes), as the API server hashes metadata.uid.
    uid = "6f1e6a7c-3d2b-4c1a-9e8f-0123456789ab"
    expected = 0xCBF29CE484222325
    for byte in uid.encode():
        expected = ((expected ^ byte) * 0x100000001B3) % 2**64
    assert fnv1a_64(uid) == expected
    assert shard_of(uid, 6) == expected * 6 // 2**64


@pytest.mark.parametrize("shards", [1, 2, 3, 6, 7, 12, 1000, 1024])
def test_the_ranges_tile_the_hash_space_and_each_holds_exactly_its_shards_hashes(shards: int) -> None:
    ranges = [bounds(i, shards) for i in range(shards)]
    assert ranges[0][0] == 0 and ranges[-1][1] == SPACE
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(shards - 1))  # contiguous, no overlap
    widths = {end - start for start, end in ranges}
    assert max(widths) - min(widths) <= 1  # equal ranges
    for i, (start, end) in enumerate(ranges):
        assert range_of(start, shards) == i and range_of(end - 1, shards) == i
        if start:
            assert range_of(start - 1, shards) == i - 1
    with pytest.raises(ValueError, match=r"shard 6 is not one of 0\.\.5"):
        bounds(6, 6)


def test_range_bounds_are_hex_strings_as_a_filtering_server_takes_them() -> None:
    # KEP-5866: [start, end), '0x' and 16 lowercase hex digits; the last end is 2^64 (17 digits).
    assert selector(0, 1) == "shardRange(object.metadata.uid, '0x0000000000000000', '0x10000000000000000')"
    assert selector(0, 2) == "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"
    assert selector(1, 2) == "shardRange(object.metadata.uid, '0x8000000000000000', '0x10000000000000000')"
    assert selector(1, 3) == "shardRange(object.metadata.uid, '0x5555555555555556', '0xaaaaaaaaaaaaaaab')"
    for shards in (3, 12, 1024):
        for i in range(shards):
            start, end = (hex_bound(b) for b in bounds(i, shards))
            assert start.startswith("0x") and len(start) == 18 and start == start.lower()
            assert len(end) == (19 if i == shards - 1 else 18)
            assert int(start, 16) == bounds(i, shards)[0]


def test_server_uids_spread_evenly() -> None:
    rng = random.Random(21)
    uids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12000)]  # as the API server makes
    for shards, low, high in ((3, 3800, 4200), (12, 880, 1120)):
        counts = collections.Counter(shard_of(uid, shards) for uid in uids)
        assert set(counts) == set(range(shards))
        assert all(low <= n <= high for n in counts.values()), counts


# -- a model of the operations: a queue of objects ----------------------------------------------------------------


class World:
    """The objects, and what was done to them: each handler run (by whom), each outcome written."""

    def __init__(self, count: int) -> None:
        rng = random.Random(count)
        self.uids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]
        self.runs: list[tuple[str, str]] = []  # (replica, uid), at the handler's start
        self.written: dict[str, str] = {}  # uid -> replica whose outcome (the marker) was written

    def per_replica(self) -> collections.Counter[str]:
        return collections.Counter(who for who, _ in self.runs)


class Queue:
    """An operation's surface as a View uses it (relist, busy, spawned, stop_spawned, disown): objects
    listed when a key is gained, queued, and each round ``rate`` of them taken into process; what was
    in process finishes the round after (its outcome written if the view still lets it write)."""

    def __init__(self, name: str, world: World, rate: int) -> None:
        self.name, self.world, self.rate = name, world, rate
        self.view: View | None = None
        self.queued: collections.deque[str] = collections.deque()
        self.active: set[str] = set()
        self.dropped_at_once: list[str] = []  # queued objects disowned by a hand-over

    def relist(self) -> None:  # a LIST: objects not owned are dropped as they arrive; marked ones need nothing
        assert self.view is not None
        for uid in self.world.uids:
            if uid not in self.world.written and uid not in self.active and uid not in self.queued \
                    and self.view.owns(uid):
                self.queued.append(uid)

    def busy(self, uids: Callable[[str], bool]) -> frozenset[str]:
        return frozenset(uid for uid in self.active if uids(uid))

    def spawned(self, uids: Callable[[str], bool]) -> frozenset[str]:
        return frozenset()

    async def stop_spawned(self, uids: Callable[[str], bool], reason: str) -> None:
        pass

    async def disown(self, uids: Callable[[str], bool], reason: str) -> None:
        gone = [uid for uid in self.queued if uids(uid)]
        self.dropped_at_once += gone
        self.queued = collections.deque(uid for uid in self.queued if not uids(uid))

    def finish(self, uids: Callable[[str], bool] = lambda uid: True) -> None:
        assert self.view is not None
        for uid in [u for u in self.active if uids(u)]:
            self.active.discard(uid)
            if self.view.may_write(uid):
                self.world.written[uid] = self.name

    def work(self) -> None:
        """One round: what was in process finishes, the next ones start."""
        assert self.view is not None
        self.finish()
        while self.queued and len(self.active) < self.rate:
            uid = self.queued.popleft()
            if self.view.owns(uid) and uid not in self.world.written:
                self.world.runs.append((self.name, uid))
                self.active.add(uid)


class Operations:
    """The coordinator's listener, as opd.ha.Replica is one: through one View to one Queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.view: View | None = None
        self.told: list[tuple[str, frozenset[int], float]] = []
        self.clock: Clock | None = None

    def _say(self, kind: str, keys: frozenset[int]) -> None:
        self.told.append((kind, keys, self.clock.now if self.clock else 0.0))

    async def gain(self, keys: frozenset[int], reason: str) -> None:
        self._say("gain", keys)
        assert self.view is not None
        await self.view.gain(keys)

    async def drain(self, keys: frozenset[int], reason: str) -> None:
        self._say("drain", keys)
        assert self.view is not None
        await self.view.drain(keys, reason)

    async def lose(self, keys: frozenset[int], reason: str) -> None:
        self._say("lose", keys)
        assert self.view is not None
        await self.view.lose(keys, reason)

    async def drained(self, keys: frozenset[int], timeout: float) -> bool:
        assert self.view is not None
        view = self.view
        self.queue.finish(lambda uid: view.keys.key_of(uid) in keys)  # in process: they finish (and write)
        return not await view.busy(keys)


class Group:
    def __init__(self, store: Store, clock: Clock, world: World, shards: int, rate: int) -> None:
        self.store, self.clock, self.world, self.shards, self.rate = store, clock, world, shards, rate
        self.running: dict[str, tuple[Coordinator, Operations, Queue]] = {}
        self.most: dict[str, int] = collections.defaultdict(int)  # the most shards each held at once

    def add(self, identity: str, filtering: str = "client") -> Coordinator:
        seen = Observations(self.clock)
        self.store.observers.append(seen)
        for lease in self.store.leases.values():
            seen.saw(lease)
        queue = Queue(identity, self.world, self.rate)
        ops = Operations(queue)
        ops.clock = self.clock
        settings = HaSettings(mode="shards", lease="opd", namespace="test", identity=identity, shards=self.shards)
        coordinator = Coordinator(settings, self.store, seen, ops, clock=self.clock, wall=self.clock.wall)
        coordinator.filtering = filtering  # decided at start, before the first step (opd.ha.replica)
        view = View(coordinator)
        view.attach(queue)  # type: ignore[arg-type]  # the surface a View uses of an Operation
        ops.view = queue.view = view
        self.running[identity] = (coordinator, ops, queue)
        return coordinator

    async def rounds(self, n: int, step: float = 0.5) -> None:
        for _ in range(n):
            for identity, (coordinator, _, _) in list(self.running.items()):
                await coordinator.step()
                await coordinator.settled()
                self.most[identity] = max(self.most[identity], len(coordinator.granted()))
                self.check()
            for _, _, queue in self.running.values():
                queue.work()
            self.clock.now += step

    def check(self) -> None:
        holders = collections.defaultdict(list)
        for identity, (coordinator, _, _) in self.running.items():
            for key in range(self.shards):
                if coordinator.holds(key):
                    holders[key].append(identity)
        assert all(len(v) == 1 for v in holders.values()), holders

    def held(self) -> dict[str, int]:
        return {i: len(c.granted()) for i, (c, _, _) in self.running.items()}

    async def stop(self) -> None:
        for coordinator, _, _ in self.running.values():
            await coordinator.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store(clock)


@pytest.fixture
def said() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(sink)


def _exactly_once(world: World) -> None:
    runs = collections.Counter(uid for _, uid in world.runs)
    assert set(runs) == set(world.uids), f"{len(set(world.uids) - set(runs))} never run"
    assert max(runs.values()) == 1, [uid for uid, n in runs.items() if n > 1][:5]
    assert set(world.written) == set(world.uids)


# -- the split at start -------------------------------------------------------------------------------------------


async def test_replicas_started_together_over_existing_objects_split_them_without_a_hand_over(
        store: Store, clock: Clock) -> None:
    """The issue's case: 3 replicas of 6 shards started together over 900 existing objects; the first
    took every shard before the others' entries existed and handled everything (900 / 0 / 0). Each
    now settles first: nobody holds more than its share at any moment, nothing is handed over."""
    world = World(900)
    group = Group(store, clock, world, shards=6, rate=100)  # 200 objects/s each: alone, 900 in 4.5 s
    group.add("a")
    await group.rounds(2)  # the others start a second and two seconds later
    group.add("b")
    await group.rounds(2)
    group.add("c")
    await group.rounds(40)
    assert group.held() == {"a": 2, "b": 2, "c": 2}
    assert dict(group.most) == {"a": 2, "b": 2, "c": 2}  # never beyond the fair share
    assert all(kind == "gain" for _, ops, _ in group.running.values() for kind, _, _ in ops.told)
    _exactly_once(world)
    split = group.world.per_replica()
    assert all(0.15 <= split[r] / 900 <= 0.55 for r in "abc"), split
    await group.stop()


async def test_with_labels_the_labeller_takes_a_lighter_share_from_the_start_and_when_the_role_moves(
        store: Store, clock: Clock) -> None:
    """Label filtering: the replica that holds the labeller role receives every new object's two
    events besides its shards' (it held a full share before: 60 % of the events of 3 replicas). It
    takes the role before it claims, so it claims its lighter share at once: no shard is claimed and
    handed over again at start. When it stops, another takes the role and the shards move to fit."""
    world = World(1200)
    group = Group(store, clock, world, shards=12, rate=100)
    for identity in "abc":
        group.add(identity, filtering="labels")
    await group.rounds(40)
    labellers = [i for i, (c, _, _) in group.running.items() if c.labels()]
    assert len(labellers) == 1
    first = labellers[0]
    held = group.held()
    assert held[first] == 1 and sorted(held.values()) == [1, 5, 6]
    assert group.most[first] == 1  # never more than its share: nothing claimed to be handed over
    assert all(kind in ("gain", "labelling") for _, ops, _ in group.running.values() for kind, _, _ in ops.told)
    _exactly_once(world)
    split = world.per_replica()
    assert all(split[r] for r in "abc") and max(split.values()) <= 0.6 * 1200, split
    coordinator, _, _ = group.running.pop(first)
    await coordinator.stop()  # its Leases are released: the role and its shard go to the others at once
    await group.rounds(40)
    held = group.held()
    (second,) = [i for i, (c, _, _) in group.running.items() if c.labels()]
    assert held == {second: 2, ({"a", "b", "c"} - {first, second}).pop(): 10}
    await group.stop()


async def test_with_few_shards_per_replica_the_labeller_keeps_a_fair_share(store: Store, clock: Clock) -> None:
    """6 shards, 3 replicas: 2 each, the labeller too (a lighter share would be 1/2/3: the split at
    start would leave the labeller a sixth of the objects and one other half of them)."""
    world = World(900)
    group = Group(store, clock, world, shards=6, rate=100)
    for identity in "abc":
        group.add(identity, filtering="labels")
    await group.rounds(40)
    assert sum(c.labels() for c, _, _ in group.running.values()) == 1
    assert group.held() == {"a": 2, "b": 2, "c": 2}
    _exactly_once(world)
    split = world.per_replica()
    assert all(0.15 <= split[r] / 900 <= 0.55 for r in "abc"), split
    await group.stop()


async def test_a_lone_replica_claims_everything_after_one_retry_period(store: Store, clock: Clock,
                                                                       said: list[str]) -> None:
    world = World(50)
    group = Group(store, clock, world, shards=6, rate=100)
    a = group.add("a")
    began = clock.now
    while not group.held()["a"]:
        await group.rounds(1, step=0.25)
        assert clock.now - began <= SETTLE_MOST * TIMINGS.retry_period
    waited = clock.now - began
    assert TIMINGS.retry_period <= waited <= TIMINGS.retry_period + 0.5
    assert a.settled_at is not None
    await group.rounds(4)
    assert group.held() == {"a": 6}
    assert any("opd: ha: settling: 1 replica(s) seen; claiming shards in 2s" in line for line in said)
    await group.stop()


async def test_the_settle_period_is_bounded_while_members_keep_appearing(store: Store, clock: Clock) -> None:
    world = World(10)
    group = Group(store, clock, world, shards=12, rate=10)
    group.add("r00")
    began = clock.now
    first_claim = None
    for i in range(1, 12):  # a new member every second, for 11 s
        for _ in range(2):
            await group.rounds(1)
            if first_claim is None and group.held()["r00"]:
                first_claim = clock.now - began
        group.add(f"r{i:02d}")
    # Its first claim came in the step at began + SETTLE_MOST retry periods (seen after that step).
    assert first_claim is not None and first_claim <= SETTLE_MOST * TIMINGS.retry_period + 0.5
    await group.rounds(30)
    assert sorted(group.held().values()) == [1] * 12
    await group.stop()


# -- the hand-over under a backlog --------------------------------------------------------------------------------


async def test_a_shard_leaves_a_busy_replica_at_once_for_what_is_queued(store: Store, clock: Clock) -> None:
    """One replica holds every shard over a backlog (20 objects/s, 900 objects: 45 s of work); a second
    joins: the shards move within seconds, not when the backlog is done; what was queued of them is
    dropped at once, what was in process finishes (and writes) on the first; nothing runs twice."""
    world = World(900)
    group = Group(store, clock, world, shards=6, rate=10)
    group.add("a")
    await group.rounds(10)  # 5 s: settled, 6 shards, working
    assert group.held() == {"a": 6}
    _, a_ops, a_queue = group.running["a"]
    assert 50 <= len(world.runs) < 100 and len(a_queue.queued) > 800
    joined = clock.now
    group.add("b")
    first_run_of_b = None
    while first_run_of_b is None and clock.now - joined < 60:
        await group.rounds(1)
        if any(who == "b" for who, _ in world.runs):
            first_run_of_b = clock.now - joined
    assert first_run_of_b is not None and first_run_of_b <= SETTLE_MOST * TIMINGS.retry_period + 2.0
    assert len(world.written) < 300  # the backlog was far from done
    assert group.held() == {"a": 3, "b": 3}
    moved = {k for kind, keys, _ in a_ops.told if kind == "lose" for k in keys}
    assert len(moved) == 3
    a, _, _ = group.running["a"]
    of_moved = [uid for uid in a_queue.dropped_at_once if a.key_of(uid) in moved]
    assert len(of_moved) > 300  # queued on a: gone from its queue when the hand-over began
    assert not [uid for uid in a_queue.queued if a.key_of(uid) in moved]
    drained_at = min(at for kind, _, at in a_ops.told if kind == "drain")
    lost_at = max(at for kind, _, at in a_ops.told if kind == "lose")
    assert lost_at - drained_at <= 1.0  # it waited for what was in process only
    await group.rounds(200)
    _exactly_once(world)
    split = world.per_replica()
    assert split["b"] >= 300, split
    await group.stop()


# -- replicas that hash otherwise (an older opd) ------------------------------------------------------------------


def _old_entry(store: Store, identity: str, clock: Clock) -> None:
    """An older opd's member entry (no "hash": sha1 shards), written as it renews."""
    value = json.dumps({"identity": identity, "shards": 6, "renewed": clock.wall().isoformat()})
    name = members_name("opd")
    if name not in store.leases:
        store._store(Lease(name))
    current = store.leases[name]
    store._store(Lease(name, annotations={**current.annotations, member_key(identity): value},
                       version=current.version))


async def test_a_replica_shares_no_shard_with_one_that_hashes_otherwise(store: Store, clock: Clock,
                                                                        said: list[str]) -> None:
    """After an upgrade from sha1 shards, one object is in two shards: an old and a new replica
    holding them would both run it. The new one holds nothing and keeps no member entry while an old
    one renews (said once), so the old ones keep every shard; it hands over what it held when one
    appears, and takes its share once the old ones are gone."""
    world = World(30)
    group = Group(store, clock, world, shards=6, rate=10)
    group.add("new")
    await group.rounds(10)
    assert group.held() == {"new": 6}
    for _ in range(20):  # an old replica appears and renews its entry every retry period
        _old_entry(store, "old", clock)
        await group.rounds(4)
        assert group.held()["new"] == 0 or _ < 2
    assert group.held() == {"new": 0}
    assert member_key("new") not in store.leases[members_name("opd")].annotations  # the old ones see only themselves
    _, ops, _ = group.running["new"]
    assert sorted(k for kind, keys, _ in ops.told if kind == "lose" for k in keys) == list(range(6))
    errors = [line for line in said if line.startswith("ERROR") and "puts objects in shards by 'sha1'" in line]
    assert len(errors) == 1, errors
    gone = clock.now  # the old replica stops renewing: its entry expires
    while group.held()["new"] < 6:
        await group.rounds(1)
        assert clock.now - gone <= TIMINGS.lease_duration + 2 * TIMINGS.retry_period
    entries = store.leases[members_name("opd")].annotations
    assert json.loads(entries[member_key("new")])["hash"] == HASH
    await group.stop()
