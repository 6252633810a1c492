"""Unit tests for opd.ha on a fake clock and an in-memory Lease store: client-go's election on one
Lease (acquire, expiry by the observer's clock, fencing by time from a renewal's start, release,
conflicts), the fair share of shards, and three or four coordinators sharing shards through the
store, checked at every step: never two replicas holding one shard at the same moment."""

from __future__ import annotations

import collections
import dataclasses
import socket
import uuid
from collections.abc import Iterator

import pytest
from helpers.leases import TIMINGS, Clock, Cut, Replicas, Store
from loguru import logger

from opd.ha.election import Claim
from opd.ha.leases import LEASES, Lease, LeaseRecord
from opd.ha.observing import Observations
from opd.ha.replica import LeaseWatcher, spread
from opd.ha.settings import HaSettings, default_identity
from opd.ha.shards import lease_names, lighter, member_key, members_name, plan, shard_name, shard_of, shares
from opd.settings import WatchingSettings


@pytest.fixture
def said() -> Iterator[list[str]]:
    """opd's log lines, as "LEVEL message"."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(f"{message.record['level'].name} {message.record['message']}"),
                      level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(sink)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store(clock)


def claim(store: Store, clock: Clock, identity: str, *, watch: bool = True, name: str = "opd") -> Claim:
    seen = Observations(clock)
    if watch:
        store.observers.append(seen)
    return Claim(name, identity, store, seen, TIMINGS, clock=clock, wall=clock.wall)


# -- one Lease ----------------------------------------------------------------------------------------------------


async def test_a_free_lease_is_created_and_held_until_the_renew_deadline(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    assert await a.step()
    record = store.leases["opd"].record
    assert (record.holder, record.duration, record.transitions) == ("a", 15, 0)
    assert record.acquired == record.renewed
    clock.now += TIMINGS.renew_deadline - 0.01
    assert a.held  # no request needed to know
    clock.now += 0.02
    assert not a.held  # fenced by time alone: no renewal within the deadline


async def test_the_fence_counts_from_the_renewals_start_not_its_answer(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    assert await a.step()
    clock.now += TIMINGS.retry_period
    store.takes = 3.0  # a slow server: each request lands 3 s after it was sent
    began = clock.now
    assert await a.step()  # one request: the renewal
    assert clock.now == began + 3.0
    assert a.deadline == began + TIMINGS.renew_deadline
    clock.now = began + TIMINGS.renew_deadline
    assert not a.held


async def test_a_held_lease_is_taken_only_after_the_observer_saw_it_unchanged_for_its_duration(
        store: Store, clock: Clock) -> None:
    a, b = claim(store, clock, "a"), claim(store, clock, "b")
    assert await a.step()
    assert not await b.step()
    for _ in range(3):  # the holder renews: each renewal restarts the observer's count
        clock.now += TIMINGS.retry_period
        assert await a.step()
        assert not await b.step()
    requests = sum(store.requests.values())
    clock.now += TIMINGS.lease_duration - 0.01  # a stops renewing (crashed)
    assert not b.free()
    assert not await b.step()
    assert sum(store.requests.values()) == requests  # nothing to ask: the observations say it is held
    clock.now += 0.02
    assert b.free()
    assert await b.step()
    record = store.leases["opd"].record
    assert (record.holder, record.transitions) == ("b", 1)
    assert not a.held  # long fenced by then
    assert not await a.step()  # and it cannot take it back: b renewed it just now


async def test_expiry_is_judged_by_when_the_observer_first_saw_the_record(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    assert await a.step()
    clock.now += 100.0  # the record is old by the holder's timestamps...
    late = claim(store, clock, "late", watch=False)  # ...but this replica sees it only now
    assert not await late.step()
    clock.now += TIMINGS.lease_duration - 0.01
    assert not await late.step()
    clock.now += 0.02
    assert await late.step()


async def test_release_clears_the_holder_and_another_takes_it_at_once(store: Store, clock: Clock) -> None:
    a, b = claim(store, clock, "a"), claim(store, clock, "b")
    assert await a.step()
    assert not await b.step()
    assert await a.release()
    assert not a.held
    assert store.leases["opd"].record.holder == ""
    assert b.free()
    assert await b.step()
    assert store.leases["opd"].record.transitions == 1


async def test_two_candidates_racing_for_an_expired_lease_one_wins(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    assert await a.step()
    c, d = claim(store, clock, "c", watch=False), claim(store, clock, "d", watch=False)
    for x in (c, d):
        x.seen.saw(store.leases["opd"])  # both saw a's last renewal
    clock.now += TIMINGS.lease_duration + 1  # a crashed
    assert c.free() and d.free()
    assert [await c.step(), await d.step()] == [True, False]  # d wrote with a's resourceVersion: 409
    assert store.leases["opd"].record.holder == "c"
    assert not d.free()  # d read it afresh


async def test_a_stale_observation_cannot_take_a_renewed_lease(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    stale = claim(store, clock, "stale", watch=False)
    assert await a.step()
    assert not await stale.step()  # reads it: held by a
    for _ in range(10):  # a keeps renewing; the stale replica's watch is dead and never hears of it
        clock.now += TIMINGS.retry_period
        assert await a.step()
    assert stale.free()  # by its own (stale) view the lease expired...
    assert not await stale.step()  # ...but its write carries the old resourceVersion: 409
    assert store.leases["opd"].record.holder == "a"
    assert a.held
    assert not stale.free()  # it read the lease afresh after the conflict


async def test_failing_renewals_keep_the_lease_only_until_the_deadline(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    assert await a.step()
    store.fail = lambda verb: OSError("connection reset") if verb == "update" else None
    for _ in range(4):
        clock.now += TIMINGS.retry_period
        assert await a.step()  # failed, but still within the deadline
    clock.now += TIMINGS.retry_period
    assert not await a.step()
    assert not a.held
    store.fail = lambda verb: None
    assert await a.step()  # nobody took it meanwhile: ours again
    assert store.leases["opd"].record.transitions == 0


async def test_a_lease_deleted_under_its_holder_is_created_again(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a", watch=False)  # no watch: it does not hear of the deletion
    assert await a.step()
    del store.leases["opd"]
    clock.now += TIMINGS.retry_period
    # The renewal finds nothing (404): anyone may create it now, so its holder stops at once...
    assert not await a.step()
    assert not a.held and "opd" not in store.leases
    clock.now += TIMINGS.retry_period
    assert await a.step()  # ...and the next step creates it again
    assert store.leases["opd"].record.holder == "a"


async def test_release_does_not_clear_a_lease_another_replica_took(store: Store, clock: Clock) -> None:
    a, b = claim(store, clock, "a", watch=False), claim(store, clock, "b")
    assert await a.step()
    clock.now += TIMINGS.lease_duration + 1  # a is cut off: b takes over
    assert await b.step()
    assert not await a.release()  # a's view says it holds it; the precondition says otherwise
    assert store.leases["opd"].record.holder == "b"


# -- shards -------------------------------------------------------------------------------------------------------


def test_shards_are_stable_and_even() -> None:
    uids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(12000)]
    first = [shard_of(uid, 12) for uid in uids]
    assert first == [shard_of(uid, 12) for uid in uids]
    counts = collections.Counter(first)
    assert set(counts) == set(range(12))
    assert all(800 <= n <= 1200 for n in counts.values()), counts
    assert all(shard_of(uid, 1) == 0 for uid in uids[:50])


def test_the_labellers_share_is_lighter_and_the_shares_still_add_up() -> None:
    # Balanced on events when every object is new (the labeller's 2 per object against ~3 per
    # object handled), at least one shard, never more than a fair share; with fewer than three
    # shards per replica, the smaller fair share (a shard is too coarse a piece to take off).
    assert lighter(12, 1) == 12
    assert lighter(12, 2) == 2 and lighter(6, 2) == 1
    assert lighter(12, 3) == 1 and lighter(12, 4) == 1
    assert lighter(6, 3) == 2 and lighter(7, 3) == 2 and lighter(2, 3) == 0
    assert shares(["a", "b", "c"], 12, light="b") == {"a": 6, "b": 1, "c": 5}
    assert shares(["a", "b"], 12, light="a") == {"a": 2, "b": 10}
    assert shares(["a", "b"], 12, light="z") == {"a": 6, "b": 6}  # not a member: no lighter share
    for n in range(1, 9):
        for s in range(1, 40):
            members = [f"r{i}" for i in range(n)]
            share = shares(members, s, light="r0")
            assert sum(share.values()) == s
            others = [v for m, v in share.items() if m != "r0"]
            assert n == 1 or (share["r0"] <= s // n and share["r0"] <= min(others) and max(others) - min(others) <= 1)
    # A replica's plan follows: the labeller releases what it holds above its lighter share.
    holders = dict.fromkeys(range(6), "a") | dict.fromkeys(range(6, 12), "b")
    assert plan("a", ["a", "b", "c"], holders, 12, light="a").release  # c is short and nothing is free
    assert plan("c", ["a", "b", "c"], {}, 12, light="a").want == 5  # b takes 6, c 5 of the 11 left


def test_fair_shares_add_up_and_differ_by_one_at_most() -> None:
    for n in range(1, 9):
        for s in (1, 5, 12, 64):
            share = shares([f"r{i}" for i in range(n)], s)
            assert sum(share.values()) == s
            assert max(share.values()) - min(share.values()) <= 1
    assert shares(["b", "a", "c"], 10) == {"a": 4, "b": 3, "c": 3}  # the extra goes by identity order


def test_a_lone_replica_claims_every_shard() -> None:
    todo = plan("a", ["a"], {}, 6)
    assert (todo.release, sorted(todo.claim), todo.want) == ((), list(range(6)), 6)


def test_a_newcomer_gets_what_the_others_release_and_only_that() -> None:
    holders = {k: ("a" if k < 6 else "b") for k in range(12)}
    members = ["a", "b", "c"]
    released = [plan(m, members, holders, 12).release for m in ("a", "b")]
    assert [len(r) for r in released] == [2, 2]
    assert not plan("c", members, holders, 12).want  # nothing free yet: it waits for the releases
    for key in [*released[0], *released[1]]:
        holders.pop(key)
    todo = plan("c", members, holders, 12)
    assert todo.want == 4 and set(todo.claim) == {*released[0], *released[1]}
    assert [plan(m, members, holders, 12).want for m in ("a", "b")] == [0, 0]  # c is short: they leave them


def test_shards_of_a_replica_gone_go_to_those_short_of_their_share() -> None:
    holders = {k: "abc"[k % 3] for k in range(12)}
    for key in [k for k, h in holders.items() if h == "c"]:
        del holders[key]  # c's leases expired
    wants = {m: plan(m, ["a", "b"], holders, 12) for m in ("a", "b")}
    assert [wants[m].want for m in ("a", "b")] == [2, 2]
    assert wants["a"].claim[0] != wants["b"].claim[0]  # they start at different free shards


def test_a_member_that_others_do_not_see_yet_makes_no_one_release_more_than_needed() -> None:
    holders = {k: "a" for k in range(12)}
    # a sees b and c; b sees only a and itself: b is short of 6, a of nothing
    todo = plan("a", ["a", "b", "c"], holders, 12)
    assert len(todo.release) == 8
    todo = plan("a", ["a", "b"], {**holders, **{k: "" for k in range(6)}}, 12)
    assert not todo.release  # 6 free already cover b's share


def test_a_member_never_seen_renewing_does_not_hold_back_a_free_shard() -> None:
    # c crashed; its member Lease lingers until d has watched it for lease_duration: d counts it
    # in the shares, but only a member seen renewing is waited for to take a free shard.
    holders = {0: "a", 1: "a", 2: "b", 3: "b", 4: "d"}
    members = ["a", "b", "c", "d"]
    assert plan("d", members, holders, 6).want == 0  # c is short: d would wait for it...
    todo = plan("d", members, holders, 6, active=["a", "b", "d"])
    assert (todo.want, todo.claim) == (1, (5,))  # ...but c never renewed while d watched


def test_names() -> None:
    assert shard_name("opd", 3) == "opd-3"
    assert members_name("opd") == "opd-members"
    assert member_key("host-1") != member_key("host-2")
    assert len(member_key("any identity at all").split("/")[1]) <= 63


def test_every_lease_of_a_group_is_watched_by_its_name() -> None:
    assert lease_names("leader", "grp", 1) == ["grp"]
    assert lease_names("shards", "grp", 3) == ["grp-0", "grp-1", "grp-2", "grp-labeller", "grp-members"]
    watcher = LeaseWatcher(None, LEASES, "ns", settings=WatchingSettings(), deliver=lambda *_: None,  # type: ignore[arg-type]
                           name="grp-1")
    assert watcher._query() == {"fieldSelector": "metadata.name=grp-1"}
    assert str(watcher) == "Lease ns/grp-1"


@pytest.mark.parametrize(("shards", "streams", "per_minute"), [(12, 14, 3.1), (32, 34, 7.5)])
def test_the_watches_of_a_group_cost_what_the_readme_says_idle(shards: int, streams: int, per_minute: float) -> None:
    """README (Replicas, what it costs): S + 2 streams (the labeller's Lease too), re-opened at their
    server timeouts, spread from 240 to 300 s so that they do not come at once: about (S + 2) / 4.5
    requests a minute."""
    names = lease_names("shards", "opd", shards)
    base = WatchingSettings()
    timeouts = [spread(base, i, len(names)).server_timeout for i in range(len(names))]
    assert len(timeouts) == streams and len(set(timeouts)) == streams  # none re-opened together
    assert base.server_timeout * 0.8 <= min(timeouts) and max(timeouts) == base.server_timeout
    assert all(t < base.inactivity_timeout for t in timeouts)  # the backstop stays past the server's bound
    rate = sum(60 / t for t in timeouts)
    print(f"S={shards}: {streams} watch streams, {rate:.1f} watch requests/min idle, "
          f"{60 / TIMINGS.retry_period * shards:.0f} renewals/min")
    assert round(rate, 1) == per_minute


# -- coordinators sharing shards ----------------------------------------------------------------------------------


async def test_three_replicas_share_twelve_shards_then_survive_a_crash_and_a_newcomer(
        store: Store, clock: Clock) -> None:
    replicas = Replicas(store, clock, 12)
    for identity in ("a", "b", "c"):
        replicas.add(identity)
    await replicas.rounds(20)
    assert replicas.held() == {"a": 4, "b": 4, "c": 4}

    replicas.crash("c")
    crashed = clock.now
    await replicas.rounds(8)
    assert replicas.held() == {"a": 4, "b": 4}  # c's leases have not expired yet
    owned_again = None
    for _ in range(40):
        await replicas.rounds(1)
        if sum(replicas.held().values()) == 12:
            owned_again = clock.now - crashed
            break
    assert owned_again is not None and owned_again <= TIMINGS.lease_duration + TIMINGS.retry_period + 1
    assert replicas.held() == {"a": 6, "b": 6}

    before = {identity: len(ops.told) for identity, (_, ops) in replicas.running.items()}
    replicas.add("d")  # c's member Lease is still there: d counts it until it expires by its clock
    await replicas.rounds(10)
    assert replicas.held() == {"a": 4, "b": 4, "d": 4}
    _, d_ops = replicas.running["d"]
    assert all(kind == "gain" for kind, _ in d_ops.told)
    told = [replicas.running[i][1].told[before[i]:] for i in ("a", "b")]
    drained = [key for steps in told for kind, keys in steps if kind == "drain" for key in keys]
    lost = [key for steps in told for kind, keys in steps if kind == "lose" for key in keys]
    assert sorted(drained) == sorted(lost) and len(drained) == 4  # exactly what d needed, each drained first
    await replicas.stop()


async def test_a_stopping_replica_releases_its_shards_and_the_others_take_them_at_once(
        store: Store, clock: Clock) -> None:
    replicas = Replicas(store, clock, 6)
    for identity in ("a", "b"):
        replicas.add(identity)
    await replicas.rounds(20)
    assert replicas.held() == {"a": 3, "b": 3}
    b, _ = replicas.running["b"]
    await b.stop()
    replicas.crash("b")
    assert member_key("b") not in store.leases[members_name("opd")].annotations  # its member entry removed
    assert member_key("a") in store.leases[members_name("opd")].annotations
    assert all(store.leases[shard_name("opd", k)].record.holder in ("", "a") for k in range(6))
    await replicas.rounds(2)  # well within lease_duration: released leases need no waiting
    assert replicas.held() == {"a": 6}
    await replicas.stop()


async def test_leader_mode_one_leads_the_other_stands_by_and_takes_over(store: Store, clock: Clock) -> None:
    replicas = Replicas(store, clock, 1)
    a = replicas.add("a", mode="leader")
    b = replicas.add("b", mode="leader")
    await replicas.rounds(10)
    assert (a.state().role, b.state().role) == ("leader", "standby")
    assert a.key_of("any-uid") == b.key_of("other") == 0
    requests = sum(store.requests.values())
    await replicas.rounds(8)  # 4 s: the leader renews twice; the standby only watches
    assert sum(store.requests.values()) - requests == 2
    await a.stop()
    replicas.crash("a")
    await replicas.rounds(1)
    assert b.state().role == "leader"
    assert replicas.running["b"][1].told == [("gain", frozenset({0}))]
    await replicas.stop()


async def test_a_leader_cut_off_is_fenced_before_the_standby_takes_over(store: Store, clock: Clock) -> None:
    replicas = Replicas(store, clock, 1)
    way = Cut(store)
    a = replicas.add("a", mode="leader", store=way)
    b = replicas.add("b", mode="leader")
    await replicas.rounds(4)
    assert a.state().role == "leader"
    way.cut = True
    cut = clock.now
    fenced_at = took_at = None
    for _ in range(100):
        await replicas.rounds(1, step=0.25)
        if fenced_at is None and not a.holds(0):
            fenced_at = clock.now
        if took_at is None and b.holds(0):
            took_at = clock.now
    assert fenced_at is not None and took_at is not None
    assert fenced_at - cut <= TIMINGS.renew_deadline  # from its last renewal's start, before the cut
    assert took_at - fenced_at >= TIMINGS.lease_duration - TIMINGS.renew_deadline - 0.5
    assert ("lose", frozenset({0})) in replicas.running["a"][1].told
    way.cut = False
    await replicas.rounds(10)
    assert (a.state().role, b.state().role) == ("standby", "leader")  # a stays fenced: b renews
    await replicas.stop()


async def test_a_replica_without_the_api_does_not_try_every_shard_at_every_step(store: Store, clock: Clock) -> None:
    replicas = Replicas(store, clock, 12)
    way = Cut(store)
    way.cut = True
    lone = replicas.add("a", store=way)
    for _ in range(5):
        await lone.step()
        clock.now += TIMINGS.retry_period
    assert way.attempts <= 5 * 2  # its member Lease (and one shard at most) per step, not 13
    way.cut = False
    await replicas.rounds(3 + 4)  # its entry written, it settles for a retry_period (4 rounds) before claiming
    assert replicas.held() == {"a": 12}
    await replicas.stop()



# -- identities, records from outside (issue #18) -----------------------------------------------------------------


def test_the_default_identity_is_the_pods_name_when_given_else_random() -> None:
    assert default_identity({"OPD_HA_IDENTITY": "opd-7d9c-x2x"}) == "opd-7d9c-x2x"
    one, two = default_identity({}), default_identity({"OPD_HA_IDENTITY": " "})
    assert one != two  # two containers with one hostname and PID 1 still differ
    host, _, random = one.partition("_")
    assert host == socket.gethostname() and uuid.UUID(random)
    assert HaSettings(identity="x" * 254).problems()[0][0] == "identity"


async def test_two_replicas_sharing_an_identity_never_both_hold(store: Store, clock: Clock) -> None:
    """The issue's case: with one identity, both held the Lease in 60 of 60 steps (each took the
    other's record for its own). Now the one that did not write it stands by."""
    a, b = claim(store, clock, "same"), claim(store, clock, "same")
    both = held = 0
    for _ in range(60):
        for one in (a, b):
            if one.renewed_at is None or clock.now - one.renewed_at >= TIMINGS.retry_period:
                await one.step()
        both += a.held and b.held
        held += a.held or b.held
        clock.now += 0.5
    assert both == 0 and held == 60
    assert a.held and not b.held  # the first one keeps it: the second does not fight


async def test_a_replica_that_sees_its_identity_renewed_elsewhere_fences_and_says_so(
        store: Store, clock: Clock, said: list[str]) -> None:
    replicas = Replicas(store, clock, 1)
    a = replicas.add("a", mode="leader")
    await replicas.rounds(2)
    assert a.holds(0)
    current = store.leases["opd"]  # another process with identity "a" renews it (an older opd, a copy)
    renewed = dataclasses.replace(current.record, renewed="2030-01-01T00:00:00.000000Z")
    store._store(dataclasses.replace(current, record=renewed))
    assert not a.holds(0)  # at once, before any step
    await replicas.rounds(1)
    lines = [line for line in said if "renewed by another process with this replica's identity 'a'" in line]
    assert len(lines) == 1 and "ERROR" in lines[0]
    assert ("lose", frozenset({0})) in replicas.running["a"][1].told
    await replicas.rounds(4)  # it does not fight: the record stays the other process's
    assert store.leases["opd"].record.renewed == "2030-01-01T00:00:00.000000Z"
    assert not a.holds(0)
    await replicas.stop()


async def test_a_holder_cleared_by_hand_fences_the_old_holder_before_another_takes_it(
        store: Store, clock: Clock) -> None:
    replicas = Replicas(store, clock, 1)
    a = replicas.add("a", mode="leader")
    await replicas.rounds(2)
    b = replicas.add("b", mode="leader")
    await replicas.rounds(2)
    assert a.holds(0) and not b.holds(0)
    current = store.leases["opd"]
    store._store(dataclasses.replace(current, record=dataclasses.replace(current.record, holder="")))
    assert not a.holds(0)  # as the watch delivers it, not a retry_period later
    await b.step()  # b takes it at once (free)
    assert b.holds(0) and not a.holds(0)
    await replicas.rounds(6)
    assert [c.holds(0) for c in (a, b)].count(True) == 1
    await replicas.stop()


async def test_a_ghost_holder_claiming_int32_max_seconds_is_replaced_within_twice_the_lease_duration(
        store: Store, clock: Clock, said: list[str]) -> None:
    """A Lease edited by hand (``leaseDurationSeconds: 2147483647``, holder "ghost") froze failover
    for good: the record's claim was honoured whole."""
    store._store(Lease("opd", LeaseRecord(holder="ghost", duration=2**31 - 1, renewed="2024-01-01T00:00:00Z",
                                          transitions=2**31 - 1)))
    replicas = Replicas(store, clock, 1)
    b = replicas.add("b", mode="leader")
    began = clock.now
    while not b.holds(0) and clock.now - began < 10 * TIMINGS.lease_duration:
        await replicas.rounds(1, step=0.25)
    assert b.holds(0)
    assert clock.now - began <= 2 * TIMINGS.lease_duration
    assert store.leases["opd"].record.transitions == 0  # int32 wraps instead of making every write invalid
    assert any("claims 2147483647s for 'ghost'" in line for line in said)
    await replicas.stop()


async def test_a_lease_deleted_under_its_holder_fences_it_as_the_watch_says_so(store: Store, clock: Clock) -> None:
    a = claim(store, clock, "a")
    assert await a.step()
    await store.delete(store.leases["opd"], timeout=1)
    assert not a.held
