"""The labeller's queue (opd.engine.labelling), as pure logic: what a stream of objects without the
shard label puts in it, what takes it out, and the bound that holds a LIST's pages back."""

from __future__ import annotations

from typing import Any

from opd.engine import labelling
from opd.engine.labelling import Labeller
from opd.resources import Resource

KEX = Resource(group="kopf.dev", version="v1", plural="kopfexamples", kind="KopfExample", namespaced=True)


def _body(uid: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": f"n-{uid}", "namespace": "ns", "labels": labels or {}}}


def _labeller() -> Labeller:
    return Labeller(None, "opd.dev/shard", lambda uid: "1", "opd.dev/shards", 6)  # type: ignore[arg-type]


def test_objects_without_the_label_or_labelled_for_another_count_wait_for_it() -> None:
    labeller = _labeller()
    deliver = labeller.deliver(KEX)
    deliver("ADDED", _body("a"))
    deliver("ADDED", _body("b", {"opd.dev/shard": "0", "opd.dev/shards": "3"}))  # another shard count
    deliver("ADDED", _body("c", {"opd.dev/shard": "1", "opd.dev/shards": "6"}))  # labelled already
    deliver("ADDED", {"metadata": {"name": "no-uid"}})  # not an object opd can label
    assert labeller._pending == {"a": "/apis/kopf.dev/v1/namespaces/ns/kopfexamples/n-a",
                                 "b": "/apis/kopf.dev/v1/namespaces/ns/kopfexamples/n-b"}
    deliver("DELETED", _body("a"))  # gone, or left the stream (labelled by another): nothing to write
    deliver("MODIFIED", _body("b", {"opd.dev/shard": "1", "opd.dev/shards": "6"}))
    assert labeller._pending == {}


def test_a_full_queue_holds_the_lists_pages_back_until_there_is_room(monkeypatch: Any) -> None:
    monkeypatch.setattr(labelling, "MAX_PENDING", 3)
    labeller = _labeller()
    deliver = labeller.deliver(KEX)
    for uid in ("a", "b"):
        deliver("ADDED", _body(uid))
    assert labeller._room.is_set()
    deliver("ADDED", _body("c"))
    assert not labeller._room.is_set()  # room() now waits: the next LIST page is not asked for
    deliver("DELETED", _body("a"))
    assert labeller._room.is_set()
