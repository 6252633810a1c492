"""Lease records as hostile input (issue #18): whatever a Lease says — durations of any size or
type, absurd times, no holder, wrong types, huge strings, odd annotations — reading it raises
nothing and yields a bounded record; the coordination steps raise nothing; and a candidate
replaces a holder that stops renewing within 2 x its own lease_duration (fake clock and store, as
in tests/helpers/leases.py). 1,300 cases at most in all, about 10 s."""

from __future__ import annotations

import dataclasses
from typing import Any

from helpers.leases import TIMINGS, Clock, Replicas, Store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opd.ha.leases import MAX_ENTRIES, MAX_INT32, MAX_VALUE, Lease, LeaseRecord
from opd.ha.observing import Observations
from opd.ha.shards import members_name

HUGE = "h" * 300_000  # a string far past every bound (one, shared: generating it per case is slow)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.just(HUGE),
    st.sampled_from(["2147483647", "-1", "1e9", "2024-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                     "0000-00-00T00:00:00Z", "", " ", "ghost"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
specs = st.one_of(
    st.fixed_dictionaries({}, optional={
        "holderIdentity": st.one_of(st.sampled_from(["ghost", "", "b", "a"]), values),
        "leaseDurationSeconds": st.one_of(st.sampled_from([2**31 - 1, 0, -5, 1, 15, 10**12]), values),
        "renewTime": values, "acquireTime": values,
        "leaseTransitions": st.one_of(st.sampled_from([2**31 - 1, -1, 2**63]), values),
    }),
    values,
)
pairs = st.one_of(st.dictionaries(st.one_of(st.text(max_size=20), st.sampled_from(["members.opd.dev/x", HUGE])),
                                  st.one_of(st.text(max_size=40), values, st.just(HUGE)), max_size=5), values)
bodies = st.one_of(
    st.fixed_dictionaries({"metadata": st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.just("opd"), values), "resourceVersion": st.one_of(st.just("7"), values),
        "labels": pairs, "annotations": pairs}), "spec": specs}),
    values,
)


@settings(max_examples=600, deadline=None)
@given(body=bodies)
def test_any_body_reads_as_a_bounded_lease(body: Any) -> None:
    lease = Lease.from_body(body)
    record = lease.record
    assert 0 <= record.duration <= MAX_INT32 and 0 <= record.transitions <= MAX_INT32
    assert isinstance(record.holder, str) and len(record.holder) <= 160
    assert record.renewed is None or len(record.renewed) <= 40
    assert len(lease.name) <= 253 and len(lease.version) <= 32
    assert len(lease.annotations) <= MAX_ENTRIES and all(len(v) <= MAX_VALUE for v in lease.annotations.values())
    Lease(lease.name or "x", record).body("ns")  # and it can be written back
    seen = Observations(Clock())
    for kind in ("ADDED", "MODIFIED", "DELETED"):
        seen.deliver(kind, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs, delivered=st.booleans())
async def test_a_leader_that_stops_renewing_is_replaced_within_twice_the_lease_duration(
        spec: Any, delivered: bool) -> None:
    """Whatever the record says when the holder stops: the candidate leads within 2 x lease_duration."""
    clock = Clock()
    store = Store(clock)
    stored = store._store(Lease("opd", LeaseRecord.from_spec(spec)))
    replicas = Replicas(store, clock, 1)
    candidate = replicas.add("b", mode="leader")
    if delivered:  # through the watch too, as the raw body (its record read as the replicas read it)
        candidate.seen.deliver("MODIFIED", {"metadata": {"name": "opd", "resourceVersion": stored.version},
                                            "spec": spec})
    began = clock.now
    while not candidate.holds(0) and clock.now - began <= 3 * TIMINGS.lease_duration:
        await replicas.rounds(1, step=0.25)
    assert candidate.holds(0), store.leases["opd"]
    assert clock.now - began <= 2 * TIMINGS.lease_duration
    await replicas.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs, annotations=pairs, edit=st.sampled_from(["shard", "members", "both"]))
async def test_shards_survive_any_record_and_any_members_lease(spec: Any, annotations: Any, edit: str) -> None:
    """Two replicas in shards mode; a stranger rewrites a shard's record and/or the members Lease
    with anything: no step raises, never two holders of a shard, and every shard is held again
    within 2 x lease_duration of the last edit."""
    clock = Clock()
    store = Store(clock)
    replicas = Replicas(store, clock, 4)
    for identity in ("a", "b"):
        replicas.add(identity)
    await replicas.rounds(6)
    if edit in ("shard", "both"):
        current = store.leases["opd-1"]
        store._store(dataclasses.replace(current, record=LeaseRecord.from_spec(spec)))
    if edit in ("members", "both"):
        current = store.leases[members_name("opd")]
        body = {"metadata": {"name": current.name, "annotations": annotations}}
        store._store(dataclasses.replace(current, annotations=Lease.from_body(body).annotations))
    edited = clock.now
    while clock.now - edited <= 3 * TIMINGS.lease_duration:
        await replicas.rounds(1, step=0.5)  # checks at every step: never two holders
        if sum(replicas.held().values()) == 4:
            break
    assert sum(replicas.held().values()) == 4
    assert clock.now - edited <= 2 * TIMINGS.lease_duration
    await replicas.stop()
