"""A LIST received ahead of its consumer (opd.engine.listing): pages kept in order, as bytes but the one
taken next, bounded in bytes (one page always fits), a producer's failure given after the pages before
it; and the count of a LIST's objects, from the API server's remaining count or the pages themselves."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from opd.engine.listing import ListProgress, PageBuffer


def _page(*names: str) -> tuple[list[dict[str, str]], bytes]:
    items = [{"name": n} for n in names]
    return items, orjson.dumps(items)


def _parse(raw: bytes) -> list[dict[str, str]]:
    parsed: list[dict[str, str]] = orjson.loads(raw)
    return parsed


async def test_pages_come_in_order_parsed_again_only_when_kept_as_bytes() -> None:
    parsed: list[bytes] = []

    def parse(raw: bytes) -> list[dict[str, str]]:
        parsed.append(raw)
        return _parse(raw)

    buffer = PageBuffer(parse)
    first, second, third = _page("a", "b"), _page("c"), _page("d")
    for items, raw in (first, second, third):
        await buffer.put(items, raw)
    buffer.finish()
    assert buffer.size == len(second[1]) + len(third[1])  # the first is kept parsed: it is taken next
    assert await buffer.get() is first[0] and parsed == []
    assert await buffer.get() == second[0] and await buffer.get() == third[0] and parsed == [second[1], third[1]]
    assert buffer.exhausted and await buffer.get() is None and buffer.size == 0


async def test_a_full_buffer_holds_the_producer_until_a_page_is_taken() -> None:
    buffer = PageBuffer(_parse, limit=30)
    await buffer.put(*_page("first"))  # kept parsed: costs no bytes of the bound
    await buffer.put(*_page("a" * 10))  # 18 bytes
    blocked = asyncio.create_task(buffer.put(*_page("b" * 10)))  # 18 more: past 30
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(buffer) == 2
    assert await buffer.get() == [{"name": "first"}]
    await asyncio.sleep(0.05)
    assert not blocked.done()  # 18 bytes still held
    assert await buffer.get() == [{"name": "a" * 10}]
    await asyncio.wait_for(blocked, 1)
    assert await buffer.get() == [{"name": "b" * 10}]


async def test_one_page_larger_than_the_bound_still_goes_through() -> None:
    buffer = PageBuffer(_parse, limit=1)
    await asyncio.wait_for(buffer.put(*_page("x" * 100)), 1)  # nothing ahead of it: it goes in
    second = asyncio.create_task(buffer.put(*_page("y" * 100)))
    await asyncio.sleep(0.05)
    assert not second.done()
    assert await buffer.get() == [{"name": "x" * 100}]
    await asyncio.wait_for(second, 1)
    assert await buffer.get() == [{"name": "y" * 100}]


async def test_the_consumer_starts_once_every_page_is_in_or_the_buffer_is_full() -> None:
    buffer = PageBuffer(_parse, limit=20)
    started = asyncio.create_task(buffer.received())
    await buffer.put(*_page("a"))
    await buffer.put(*_page("b"))  # 12 bytes
    await asyncio.sleep(0.01)
    assert not started.done()  # more to come, and room for it
    producer = asyncio.create_task(buffer.put(*_page("c" * 10)))  # past the bound: it waits for the consumer
    await asyncio.wait_for(started, 1)
    assert not producer.done() and await buffer.get() == [{"name": "a"}]
    finished = PageBuffer(_parse)
    await finished.put(*_page("a"))
    finished.finish()
    await asyncio.wait_for(finished.received(), 1)
    producer.cancel()


async def test_the_producers_failure_comes_after_the_pages_before_it() -> None:
    buffer = PageBuffer(_parse)
    await buffer.put(*_page("a"))
    waiting = asyncio.create_task(buffer.get())
    assert await waiting == [{"name": "a"}]
    later = asyncio.create_task(buffer.get())
    await asyncio.sleep(0.01)
    buffer.fail(ValueError("page 2 failed"))
    with pytest.raises(ValueError, match="page 2 failed"):
        await asyncio.wait_for(later, 1)


def test_the_count_from_the_remaining_count_or_the_pages() -> None:
    progress = ListProgress()
    progress.page(500, 19_500, last=False)  # no selector: the API server says how many remain
    assert (progress.listed, progress.total, progress.complete) == (20_000, 20_000, False)
    progress.page(500, 19_000, last=False)
    progress.fed = 500
    assert progress.listed == 20_000
    selected = ListProgress()
    selected.page(500, None, last=False)  # with a selector it does not: what has come so far
    assert (selected.listed, selected.total) == (500, None)
    selected.page(120, None, last=True)
    assert (selected.listed, selected.total, selected.complete) == (620, 620, True)
    selected.restart()
    assert (selected.listed, selected.fed, selected.complete) == (0, 0, False)
