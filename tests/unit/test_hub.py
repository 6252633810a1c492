"""How a late subscriber's own LIST and the shared stream are reconciled (opd.engine.hub.CatchUp): pure logic.

The property every test checks: the subscriber gets each object once per state, never an older state
after a newer one, and every state newer than what it was given.
"""

from __future__ import annotations

from typing import Any

from opd.engine.hub import CatchUp


def obj(uid: str, version: int | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": uid}
    if version is not None:
        meta["resourceVersion"] = str(version)
    return {"metadata": meta}


def test_stream_events_no_newer_than_the_snapshot_wait_for_the_list() -> None:
    c = CatchUp()
    c.snapshot("100")
    assert not c.admit("MODIFIED", obj("a", 90))  # the list holds this state, or a newer one
    assert c.admit("MODIFIED", obj("b", 101))  # newer than the list: at once
    assert c.take(obj("a", 95)) == "ADDED"
    assert c.take(obj("b", 80)) is None  # the subscriber has a newer state already
    assert not c.admit("MODIFIED", obj("a", 95))  # the lagging watch's copy of what the list gave
    assert c.admit("MODIFIED", obj("a", 120))


def test_events_before_the_snapshot_is_known_go_through_and_are_not_given_twice() -> None:
    c = CatchUp()
    assert c.admit("ADDED", obj("a", 50))  # the first page is not in yet
    c.snapshot("60")
    assert c.take(obj("a", 50)) is None  # the same state: not again
    assert not c.admit("ADDED", obj("b", 40))  # the stream's own list, behind: the catch-up gives b
    assert c.take(obj("b", 40)) == "ADDED"
    assert c.take(obj("a", 55)) == "MODIFIED"  # a newer state from the list: given, as a change
    assert not c.admit("MODIFIED", obj("a", 55))  # and the watch's copy of it is not


def test_a_restarted_list_gives_nothing_twice() -> None:
    c = CatchUp()
    c.snapshot("100")
    assert c.take(obj("a", 10)) == "ADDED"
    assert c.take(obj("b", 20)) == "ADDED"
    c.snapshot("200")  # the first snapshot expired: a new LIST from the start
    assert c.take(obj("a", 10)) is None
    assert c.take(obj("b", 150)) == "MODIFIED"
    assert c.take(obj("c", 30)) == "ADDED"
    assert not c.admit("MODIFIED", obj("b", 120))  # older than what the new list gave
    assert not c.admit("MODIFIED", obj("d", 180))  # the new list will give it (no newer than its snapshot)


def test_deletions() -> None:
    c = CatchUp()
    c.snapshot("100")
    assert c.take(obj("a", 10)) == "ADDED"
    assert c.admit("DELETED", obj("a", 90))  # given before: the deletion is told, even from before the snapshot
    assert not c.admit("DELETED", obj("a", None))  # a relist's report of the same deletion: not twice
    assert c.take(obj("a", 10)) is None
    assert not c.admit("DELETED", obj("b", 110))  # never given: nothing to take back ...
    assert c.take(obj("b", 50)) is None  # ... and the list's older copy is not given either
    assert not c.admit("DELETED", obj("c", None))  # a relist's deletion, no version: same
    assert c.take(obj("c", 60)) is None


def test_after_the_catch_up_the_horizon_stays() -> None:
    c = CatchUp()
    c.snapshot("100")
    assert c.take(obj("a", 10)) == "ADDED"
    c.finish()
    assert c.seen is None  # no per-object memory once caught up
    assert not c.admit("MODIFIED", obj("a", 99))  # the watch lagging behind the list: covered by it
    assert c.admit("MODIFIED", obj("a", 101))
    assert c.admit("DELETED", obj("z", 50))  # deletions always: the subscriber may hold the object
    assert c.admit("DELETED", obj("y", None))


def test_versions_that_are_not_numbers_are_let_through() -> None:
    c = CatchUp()
    c.snapshot("opaque")
    assert c.admit("MODIFIED", {"metadata": {"uid": "a", "resourceVersion": "x1"}})
    assert c.take({"metadata": {"uid": "a", "resourceVersion": "x0"}}) is None
    assert c.take({"metadata": {"uid": "b", "resourceVersion": "x0"}}) == "ADDED"
    c.finish()
    assert c.admit("MODIFIED", {"metadata": {"uid": "b", "resourceVersion": "x2"}})
