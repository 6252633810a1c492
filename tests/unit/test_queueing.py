"""Unit tests for opd/engine/queueing.py: the WorkQueue (latest state wins, per-key serialisation,
bounded workers, delayed re-queueing, error isolation, shutdown)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from loguru import logger

from opd.engine import trimming
from opd.engine.queueing import WorkQueue


class Recorder:
    """A process() that records calls; each call can be held until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.started: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}
        self.hold = hold
        self.active: set[str] = set()
        self.concurrent = 0
        self.max_concurrent = 0
        self.overlaps: list[str] = []
        self.changed = asyncio.Event()

    def started_event(self, key: str) -> asyncio.Event:
        return self.started.setdefault(key, asyncio.Event())

    def release_event(self, key: str) -> asyncio.Event:
        return self.release.setdefault(key, asyncio.Event())

    async def __call__(self, key: str, value: int) -> None:
        if key in self.active:
            self.overlaps.append(key)
        self.active.add(key)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self.calls.append((key, value))
        self.changed.set()
        self.started_event(key).set()
        try:
            if self.hold:
                await self.release_event(key).wait()
            else:
                await asyncio.sleep(0)
        finally:
            self.concurrent -= 1
            self.active.discard(key)

    async def wait_calls(self, count: int, timeout: float = 1.0) -> None:
        async def waiter() -> None:
            while len(self.calls) < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(waiter(), timeout)


async def idle(queue: WorkQueue[str, int], timeout: float = 1.0) -> None:
    """Until the queue has nothing queued, active, delayed, or running (polled: the queue has no event)."""
    for _ in range(int(timeout / 0.001)):
        if not any(queue.stats().values()):
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"the queue is still busy: {queue.stats()}")


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[WorkQueue[str, int]], WorkQueue[str, int]]]:
    """Register queues to be closed after the test, so no worker outlives it."""
    queues: list[WorkQueue[str, int]] = []
    yield lambda q: queues.append(q) or q  # type: ignore[func-returns-value]
    for q in queues:
        await q.close(0.1)


@pytest.fixture
def error_logs() -> Iterator[list[str]]:
    messages: list[str] = []
    sink_id = logger.add(lambda m: messages.append(str(m)), level="ERROR", format="{message}")
    yield messages
    logger.remove(sink_id)


def make(process: Callable[[str, int], Awaitable[None]], closing: Callable[..., WorkQueue[str, int]],
         workers: int = 4) -> WorkQueue[str, int]:
    q: WorkQueue[str, int] = WorkQueue(process, workers=workers, name="test")
    closing(q)
    return q


async def test_processes_items(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing)
    q.put("a", 1)
    q.put("b", 2)
    await rec.wait_calls(2)
    await idle(q)
    assert sorted(rec.calls) == [("a", 1), ("b", 2)]
    assert len(q) == 0


async def test_latest_state_wins(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing)
    q.put("a", 1)
    q.put("a", 2)
    q.put("a", 3)
    assert len(q) == 1
    await rec.wait_calls(1)
    await idle(q)
    assert rec.calls == [("a", 3)]


