"""Per-object cost of opd.engine.state's read and write for a new object with one handler, as the
bench's objects are (best of 7 x 20 000 calls). To compare two trees: ``PYTHONPATH=TREE python
tests/bench/state_micro.py`` for each (``git archive REV opd | tar -x -C TREE``)."""

from __future__ import annotations

import timeit
from typing import Any

from opd.engine.state import Storage, Writes, dump
from opd.settings import PersistenceSettings

STORAGE = Storage(PersistenceSettings(), has_status_subresource=True, handler_ids=["create_fn"])
BODY: dict[str, Any] = {
    "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
    "metadata": {"name": "ex-1", "namespace": "ns", "uid": "0b7a9c1e-1111-2222-3333-444455556666",
                 "resourceVersion": "12345", "generation": 1, "creationTimestamp": "2026-12-05T11:00:00Z",
                 "labels": {"app": "bench"}},
    "spec": {"field": "value", "items": ["a", "b", "c"], "size": 3},
}
BASE = dump(STORAGE.essence(BODY))


def read() -> None:
    STORAGE.read(BODY)


def read_and_write() -> None:
    old = STORAGE.read(BODY)
    STORAGE.write(Writes(), old=old, diff_base=BASE, progress={"create_fn": {"started": 1.0, "success": True}})


if __name__ == "__main__":
    for name, fn in (("read", read), ("read+write", read_and_write)):
        best = min(timeit.repeat(fn, number=20000, repeat=7)) / 20000
        print(f"{name}: {best * 1e6:.2f} us")
