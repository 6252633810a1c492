"""Merging patches of one object from several writers (opd.kube.batching): pure logic, a recording sender."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import pytest

from opd.kube.api import APIError, one_writers_fault
from opd.kube.batching import Fence, Fenced, PatchBatcher, PatchNotJSON, batches, combine


class Refused(Exception):
    pass


class Recorder:
    """Answers every patch with a response naming the request; refuses bodies holding ``bad``."""

    def __init__(self, delay: float = 0.01) -> None:
        self.sent: list[tuple[str, Mapping[str, Any]]] = []
        self.timeouts: list[float | None] = []
        self.at: list[float] = []  # loop time each request left
        self.delay = delay

    async def __call__(self, path: str, body: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.sent.append((path, body))
        self.timeouts.append(timeout)
        self.at.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay)
        if "bad" in str(body):
            raise Refused(f"invalid: {body}")
        return {"request": len(self.sent)}


def test_combine_merges_disjoint_keys_deeply() -> None:
    a = {"status": {"p1": {"create_fn": 1}, "opd-p1": {"x": 1}}}
    b = {"status": {"p2": {"create_fn": 2}}, "metadata": {"labels": {"l": "v"}}}
    assert combine(a, b) == {"status": {"p1": {"create_fn": 1}, "opd-p1": {"x": 1}, "p2": {"create_fn": 2}},
                             "metadata": {"labels": {"l": "v"}}}
    assert a == {"status": {"p1": {"create_fn": 1}, "opd-p1": {"x": 1}}}  # inputs untouched


@pytest.mark.parametrize("b", [
    {"status": {"p1": {"create_fn": 2}}},  # the same field twice: order would matter
    {"status": {"p1": None}},  # a deletion of what the other one sets
    {"status": {"p1": {"create_fn": {"nested": 1}}}},
    {"spec": {"items": ["c"]}},  # lists are replaced whole
])
def test_combine_refuses_a_clash(b: dict[str, Any]) -> None:
    a = {"status": {"p1": {"create_fn": 1}}, "spec": {"items": ["a"]}}
    assert combine(a, b) is None


def test_batches_keep_order_and_send_preconditions_alone() -> None:
    p = [
        {"status": {"a": 1}},
        {"status": {"b": 1}},
        {"metadata": {"finalizers": ["x"], "resourceVersion": "5"}},
        {"status": {"c": 1}},
        {"status": {"c": 2}},  # clashes with the one before: a batch of its own, after it
        {"status": {"d": 1}},
    ]
    grouped = batches(p)
    assert [members for _, members in grouped] == [[0, 1], [2], [3], [4, 5]]
    assert grouped[0][0] == {"status": {"a": 1, "b": 1}}
    assert grouped[3][0] == {"status": {"c": 2, "d": 1}}


async def test_a_lone_patch_goes_at_once() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: isinstance(exc, Refused))
    assert await batcher.patch("/o/1", {"status": {"a": 1}}) == {"request": 1}
    assert send.sent == [("/o/1", {"status": {"a": 1}})]


async def test_patches_arriving_meanwhile_share_the_next_request() -> None:
    send = Recorder(delay=0.05)
    batcher = PatchBatcher(send, split_on=lambda exc: isinstance(exc, Refused))
    first = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"a": 1}}))
    await asyncio.sleep(0.01)  # the first is in flight now
    rest = [asyncio.ensure_future(batcher.patch("/o/1", {"status": {k: 1}})) for k in "bcd"]
    other = asyncio.ensure_future(batcher.patch("/o/2", {"status": {"z": 1}}))  # another object: not held up
    results = await asyncio.gather(first, *rest, other)
    assert send.sent[0] == ("/o/1", {"status": {"a": 1}})
    assert ("/o/2", {"status": {"z": 1}}) in send.sent
    assert ("/o/1", {"status": {"b": 1, "c": 1, "d": 1}}) in send.sent
    assert len(send.sent) == 3
    assert results[1] == results[2] == results[3]  # one response for the three that shared it
    assert batcher.merged == 2


async def test_the_window_gathers_patches_sent_within_it() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: isinstance(exc, Refused), window=0.05)
    patches = [asyncio.ensure_future(batcher.patch("/o/1", {"status": {k: 1}})) for k in "abc"]
    await asyncio.gather(*patches)
    assert send.sent == [("/o/1", {"status": {"a": 1, "b": 1, "c": 1}})]


async def test_a_refused_merge_is_resent_one_by_one() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: isinstance(exc, Refused), window=0.05)
    good = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"a": 1}}))
    bad = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"b": "bad"}}))
    assert (await good)["request"] == 2  # its own request after the merged one was refused
    with pytest.raises(Refused):
        await bad
    assert [body for _, body in send.sent] == [{"status": {"a": 1, "b": "bad"}}, {"status": {"a": 1}},
                                               {"status": {"b": "bad"}}]


async def test_other_errors_reach_every_writer_of_the_request() -> None:
    async def down(path: str, body: Mapping[str, Any], timeout: float | None = None) -> Any:
        await asyncio.sleep(0.01)
        raise ConnectionError("apiserver down")

    batcher = PatchBatcher(down, split_on=lambda exc: False, window=0.02)
    outcomes = await asyncio.gather(*(batcher.patch("/o/1", {"status": {k: 1}}) for k in "ab"),
                                    return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    with pytest.raises(ConnectionError):  # and the object is free again: the next patch is tried, not stuck
        await asyncio.wait_for(batcher.patch("/o/1", {"status": {"c": 1}}), 1)


async def test_a_cancelled_first_writer_does_not_strand_the_others() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: False, window=0.05)
    first = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"a": 1}}))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"b": 1}}))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await asyncio.wait_for(second, 1) == {"request": 1}
    assert send.sent == [("/o/1", {"status": {"b": 1}})]


@pytest.mark.parametrize(("bad", "field", "reason"), [
    ({"b": {1, 2}}, "status.b", "Object of type set is not JSON serializable"),
    ({"b": math.nan}, "status.b", "Out of range float values are not JSON compliant"),
    ({"b": -math.inf}, "status.b", "Out of range float values are not JSON compliant"),
    ({"b": {"deep": [1, {"x": object()}]}}, "status.b.deep[1].x", "Object of type object is not JSON serializable"),
    ({"b": {("a", 1): "tuple key"}}, "status.b", "keys must be str, int, float, bool or None, not tuple"),
])
async def test_a_patch_that_is_not_json_fails_alone_before_any_merge(
    bad: dict[str, Any], field: str, reason: str
) -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: True, window=0.05)
    good_a = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"a": 1}}))
    wrong = asyncio.ensure_future(batcher.patch("/o/1", {"status": bad}))
    good_c = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"c": 1}}))
    outcomes = await asyncio.gather(good_a, wrong, good_c, return_exceptions=True)
    assert outcomes[0] == outcomes[2] == {"request": 1}  # the good ones: one request, together
    assert send.sent == [("/o/1", {"status": {"a": 1, "c": 1}})]
    error = outcomes[1]
    assert isinstance(error, PatchNotJSON) and isinstance(error, TypeError)
    assert str(error) == f"the patch of /o/1 is not JSON at {field}: {reason}"


async def test_a_lone_patch_that_is_not_json_sends_nothing() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: True)
    with pytest.raises(PatchNotJSON, match=r"^the patch of /o/1 is not JSON at status\.s: Object of type set"):
        await batcher.patch("/o/1", {"status": {"s": {"x"}}})
    assert send.sent == []
    assert await batcher.patch("/o/1", {"status": {"ok": 1}}) == {"request": 1}  # the object is not left busy


@pytest.mark.parametrize(("status", "message", "split"), [
    (400, "invalid JSON", True),
    (422, "metadata.annotations: Invalid value", True),
    (403, "admission webhook \"policy\" denied the request", True),
    (413, "request entity too large", True),
    (500, "etcdserver: request is too large", True),
    (401, "Unauthorized", False),
    (404, "not found", False),
    (409, "conflict", False),
    (429, "too many requests", False),
    (500, "internal error", False),
])
def test_which_refusals_split_a_merged_patch(status: int, message: str, split: bool) -> None:
    assert one_writers_fault(APIError(status, "", message)) is split


def test_connection_errors_do_not_split_a_merged_patch() -> None:
    assert not one_writers_fault(ConnectionError("apiserver down"))


# -- the fence, checked as each patch leaves ------------------------------------------------------------------


def until(deadline: float, what: str = "kex x") -> Fence:
    """A replica's fence at ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    return Fence(lambda: deadline - loop.time(), what)


