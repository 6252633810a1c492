"""Which objects this process may act on: the seam between the engine and high availability.

With one replica, every object is this process's (``EVERYTHING``). With several (leader
election, shards over Kubernetes Leases: ``opd.ha``), an ``Ownership`` says, per object uid,
whether this replica runs its handlers and writes to it right now. The processor asks at each
step: before it takes an event, before it runs handlers, and before every write (a replica
that lost its lease while a handler ran drops that outcome: fencing by time). A write is checked
again when it leaves (``time_left``: a patch that waited behind another one is not sent past the
fence, and its request timeout ends at the fence; see ``opd.kube.batching``).
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

from loguru import logger

from opd.kube.batching import Fenced

__all__ = ["EVERYTHING", "Fenced", "Narrowing", "Ownership", "count_label", "say_dropped", "shard_label"]

QUIET = 60.0  # seconds after a dropped outcome during which the next ones are said at DEBUG only
_quiet_until = 0.0


def say_dropped(text: str) -> None:
    """Say that an outcome was dropped (fenced): a lost lease drops the outcomes of every object in
    flight at once, so the first is said at WARNING, the ones that follow it within QUIET at DEBUG
    (the replica's own line says which Lease was lost, and why)."""
    global _quiet_until
    now = time.monotonic()
    if now >= _quiet_until:
        logger.warning(f"{text} (more outcomes dropped in the next {QUIET:g}s: at DEBUG)")
    else:
        logger.debug(text)
    _quiet_until = now + QUIET


class Ownership(Protocol):
    def owns(self, uid: str) -> bool:
        """Whether this replica may take and handle the object with this uid now."""
        ...

    def may_write(self, uid: str) -> bool:
        """Whether this replica may write to it now: while an object is handed over, its timers and
        daemons may still write their last outcomes, though nothing new starts for it."""
        ...

    def time_left(self, uid: str) -> float:
        """Seconds from now during which a write to it may still be in flight: math.inf without
        a limit, 0 when ``may_write`` says no. Read when each write leaves."""
        ...


def shard_label(prefix: str) -> str:
    """opd's own marker of an object's shard (``opd.ha`` in label mode): written once, by one replica."""
    return f"{prefix}/shard"


def count_label(prefix: str) -> str:
    """The shard count the shard label was written for, beside it: an object labelled for another
    count (``shards`` changed) is labelled again, not left in a shard no replica reads it from."""
    return f"{prefix}/shards"


@runtime_checkable
class Narrowing(Protocol):
    """An Ownership that narrows the operation's watches to what it owns (``opd.ha``, shards mode), by a
    shard label (each stream adds ``clause(label)`` to its label selector) or by the server
    (KEP-5866: each stream asks ``shard_selector()``); the operation lists again with the new
    clause or selector whenever the shards held change."""

    def clause(self, label: str) -> str | None:
        """The requirement every stream adds (``<label> in (0,3)``); None: no narrowing, every event comes."""
        ...

    def shard_selector(self) -> str | None:
        """KEP-5866's shardSelector for the shards held (a server that honours it filters); None: not asked."""
        ...

    def label_value(self, uid: str) -> str:
        """The shard label's value for an object: its shard."""
        ...

    def shard_count(self) -> int:
        """How many shards there are (the count label's value)."""
        ...


class _Everything:
    def owns(self, uid: str) -> bool:
        return True

    def may_write(self, uid: str) -> bool:
        return True

    def time_left(self, uid: str) -> float:
        return math.inf

    def __repr__(self) -> str:
        return "EVERYTHING"


EVERYTHING: Ownership = _Everything()
