"""What one operator remembers about each object between its events, in one record.

The object itself carries everything that must survive a restart (diff-base,
progress markers, results); this is the process's short-term memory: echoes of
its own writes to skip, an outcome whose write failed, raw events not yet shown
to event handlers. Recalled and forgotten in one place, so nothing outlives the
object by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opd.engine.applying import Plan
    from opd.engine.backoff import Backoff

Item = tuple[str, dict[str, Any]]  # (event type, body)
REFRESH = "REFRESH"  # an item's event type when its body is out of date: read the object afresh first
RETRY = "RETRY"  # an item of opd's own: handlers are due again (never taken for an echo)


@dataclass(slots=True)
class Record:
    seen: bool = False  # processed by this process already (resume handlers run once per start)
    delivered: int = -1  # the newest resourceVersion delivered: two streams may bring one object
    held: bool = False  # it carries opd's holding label: both streams bring it
    written: int | None = None  # resourceVersion of opd's own last write (its echo is still due)
    unwritten: Plan | None = None  # an outcome whose write failed: re-applied, never recomputed
    events: list[Item] = field(default_factory=list)  # raw events not yet shown to event handlers
    released: bool = False  # opd removed its finalizer from a deleting object: its part is over
    optional_deleted: bool = False  # optional delete handlers ran (they run once per deletion)
    failing: str | None = None  # the kind of the last failed write, to log each outcome once
    retry: Backoff | None = None  # while writes of it fail: when to try again
    # The version of opd's last write when its answer held nothing opd had not seen (no change by
    # anybody else to the spec, labels, annotations or deletion): that echo is skipped.
    echo: int | None = None
    due: float | None = None  # when handlers in retry are due again (an echo skipped must keep that)

    def empty(self) -> bool:
        """Holds nothing worth keeping (an idle object costs no memory here)."""
        return not (self.echo is not None or self.due is not None or self.seen or self.held or self.written is not None
                    or self.unwritten is not None or self.events or self.released or self.optional_deleted
                    or self.failing or self.retry)


class Inventory:
    def __init__(self) -> None:
        self._memories: dict[str, Record] = {}

    def __len__(self) -> int:
        return len(self._memories)

    def recall(self, uid: str) -> Record:
        memory = self._memories.get(uid)
        if memory is None:
            memory = self._memories[uid] = Record()
        return memory

    def uids(self) -> list[str]:
        return list(self._memories)

    def peek(self, uid: str) -> Record | None:
        return self._memories.get(uid)

    def forget(self, uid: str) -> None:
        self._memories.pop(uid, None)

    def tidy(self, uid: str) -> None:
        """Drop the record if it holds nothing any more."""
        memory = self._memories.get(uid)
        if memory is not None and memory.empty():
            del self._memories[uid]