async def test_a_patch_queued_behind_another_is_not_sent_past_its_fence() -> None:
    """The issue's case: the second patch passed the check when queued, its lease ran out while the
    first was in flight; it must not go out after the deadline (it did, 2.5 s late)."""
    send = Recorder(delay=0.3)  # the first request takes 0.3 s
    batcher = PatchBatcher(send, split_on=lambda exc: False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.15
    first = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"a": 1}}, fence=until(deadline + 5)))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"b": 1}}, fence=until(deadline)))
    await asyncio.sleep(0.01)
    assert not queued.done()  # it passed the check when queued
    assert await first == {"request": 1}
    with pytest.raises(Fenced, match="kex x: no longer this replica's"):
        await queued
    assert send.sent == [("/o/1", {"status": {"a": 1}})]  # never sent
    assert all(at <= deadline for at in send.at[1:])


async def test_a_fenced_member_of_a_batch_is_left_out_and_the_others_go() -> None:
    send = Recorder(delay=0.2)
    batcher = PatchBatcher(send, split_on=lambda exc: False)
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"a": 1}}))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"b": 1}}, fence=until(loop.time() + 0.05)))
    kept = asyncio.ensure_future(batcher.patch("/o/1", {"status": {"c": 1}}, fence=until(loop.time() + 30)))
    await first
    assert await kept == {"request": 2}
    with pytest.raises(Fenced):
        await gone
    assert [body for _, body in send.sent] == [{"status": {"a": 1}}, {"status": {"c": 1}}]


async def test_a_fenced_request_times_out_at_the_fence_not_after_the_request_timeout() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: False)
    loop = asyncio.get_running_loop()
    await batcher.patch("/o/1", {"status": {"a": 1}}, fence=until(loop.time() + 1.0))
    await batcher.patch("/o/2", {"status": {"a": 1}})  # no fence: the client's own timeout
    await batcher.patch("/o/3", {"status": {"a": 1}}, fence=Fence(lambda: math.inf, "kex z"))
    first, second, third = send.timeouts
    assert first is not None and 0.5 < first <= 1.0
    assert second is None and third is None


async def test_a_patch_fenced_already_is_not_even_queued() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: False, window=0.05)
    with pytest.raises(Fenced):
        await batcher.patch("/o/1", {"status": {"a": 1}}, fence=Fence(lambda: 0.0, "kex x"))
    assert send.sent == [] and batcher.requests == 0


async def test_a_patch_lingering_in_the_window_is_checked_when_the_window_ends() -> None:
    send = Recorder()
    batcher = PatchBatcher(send, split_on=lambda exc: False, window=0.2)
    with pytest.raises(Fenced):
        await batcher.patch("/o/1", {"status": {"a": 1}},
                            fence=until(asyncio.get_running_loop().time() + 0.05))
    assert send.sent == []
