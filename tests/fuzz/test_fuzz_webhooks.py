"""Property-based tests of what the webhook server reads: generated AdmissionReview and
ConversionReview bodies, well-formed and hostile, posted to a running `opd run` over TLS (0
answers of 5xx, the process alive, no traceback in its log), and the same shapes through the
pure functions that read them (only their documented one-line errors)."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from helpers.crds import ensure_crd, make_api
from helpers.webhook_process import CRD, GROUP, OpdRun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opd.engine.diffs import Patch
from opd.errors import WebhookError
from opd.typedefs import Body
from opd.webhooks import admission, bodies, conversion
from opd.webhooks.bodies import BadBody

T = TypeVar("T")
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Cases per test, a few thousand in all: the server's cost a few milliseconds each over TLS.
PURE, POSTED = 600, 600

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes anything (or the key left out)."""
    return st.one_of(good, good, good, json_values)


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
metadata = st.fixed_dictionaries({}, optional={
    "name": either(names), "namespace": either(names), "uid": either(names),
    "labels": either(st.dictionaries(names, st.text(max_size=8), max_size=3)),
    "annotations": either(st.dictionaries(names, st.text(max_size=8), max_size=3)),
})
configmap = st.fixed_dictionaries({"apiVersion": st.just("v1"), "kind": st.just("ConfigMap")}, optional={
    "metadata": either(metadata),
    "data": either(st.dictionaries(st.sampled_from(["a", "refuse", "crash", "b"]), st.text(max_size=8), max_size=3)),
})
admission_request = st.fixed_dictionaries({"uid": either(names)}, optional={
    "kind": either(st.fixed_dictionaries({"group": st.just(""), "version": st.just("v1"),
                                          "kind": st.sampled_from(["ConfigMap", "Pod"])})),
    "resource": either(st.fixed_dictionaries({"group": st.just(""), "version": st.just("v1"),
                                              "resource": st.sampled_from(["configmaps", "pods", ""])})),
    "subResource": either(st.sampled_from(["status", "scale"])),
    "operation": either(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
    "name": either(names), "namespace": either(names),
    "object": either(configmap), "oldObject": either(configmap),
    "dryRun": either(st.booleans()), "userInfo": either(st.fixed_dictionaries({"username": names})),
})
admission_reviews = st.fixed_dictionaries({"request": either(admission_request)}, optional={
    "apiVersion": either(st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])),
    "kind": either(st.just("AdmissionReview")),
})
bolt = st.fixed_dictionaries({"kind": either(st.just("Bolt"))}, optional={
    "apiVersion": either(st.sampled_from([f"{GROUP}/v1", f"{GROUP}/v2", "other/v9"])),
    "metadata": either(metadata), "spec": json_values,
})
conversion_reviews = st.fixed_dictionaries({"request": either(st.fixed_dictionaries(
    {"uid": either(names)}, optional={
        "desiredAPIVersion": either(st.sampled_from([f"{GROUP}/v1", f"{GROUP}/v2", f"{GROUP}/v3"])),
        "objects": either(st.lists(either(bolt), max_size=3)),
    }))}, optional={"apiVersion": either(st.just("apiextensions.k8s.io/v1")),
                    "kind": either(st.just("ConversionReview"))})
hostile = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 300).map(lambda n: (b'{"request":' * n) + b"{}" + b"}" * n),
    st.text(max_size=50).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
paths = st.sampled_from(["/validate/check", "/mutate/check", f"/convert/bolts.{GROUP}", "/", "/validate/none",
                         "/other/x"])


TRIED = {"pure": 0, "posted": 0, "5xx": 0}  # inputs tried, printed at the end of the module


@pytest.fixture(scope="module", autouse=True)
def _say_how_many() -> Iterator[None]:
    yield
    print(f"\nwebhook fuzzing: {TRIED['pure'] + TRIED['posted']} generated inputs, {TRIED['posted']} of them "
          f"posted to a running opd run over TLS; {TRIED['5xx']} answers of 5xx")


# -- the pure functions ----------------------------------------------------------------------------------------