async def test_latest_state_wins_while_others_wait(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder(hold=True)
    q = make(rec, closing, workers=1)
    q.put("blocker", 0)
    await rec.started_event("blocker").wait()
    for i in range(5):
        q.put("a", i)
        q.put("b", 10 + i)
    assert len(q) == 2
    rec.release_event("blocker").set()
    rec.release_event("a").set()
    rec.release_event("b").set()
    await rec.wait_calls(3)
    await idle(q)
    assert rec.calls == [("blocker", 0), ("a", 4), ("b", 14)]  # FIFO by first put


async def test_same_key_never_concurrent_and_reruns_once(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder(hold=True)
    q = make(rec, closing, workers=4)
    q.put("a", 1)
    await rec.started_event("a").wait()
    assert q.active == 1

    # While "a" is processed: newer states arrive; none starts concurrently.
    q.put("a", 2)
    q.put("a", 3)
    for _ in range(5):
        await asyncio.sleep(0)
    assert rec.calls == [("a", 1)]
    assert rec.overlaps == []

    rec.release_event("a").set()  # finish run 1 (and let the next run through)
    await rec.wait_calls(2)
    await idle(q)
    assert rec.calls == [("a", 1), ("a", 3)]  # exactly one more run, with the newest value
    assert rec.overlaps == []
    assert rec.max_concurrent == 1


async def test_other_keys_proceed_while_one_is_active(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder(hold=True)
    q = make(rec, closing, workers=2)
    q.put("slow", 1)
    await rec.started_event("slow").wait()
    rec.release_event("fast").set()
    q.put("fast", 2)
    await rec.wait_calls(2)
    assert rec.calls == [("slow", 1), ("fast", 2)]
    rec.release_event("slow").set()
    await idle(q)


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_at_most_workers_at_once(closing: Callable[..., WorkQueue[str, int]], workers: int) -> None:
    rec = Recorder(hold=True)
    q = make(rec, closing, workers=workers)
    keys = [f"k{i}" for i in range(8)]
    for i, key in enumerate(keys):
        q.put(key, i)
    for _ in range(20):
        await asyncio.sleep(0)
    assert rec.concurrent == workers
    assert q.active == workers
    assert q.stats()["workers"] == workers
    assert q.stats()["queued"] == len(keys) - workers
    for key in keys:
        rec.release_event(key).set()
    await rec.wait_calls(len(keys))
    await idle(q)
    assert rec.max_concurrent == workers  # the pool was used fully, and never exceeded
    assert sorted(rec.calls) == sorted((k, i) for i, k in enumerate(keys))


async def test_workers_at_least_one(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing, workers=0)
    q.put("a", 1)
    await rec.wait_calls(1)
    await idle(q)
    assert rec.calls == [("a", 1)]


async def test_put_after_fires_after_delay(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing)
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.put_after(0.05, "a", 1)
    assert q.stats()["delayed"] == 1
    await asyncio.sleep(0.01)
    assert rec.calls == []
    await rec.wait_calls(1)
    assert loop.time() - start >= 0.045
    await idle(q)
    assert rec.calls == [("a", 1)]


async def test_put_after_replaced_by_newer_put_after(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing)
    q.put_after(0.02, "a", 1)
    q.put_after(0.04, "a", 2)
    assert q.stats()["delayed"] == 1
    await rec.wait_calls(1)
    await asyncio.sleep(0.05)
    await idle(q)
    assert rec.calls == [("a", 2)]


async def test_put_cancels_put_after(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing)
    q.put_after(0.03, "a", 1)
    q.put("a", 2)
    assert q.stats()["delayed"] == 0
    await rec.wait_calls(1)
    await asyncio.sleep(0.06)  # past the original delay
    await idle(q)
    assert rec.calls == [("a", 2)]


async def test_put_after_does_not_override_a_queued_state(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder(hold=True)
    q = make(rec, closing, workers=1)
    q.put("blocker", 0)
    await rec.started_event("blocker").wait()
    q.put("a", 5)  # queued behind the blocker
    q.put_after(0.0, "a", 1)  # a retry planned from an older state
    await asyncio.sleep(0.02)  # the timer fires while "a" waits
    rec.release_event("blocker").set()
    rec.release_event("a").set()
    await rec.wait_calls(2)
    await idle(q)
    assert rec.calls == [("blocker", 0), ("a", 5)]


async def test_put_after_during_processing(closing: Callable[..., WorkQueue[str, int]]) -> None:
    """A retry planned by process() itself: the key runs again after the delay, never concurrently."""
    runs: list[int] = []
    done = asyncio.Event()
    q: WorkQueue[str, int]

    async def process(key: str, value: int) -> None:
        runs.append(value)
        if value < 3:
            q.put_after(0.01, key, value + 1)
        else:
            done.set()

    q = make(process, closing)
    q.put("a", 1)
    await asyncio.wait_for(done.wait(), 1.0)
    await idle(q)
    assert runs == [1, 2, 3]


async def test_forget_cancels_put_after(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder()
    q = make(rec, closing)
    q.put_after(0.02, "a", 1)
    q.put_after(0.02, "b", 2)
    q.forget("a")
    q.forget("never-planned")  # no error
    assert q.stats()["delayed"] == 1
    await rec.wait_calls(1)
    await asyncio.sleep(0.04)
    await idle(q)
    assert rec.calls == [("b", 2)]


async def test_exception_is_logged_and_queue_survives(
    closing: Callable[..., WorkQueue[str, int]], error_logs: list[str]
) -> None:
    calls: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def process(key: str, value: int) -> None:
        calls.append((key, value))
        if key == "bad":
            raise RuntimeError(f"boom {value}")
        if key == "last":
            done.set()

    q = make(process, closing, workers=1)
    q.put("bad", 1)
    q.put("good", 2)
    await idle(q)
    q.put("bad", 3)
    q.put("last", 4)
    await asyncio.wait_for(done.wait(), 1.0)
    await idle(q)
    assert calls == [("bad", 1), ("good", 2), ("bad", 3), ("last", 4)]
    errors = [m for m in error_logs if "'bad'" in m]
    assert len(errors) == 2
    assert "test" in errors[0]  # the queue's name
    assert "boom 1" in errors[0] and "RuntimeError" in errors[0]  # with the exception


async def test_exception_with_dirty_key_runs_again(closing: Callable[..., WorkQueue[str, int]],
                                                   error_logs: list[str]) -> None:
    calls: list[int] = []
    entered = asyncio.Event()
    go = asyncio.Event()

    async def process(key: str, value: int) -> None:
        calls.append(value)
        if value == 1:
            entered.set()
            await go.wait()
            raise ValueError("first run fails")

    q = make(process, closing)
    q.put("a", 1)
    await entered.wait()
    q.put("a", 2)
    go.set()
    await idle(q)
    assert calls == [1, 2]
    assert len(error_logs) == 1


async def test_close_cancels_in_flight_after_timeout(closing: Callable[..., WorkQueue[str, int]]) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    calls: list[tuple[str, int]] = []

    async def process(key: str, value: int) -> None:
        calls.append((key, value))
        started.set()
        try:
            await asyncio.Event().wait()  # forever
        except asyncio.CancelledError:
            cancelled.set()
            raise

    q = make(process, closing, workers=1)
    q.put("a", 1)
    q.put("b", 2)  # queued, never started
    q.put_after(0.01, "c", 3)
    await started.wait()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await asyncio.wait_for(q.close(0.05), 1.0)
    elapsed = loop.time() - begin
    assert cancelled.is_set()
    assert 0.04 <= elapsed < 0.5
    assert q.stats() == {"queued": 0, "active": 0, "delayed": 0, "workers": 0}

    # Closed: puts are ignored, delayed or not.
    q.put("d", 4)
    q.put_after(0.0, "e", 5)
    assert len(q) == 0
    await asyncio.sleep(0.02)
    assert calls == [("a", 1)]
    assert q.stats() == {"queued": 0, "active": 0, "delayed": 0, "workers": 0}


async def test_close_lets_in_flight_work_finish_within_timeout(
    closing: Callable[..., WorkQueue[str, int]]
) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def process(key: str, value: int) -> None:
        started.set()
        await asyncio.sleep(0.02)
        finished.append(key)

    q = make(process, closing)
    q.put("a", 1)
    await started.wait()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await q.close(1.0)
    assert finished == ["a"]
    assert loop.time() - begin < 0.5  # returned as soon as the work finished, not at the timeout


async def test_close_idle_queue() -> None:
    q: WorkQueue[str, int] = WorkQueue(Recorder(), workers=2)
    await asyncio.wait_for(q.close(5.0), 0.5)
    q.put("a", 1)
    assert len(q) == 0


async def test_wait_for_room_holds_a_producer_until_the_queue_drains() -> None:
    release = asyncio.Event()

    async def process(key: str, value: int) -> None:
        await release.wait()

    queue: WorkQueue[str, int] = WorkQueue(process, workers=1)
    for i in range(5):
        queue.put(f"k{i}", i)
    waiter = asyncio.create_task(queue.wait_for_room(3))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # 4 waiting (one is being processed): no room below 3 yet
    release.set()
    await asyncio.wait_for(waiter, 1)
    assert len(queue) < 3
    await queue.close(1)


async def test_forget_drops_a_pending_state_and_a_retry(closing: Callable[..., WorkQueue[str, int]]) -> None:
    rec = Recorder(hold=True)
    q = make(rec, closing, workers=1)
    q.put("busy", 1)
    await rec.started_event("busy").wait()
    q.put("waiting", 2)  # queued behind the one worker
    q.put_after(0.05, "later", 3)
    assert sorted(q.keys()) == ["busy", "later", "waiting"] and q.is_active("busy")
    q.forget("waiting")
    q.forget("later")
    rec.release_event("busy").set()
    await asyncio.sleep(0.1)
    await idle(q)
    assert rec.calls == [("busy", 1)]


async def test_memory_is_given_back_once_a_large_backlog_drained(
        closing: Callable[..., WorkQueue[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """RSS stayed at a backlog's peak (glibc keeps freed pages): a drained queue trims once enough was done."""
    monkeypatch.setattr(trimming, "_work", 0)  # what other tests' queues did does not count here
    rec = Recorder()
    q = make(rec, closing)
    before = trimming.trims
    for i in range(trimming.TRIM_AFTER // 2):
        q.put(f"k{i}", i)
    await rec.wait_calls(trimming.TRIM_AFTER // 2)
    await q.drained()
    assert trimming.trims == before  # not yet: a small amount of work is not worth a trim
    for i in range(trimming.TRIM_AFTER):
        q.put(f"k{i}", i)
    await rec.wait_calls(trimming.TRIM_AFTER * 3 // 2)
    await q.drained()
    assert trimming.trims == before + (1 if trimming.trimming else 0)
