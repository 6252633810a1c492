"""Shards: which object is in which shard, and which shards a replica should hold.

An object's shard is where the 64-bit FNV-1a hash of its ``metadata.uid`` falls among S equal
ranges of the hash space: KEP-5866's function (Kubernetes 1.36, ``shardSelector`` on LIST/WATCH),
so that a server which filters can be asked for exactly a shard's objects with
``shardRange(object.metadata.uid, '<start>', '<end>')`` (``selector``), the bounds as it takes them.
Replicas learn of each other from Leases only: each keeps an entry of its own in one members Lease
(``<lease>-members``: an annotation ``members.opd.dev/<digest of its identity>`` per replica,
rewritten every ``retry_period``), and holders of shard Leases count as members too. Every Lease
name is known ahead, so RBAC can name each one. Every replica sorts the live members by identity
and computes the same fair share for each: ``S // N``, one more for the first ``S % N``. A replica
below its share claims free (released or expired) shards; one above it releases its extras, but
only as many as the others who are short cannot find free. With consistent views the extras
released are exactly what the short ones need (the excesses add up to the shortfalls less the free
shards), so shards move only towards a replica that needs them.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opd.ha.leases import MEMBER_PREFIX

HASH = "fnv1a-64"  # the hash's name in a member's entry: replicas hashing otherwise must not share shards
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
SPACE = 1 << 64  # the hash space; a range's end may be SPACE itself ('0x10000000000000000')
SHARD_KEY = "object.metadata.uid"


def fnv1a_64(value: str) -> int:
    """64-bit FNV-1a of the UTF-8 bytes of ``value`` (Go's hash/fnv New64a, as the API server hashes)."""
    h = FNV_OFFSET
    for byte in value.encode():
        h = ((h ^ byte) * FNV_PRIME) & (SPACE - 1)
    return h


def shard_of(uid: str, shards: int) -> int:
    """The shard of an object: the one of ``shards`` equal ranges its uid's hash falls in."""
    return range_of(fnv1a_64(uid), shards)


def range_of(hashed: int, shards: int) -> int:
    """Which of ``shards`` equal ranges of the hash space holds a hash: floor(h * S / 2^64)."""
    return hashed * shards >> 64


def bounds(shard: int, shards: int) -> tuple[int, int]:
    """The hash range [start, end) of a shard: starts at ceil(i * 2^64 / S), so that
    ``range_of`` puts a hash in exactly the range that holds it."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
    return -(-shard * SPACE // shards), -(-(shard + 1) * SPACE // shards)


def hex_bound(value: int) -> str:
    """A bound as KEP-5866 takes it: '0x' and 16 lowercase hex digits (17 for 2^64, the last end)."""
    return f"0x{value:016x}"


def selector(shard: int, shards: int) -> str:
    """KEP-5866's ``shardSelector`` for one shard's objects."""
    start, end = bounds(shard, shards)
    return f"shardRange({SHARD_KEY}, '{hex_bound(start)}', '{hex_bound(end)}')"


MAX_RANGES = 32  # ranges in one shardSelector at most: the query stays a few KiB whatever shards are held


def held_selector(held: Iterable[int], shards: int) -> str:
    """KEP-5866's ``shardSelector`` for the objects of the shards held: one ``shardRange`` per run of
    adjacent shards, joined by ``||`` (the grammar KEP-5866 takes), so that one stream asks for all
    of them. Past MAX_RANGES runs, the narrowest gaps are asked too (what comes of them is dropped
    as any event of a shard not held is). Nothing held: a range of one hash value, as the server
    takes no empty range and matches no object's in practice (one in 2^64; dropped if it does)."""
    runs: list[list[int]] = []
    for shard in sorted(set(held)):
        if runs and runs[-1][1] == shard:
            runs[-1][1] = shard + 1
        else:
            runs.append([shard, shard + 1])
    while len(runs) > MAX_RANGES:  # fill the narrowest gap
        at = min(range(len(runs) - 1), key=lambda i: runs[i + 1][0] - runs[i][1])
        runs[at:at + 2] = [[runs[at][0], runs[at + 1][1]]]
    if not runs:
        return f"shardRange({SHARD_KEY}, '{hex_bound(0)}', '{hex_bound(1)}')"
    return " || ".join(f"shardRange({SHARD_KEY}, '{hex_bound(bounds(first, shards)[0])}', "
                       f"'{hex_bound(bounds(last - 1, shards)[1])}')" for first, last in runs)


def shard_name(lease: str, shard: int) -> str:
    return f"{lease}-{shard}"


def members_name(lease: str) -> str:
    """The one Lease that lists the members of a group in shards mode."""
    return f"{lease}-members"


def labeller_name(lease: str) -> str:
    """The Lease of the labeller role (shards mode, label filtering): its holder writes the shard labels."""
    return f"{lease}-labeller"


def lease_names(mode: str, lease: str, shards: int) -> list[str]:
    """Every Lease of a group, each known by name: ``<lease>`` in leader mode; ``<lease>-<i>`` for
    each shard, ``<lease>-labeller`` and ``<lease>-members`` (last) in shards mode."""
    if mode == "leader":
        return [lease]
    return [*(shard_name(lease, i) for i in range(shards)), labeller_name(lease), members_name(lease)]


def member_key(identity: str) -> str:
    """A member's annotation on the members Lease: identities are free text, keys are DNS labels."""
    return f"{MEMBER_PREFIX}{hashlib.sha1(identity.encode(errors='replace')).hexdigest()[:20]}"


# What labelling costs the labeller, against handling: it receives two watch events per new object
# (the object comes without the label, and leaves its stream once labelled), a holder about three
# per object it handles (it comes labelled, its result, the write's echo). Measured by
# `tests/chaos/run.py --scenarios ha-measure` (events each replica received, per object).
LABELLING_WEIGHT = 2 / 3
LIGHTER_FROM = 3  # shards per replica from which the labeller's share is lighter


def lighter(shards: int, members: int) -> int:
    """The labeller's share: what leaves it as busy as the others when every object is new (its
    labelling weighs ``LABELLING_WEIGHT`` of the handling of all objects), but one shard at least,
    so that every replica takes part in the handling (and the role can move without the work
    moving all at once). Shares move in whole shards: with fewer than three per replica, one is
    too coarse a piece to take off one replica's share (1 of 6 shards is half of a fair 2 for 3
    replicas) and the labeller keeps the smaller fair share."""
    if members <= 1:
        return shards
    if shards < LIGHTER_FROM * members:
        return shards // members
    balanced = int(shards * (1 - LABELLING_WEIGHT * (members - 1)) / members)
    return min(shards // members, max(1 if shards >= members else 0, balanced))


def shares(members: Iterable[str], shards: int, light: str | None = None) -> dict[str, int]:
    """Each member's fair share, by rank in identity order: they add up to ``shards``. ``light``:
    the labeller (label filtering), which gets ``lighter()`` and leaves the rest to the others."""
    ranked = sorted(set(members))
    if light is None or light not in ranked or len(ranked) == 1:
        base, extra = divmod(shards, len(ranked))
        return {member: base + (1 if rank < extra else 0) for rank, member in enumerate(ranked)}
    own = lighter(shards, len(ranked))
    others = [m for m in ranked if m != light]
    base, extra = divmod(shards - own, len(others))
    return {light: own, **{member: base + (1 if rank < extra else 0) for rank, member in enumerate(others)}}


@dataclass(frozen=True)
class Plan:
    release: tuple[int, ...] = ()  # shards to release (after their work in flight is done)
    claim: tuple[int, ...] = ()  # free shards to try, in this order...
    want: int = 0  # ...until this many are taken

    def __bool__(self) -> bool:
        return bool(self.release or self.want)


def plan(me: str, members: Iterable[str], holders: Mapping[int, str], shards: int,
         active: Iterable[str] | None = None, light: str | None = None) -> Plan:
    """What ``me`` should do now. ``holders``: each shard's live holder ('' or absent: free).
    ``active``: the members known to be at work (default: all); only they are waited for to take
    free shards, a member that may be a crashed one's leftover is not. ``light``: the labeller,
    whose share is lighter (``shares``)."""
    ranked = sorted(set(members) | {me})
    share = shares(ranked, shards, light)
    counts = collections.Counter(h for k, h in holders.items() if h and k < shards)
    mine = sorted(k for k, h in holders.items() if h == me and k < shards)
    free = [k for k in range(shards) if not holders.get(k)]
    waiting = set(ranked if active is None else active) & set(ranked)
    short = sum(max(0, share[m] - counts[m]) for m in ranked if m != me and m in waiting)
    if len(mine) > share[me]:
        # Only what the short ones cannot take from the free shards (guards against views that
        # disagree for a moment: a replica that counts a member the others do not yet see).
        n = min(len(mine) - share[me], max(0, short - len(free)))
        return Plan(release=tuple(mine[len(mine) - n:]))
    # At its share already, a replica still takes free shards that nobody short will take.
    want = share[me] - len(mine) if len(mine) < share[me] else (len(free) if short == 0 else 0)
    # Short replicas start at different places in the free list: fewer of them race for one shard.
    start = ranked.index(me) * len(free) // len(ranked) if free else 0
    return Plan(claim=tuple(free[start:] + free[:start]), want=min(want, len(free)))