def _done(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (no event loop needed: thousands of cases stay fast)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    coro.close()
    raise AssertionError("the coroutine waited")


@settings(FUZZ, max_examples=PURE)
@given(st.one_of(hostile, json_values.map(lambda v: json.dumps(v).encode())))
def test_decoding_any_body_gives_an_object_or_a_one_line_400(body: bytes) -> None:
    TRIED["pure"] += 1
    try:
        value = bodies.decode(body)
    except BadBody as exc:
        assert exc.status == 400 and "\n" not in str(exc) and len(str(exc)) < 300
    else:
        assert isinstance(value, dict) and bodies.depth(value) <= bodies.MAX_DEPTH


@settings(FUZZ, max_examples=PURE)
@given(admission_reviews)
def test_reading_any_admission_review_gives_a_request_or_a_webhook_error(review: dict[str, Any]) -> None:
    TRIED["pure"] += 1
    try:
        request = admission.read(review)
    except WebhookError as exc:
        assert "\n" not in str(exc)
        return
    kwargs = admission.kwargs_for(request, headers={}, sslpeer={}, warnings=[], patch=Patch())
    assert kwargs["body"] == request.body and isinstance(kwargs["body"], Body) and isinstance(request.where, str)

    async def nothing(handler: Any, kwargs: Any) -> None: ...

    answer = _done(admission.answer(review, request, [], kwargs, nothing))
    assert answer["response"] == {"uid": request.uid, "allowed": True}
    json.dumps(answer)


@settings(FUZZ, max_examples=PURE)
@given(conversion_reviews)
def test_reading_any_conversion_review_gives_its_parts_or_a_webhook_error(review: dict[str, Any]) -> None:
    TRIED["pure"] += 1
    try:
        uid, desired, objects = conversion.read(review)
    except WebhookError as exc:
        assert "\n" not in str(exc)
        return

    async def same(handler: Any, body: Any) -> Any:
        return body

    assert isinstance(desired, str) and all(isinstance(o, dict) for o in objects)
    answer = _done(conversion.answer(review, [], same))
    assert answer["response"]["uid"] == uid
    if answer["response"]["result"]["status"] == "Success":  # nothing to convert: every object already there
        assert len(answer["response"]["convertedObjects"]) == len(objects)
    json.dumps(answer)


# -- a running server --------------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTPS connection to the server, made again when the server closes it."""

    def __init__(self, proc: OpdRun) -> None:
        self.proc = proc
        self.conn: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.proc.port, context=self.proc.ssl,
                                                        timeout=30)
            try:
                self.conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture(scope="module")
def server(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    async def crd() -> None:
        async with await make_api(kubeconfig) as api:
            await ensure_crd(api, CRD)

    asyncio.run(crd())
    proc = OpdRun(tmp_path_factory.mktemp("opd-fuzz"), kubeconfig, "default")
    client = Client(proc)
    try:
        proc.wait_ready()
        yield client
        out = proc.output()
        assert proc.popen.poll() is None, out[-3000:]
        assert "Traceback" not in out and "cannot answer a review" not in out, out[-3000:]
    finally:
        client.close()
        proc.stop()


def _check(status: int, data: bytes, review: Any = None) -> None:
    TRIED["posted"] += 1
    TRIED["5xx"] += status >= 500
    assert status < 500, (status, data[:300])
    if status == 200:
        answer = json.loads(data)
        if isinstance(review, dict) and isinstance(review.get("request"), dict):
            assert answer["response"]["uid"] == review["request"]["uid"]
    else:
        assert status in (400, 404) and data.count(b"\n") == 1, (status, data[:300])


@settings(FUZZ, max_examples=POSTED)
@given(review=admission_reviews, path=st.sampled_from(["/validate/check", "/mutate/check", "/", "/validate/none"]))
def test_admission_reviews_posted_to_a_running_server(server: Client, review: dict[str, Any], path: str) -> None:
    _check(*server.post(path, json.dumps(review).encode()), review)


@settings(FUZZ, max_examples=POSTED)
@given(review=conversion_reviews, path=st.sampled_from([f"/convert/bolts.{GROUP}", "/", "/validate/check"]))
def test_conversion_reviews_posted_to_a_running_server(server: Client, review: dict[str, Any], path: str) -> None:
    _check(*server.post(path, json.dumps(review).encode()), review)


@settings(FUZZ, max_examples=POSTED)
@given(body=hostile, path=paths)
def test_hostile_bodies_posted_to_a_running_server(server: Client, body: bytes, path: str) -> None:
    _check(*server.post(path, body))
