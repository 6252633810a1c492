"""Kopf operators on opd, with only ``import opd as kopf``: an operator of ours, written as Kopf's
examples are (the same features, Kopf's spellings), run by ``opd run`` with kopf run's flags
against the real apiserver; and what each example says happens, checked with the API.

Each object carries a label ``example: NN`` naming the Kopf example whose behaviour it shows.
These are stand-ins, checked in every test run; Kopf's examples themselves run unmodified, under Kopf
and under opd, in tests/kopf/examples (``tox -e kopf-examples``; its harness is checked in
test_examples.py), whose count the README quotes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import ScriptProcess, create_kex, eventually, get_kex
from helpers.processes import Process, _env
from kubernetes_asyncio import client

OPERATOR = '''
import asyncio
import base64
import json
import os
from typing import Any

from kubernetes_asyncio import client

import opd as kopf


def example(n: str, **more: str) -> dict[str, Any]:
    return {"example": n, **more}


# 13-hooks: startup retried, cleanup, login (Kopf's ConnectionInfo), probes.
@kopf.on.startup()
async def startup_fn_retried(retry: int, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if retry < 2:
        raise kopf.TemporaryError(f"Going to succeed in {2 - retry} tries", delay=0.3)
    memo.startup_tries = retry + 1
    memo.children = []  # shared with every object's own memo (Kopf's copies the operator's shallowly)
    logger.info("Starting retried...")


@kopf.on.cleanup()
async def cleanup_fn(logger: kopf.Logger, **_: Any) -> None:
    logger.info("Cleaning up...")


@kopf.on.login(errors=kopf.ErrorsMode.PERMANENT)
def login_fn(**_: Any) -> kopf.ConnectionInfo:
    with open(os.environ["KUBECONFIG"]) as f:
        config = json.load(f)
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    with open(cluster["certificate-authority"], "rb") as f:
        ca_data = base64.b64encode(f.read())
    print("LOGIN via ConnectionInfo", flush=True)
    return kopf.ConnectionInfo(server=cluster["server"], ca_data=ca_data, token=user["token"])


@kopf.on.probe(id="startup_tries")
def startup_tries(memo: kopf.Memo, **_: Any) -> Any:
    return memo.get("startup_tries")


@kopf.on.probe()
def children_made(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.get("children", []))


# 01-minimal: the result is the new status.
@kopf.on.create("kopfexamples", labels=example("01"))
def create_fn(spec: kopf.Spec, **_: Any) -> Any:
    return {"message": f"hello {spec.get('who', 'world')}"}


# 02-children, 99-all-at-once: a child adopted (owner, name, namespace, labels), events on children.
@kopf.on.create("kopfexamples", labels=example("02"))
async def make_child(body: kopf.Body, spec: kopf.Spec, api: Any, memo: kopf.Memo, **_: Any) -> Any:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"field": spec.get("field", "default-value")}}
    kopf.adopt(doc)
    kopf.label(doc, {"made-by": "kopf-style"})
    child = await client.CoreV1Api(api).create_namespaced_config_map(doc["metadata"]["namespace"], doc)
    memo.children.append(child.metadata.name)
    kopf.info(body, reason="AnyReason")
    kopf.event([child], type="Normal", reason="SomeReason", message="Created as part of the job1step")
    return {"children": [child.metadata.uid]}


@kopf.on.create("kopfexamples", labels=example("02"), backoff=1)
def create_2(retry: int, **_: Any) -> Any:
    if not retry:
        raise Exception("Whoops!")
    return {"job2-status": 100}


# 03-exceptions: retried after a TemporaryError and an arbitrary error, then failed for good.
class MyException(Exception):
    pass


@kopf.on.create("kopfexamples", labels=example("03"), backoff=1)
def failing(retry: int, **_: Any) -> None:
    if not retry:
        raise kopf.TemporaryError("First failure.", delay=1)
    elif retry == 1:
        raise MyException("Second failure.")
    raise kopf.PermanentError("Third failure, the final one.")


# 04-events: events of any type, and the shortcuts.
@kopf.on.create("kopfexamples", labels=example("04"))
def post_events(body: kopf.Body, **_: Any) -> None:
    kopf.event(body, type="SomeType", reason="SomeReason", message="Some message")
    kopf.info(body, reason="SomeReason", message="Some info")
    kopf.warn(body, reason="SomeReason", message="Some warning")
    try:
        raise RuntimeError("Exception text.")
    except RuntimeError:
        kopf.exception(body, reason="SomeReason", message="Some exception:")


# 05-handlers, 99-all-at-once: several handlers per cause; update with its diff; a field; delete.
@kopf.on.create("kopfexamples", labels=example("05"))
def create_fn_1(**_: Any) -> str:
    return "CREATED 1st"


@kopf.on.create("kopfexamples", labels=example("05"))
def create_fn_2(**_: Any) -> str:
    return "CREATED 2nd"


@kopf.on.update("kopfexamples", labels=example("05"))
def update_fn(old: Any, new: Any, diff: kopf.Diff, patch: kopf.Patch, **_: Any) -> None:
    patch.status["diff"] = [[op, ".".join(path), before, after] for op, path, before, after in diff]


@kopf.on.field("kopfexamples", field="spec.field", labels=example("05"))
def field_fn(old: Any, new: Any, **_: Any) -> Any:
    return {"old": old, "new": new}


@kopf.on.delete("kopfexamples", labels=example("05"))
def delete_fn_1(name: str, logger: kopf.Logger, **_: Any) -> None:
    logger.info(f"DELETED 1st {name}")


@kopf.on.delete("kopfexamples", labels=example("05"))
def delete_fn_2(name: str, logger: kopf.Logger, **_: Any) -> None:
    logger.info(f"DELETED 2nd {name}")


# 08-events: event handlers, one of them failing.
@kopf.on.event("kopfexamples", labels=example("08"))
def event_fn_with_error(**_: Any) -> None:
    raise Exception("Oops!")


@kopf.on.event("kopfexamples", labels=example("08"))
def normal_event_fn(event: kopf.RawEvent, name: str, logger: kopf.Logger, **_: Any) -> None:
    logger.info(f"Event received: {event['type']} {name}")


# 11-filtering-handlers: labels and annotations, by value or presence; callbacks.
@kopf.on.create("kopfexamples", labels=example("11", somelabel="somevalue"))
def create_with_labels_satisfied(**_: Any) -> str:
    return "Label satisfied."


@kopf.on.create("kopfexamples", labels=example("11", somelabel=kopf.PRESENT))
def create_with_labels_exist(**_: Any) -> str:
    return "Label exists."


@kopf.on.create("kopfexamples", labels=example("11", somelabel="othervalue"))
def create_with_labels_not_satisfied(**_: Any) -> str:
    return "Label not satisfied."


@kopf.on.create("kopfexamples", labels=example("11"), annotations={"someannotation": kopf.PRESENT})
def create_with_annotations_exist(**_: Any) -> str:
    return "Annotation exists."


@kopf.on.create("kopfexamples", labels=example("11"), when=kopf.not_(lambda spec, **_: spec.get("skip")))
def create_unless_skipped(**_: Any) -> str:
    return "Not skipped."


# 14-daemons: a sync daemon failing twice, then pinging until stopped; an async one cancelled.
@kopf.daemon("kopfexamples", labels=example("14"), backoff=1)
def background_sync(spec: kopf.Spec, stopped: kopf.DaemonStopped, logger: kopf.Logger, retry: int,
                    patch: kopf.Patch, **_: Any) -> None:
    if retry < 2:
        patch.status["message"] = f"Failed {retry + 1} times."
        raise kopf.TemporaryError("Simulated failure.", delay=0.3)
    while not stopped:
        logger.info(f"=> Ping from a sync daemon: field={spec['field']!r}, retry={retry}")
        stopped.wait(0.5)
    logger.info(f"sync daemon stopped: {stopped.reason}")


@kopf.daemon("kopfexamples", labels=example("14"), cancellation_backoff=0.5, cancellation_timeout=1.0,
             annotations={"someannotation": "somevalue"})
async def background_async(spec: kopf.Spec, logger: kopf.Logger, **_: Any) -> None:
    try:
        while True:
            logger.info(f"=> Ping from an async daemon: field={spec['field']!r}")
            await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        logger.info("async daemon cancelled")
        raise


# 15-timers: one on a steady beat, one only while the object is idle.
@kopf.timer("kopfexamples", labels=example("15"), interval=0.5, sharp=True)
def every_half_second(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    patch.status["ticks"] = (status.get("ticks") or 0) + 1


@kopf.timer("kopfexamples", labels=example("15"), idle=1.5, interval=0.5)
async def when_idle(patch: kopf.Patch, **_: Any) -> None:
    patch.status["idle_seen"] = True
'''


async def _status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return (await get_kex(api, namespace, name)).get("status") or {}


async def _events(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    found = await client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return list(found.items)


def _probe(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # our own endpoint, on loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(180)
async def test_a_kopf_style_operator_runs_under_opd_run(
    kubeconfig: Path, crd: str, namespace: str, api: client.ApiClient, tmp_path: Path
) -> None:
    path = tmp_path / "example.py"
    path.write_text(OPERATOR)
    liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    proc = Process([sys.executable, "-m", "opd", "run", str(path), "--standalone", "--verbose", "-n", namespace,
                    "--liveness", liveness, "--log-format", "plain"], tmp_path / "run.log",
                   _env(KUBECONFIG=str(kubeconfig)))
    try:
        await eventually(lambda: "ready" in proc.output(), timeout=60)
        out = proc.output()
        assert "LOGIN via ConnectionInfo" in out  # 13: the login handler's credentials are the ones used
        assert "Starting retried..." in out

        async def make(name: str, n: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
            labels = {"example": n, **meta.pop("labels", {})}
            return await create_kex(api, namespace, name, spec or {}, labels=labels, **meta)

        ex02 = await make("ex02", "02", {"field": "value"}, labels={"app": "demo"})
        await make("ex01", "01", {"who": "opd"})
        await make("ex03", "03")
        await make("ex04", "04")
        await make("ex05", "05", {"field": "a", "other": 1})
        await make("ex08", "08")
        await make("ex11", "11", labels={"somelabel": "somevalue"}, annotations={"someannotation": "x"})
        await make("ex14", "14", {"field": "f"}, annotations={"someannotation": "somevalue"})
        await make("ex15", "15")

        # 01: the returned dict is the handler's status.
        assert (await eventually(lambda: _status(api, namespace, "ex01")))["create_fn"] == {"message": "hello opd"}

        # 02/99: the child is adopted: owned by its parent (the controller), named and labelled after it.
        status = await eventually(lambda: _children_done(api, namespace))
        assert status["create_2"] == {"job2-status": 100}  # retried after its first error (backoff=1)
        children = (await client.CoreV1Api(api).list_namespaced_config_map(
            namespace, label_selector="made-by=kopf-style")).items
        assert [c.metadata.uid for c in children] == status["make_child"]["children"]
        child = children[0]
        assert child.metadata.name.startswith("ex02-")
        assert child.metadata.labels == {"example": "02", "app": "demo", "made-by": "kopf-style"}
        [owner] = child.metadata.owner_references
        assert (owner.uid, owner.kind, owner.controller, owner.block_owner_deletion) == (
            ex02["metadata"]["uid"], "KopfExample", True, True)
        events = await eventually(lambda: _events(api, namespace, child.metadata.name))
        assert [(e.reason, e.message) for e in events] == [("SomeReason", "Created as part of the job1step")]
        parent_events = {(e.type, e.reason, e.message or "") for e in await _events(api, namespace, "ex02")}
        assert ("Normal", "AnyReason", "") in parent_events  # kopf.info without a message

        # 03: retried twice (events say why), then failed for good.
        async def failed() -> Any:
            reasons = [e.reason for e in await _events(api, namespace, "ex03")]
            return reasons if "Failed" in reasons else None

        reasons = await eventually(failed, timeout=30)
        assert reasons.count("Retrying") == 2
        messages = " ".join(e.message for e in await _events(api, namespace, "ex03"))
        assert "TemporaryError: First failure." in messages and "MyException: Second failure." in messages
        assert "PermanentError: Third failure, the final one." in messages

        # 04: the events a handler posts, of any type.
        async def posted() -> Any:
            found = {(e.type, e.reason, e.message) for e in await _events(api, namespace, "ex04")}
            return found if len(found) >= 4 else None

        found = await eventually(posted)
        assert {("SomeType", "SomeReason", "Some message"), ("Normal", "SomeReason", "Some info"),
                ("Warning", "SomeReason", "Some warning"),
                ("Warning", "SomeReason", "Some exception: RuntimeError: Exception text.")} <= found

        # 05/99: both creation handlers; then an update with its diff and the field's old and new values.
        status = await eventually(lambda: _status(api, namespace, "ex05"))
        assert (status["create_fn_1"], status["create_fn_2"]) == ("CREATED 1st", "CREATED 2nd")
        # Under Kopf's id (fn/field); old was None: a merge-patch leaves nulls out (as Kopf's).
        assert status["field_fn/spec.field"] == {"new": "a"}
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "ex05", {"spec": {"field": "b"}},
            _content_type="application/merge-patch+json")

        async def updated() -> Any:
            status = await _status(api, namespace, "ex05")
            return status if status.get("diff") else None

        status = await eventually(updated)
        assert status["diff"] == [["change", "spec.field", "a", "b"]]
        assert status["field_fn/spec.field"] == {"old": "a", "new": "b"}

        # 08: event handlers see each event; one failing does not stop the other.
        await eventually(lambda: "Event received: ADDED ex08" in proc.output())

        # 11: only the handlers whose filters match.
        status = await eventually(lambda: _status(api, namespace, "ex11"))
        assert {k: v for k, v in status.items() if k.startswith("create_")} == {
            "create_with_labels_satisfied": "Label satisfied.", "create_with_labels_exist": "Label exists.",
            "create_with_annotations_exist": "Annotation exists.", "create_unless_skipped": "Not skipped."}

        # 14: the sync daemon failed twice (its patch written after each try), then both daemons ping.
        async def failed_twice() -> Any:
            return (await _status(api, namespace, "ex14")).get("message") == "Failed 2 times."

        await eventually(failed_twice)
        await eventually(lambda: "Ping from a sync daemon: field='f', retry=2" in proc.output()
                                               and "Ping from an async daemon: field='f'" in proc.output())

        # 15: the steady timer ticks; the idle one fires once the object has been quiet.
        async def ticked() -> Any:
            status = await _status(api, namespace, "ex15")
            return status if (status.get("ticks") or 0) >= 3 and status.get("idle_seen") else None

        await eventually(ticked, timeout=30)

        # 13: the probes, at kopf run's --liveness endpoint.
        code, report = await asyncio.get_running_loop().run_in_executor(None, _probe, liveness)
        assert code == 200 and report == {"startup_tries": 3, "children_made": 1}

        # Deletions: delete handlers run; daemons are stopped (the async one cancelled); children go too.
        custom = client.CustomObjectsApi(api)
        for name in ("ex05", "ex14", "ex02"):
            await custom.delete_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfexamples", name)

        def logged(*lines: str) -> Any:
            return lambda: all(line in proc.output() for line in lines)

        await eventually(logged("DELETED 1st ex05", "DELETED 2nd ex05", "async daemon cancelled",
                                "sync daemon stopped: object deleted"), timeout=30)

        async def gone(name: str) -> bool:
            items = (await custom.list_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfexamples"))["items"]
            return name not in [i["metadata"]["name"] for i in items]

        for name in ("ex05", "ex14"):
            await eventually(lambda name=name: gone(name), timeout=30)

        async def child_gone() -> bool:  # Kubernetes' garbage collector follows the owner reference
            found = await client.CoreV1Api(api).list_namespaced_config_map(namespace, label_selector="made-by")
            return not found.items

        await eventually(child_gone, timeout=60)

        # SIGINT (Ctrl-C): cleanup handlers run, exit 0, no traceback.
        proc.popen.send_signal(signal.SIGINT)
        assert await asyncio.get_running_loop().run_in_executor(None, proc.popen.wait, 20) == 0
        out = proc.output()
        assert "Cleaning up..." in out
        # Tracebacks only for the handlers' own errors that the examples raise on purpose.
        for chunk in out.split("Traceback (most recent call last)")[1:]:
            assert any(own in chunk[:3000] for own in ("Oops!", "Whoops!", "Second failure.")), chunk[:3000]
    finally:
        proc.stop()


async def _children_done(api: client.ApiClient, namespace: str) -> Any:
    status = await _status(api, namespace, "ex02")
    return status if "make_child" in status and "create_2" in status else None


EMBEDDED = '''
import asyncio, contextlib, os, threading, time

import opd as kopf
from kubernetes_asyncio import client, config

NAMESPACE = os.environ["NAMESPACE"]


@kopf.on.create("kopfexamples")
def create_fn(memo: kopf.Memo, name: str, **_):
    print(memo.create_tpl.format(name=name), flush=True)


@kopf.on.delete("kopfexamples")
def delete_fn(memo: kopf.Memo, name: str, **_):
    print(memo.delete_tpl.format(name=name), flush=True)


def kopf_thread(ready_flag: threading.Event, stop_flag: threading.Event) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with contextlib.closing(loop):
        kopf.configure(verbose=True)  # log formatting
        loop.run_until_complete(kopf.operator(
            ready_flag=ready_flag, stop_flag=stop_flag, namespaces=[NAMESPACE],
            memo=kopf.Memo(create_tpl="Hello, {name}!", delete_tpl="Good bye, {name}!"),
        ))


async def app_activity(steps: int) -> None:
    await config.load_kube_config()
    async with client.ApiClient() as api:
        objects = client.CustomObjectsApi(api)
        for step in range(steps):
            print(f"Do the main app activity here. Step {step + 1}/{steps}.", flush=True)
            body = {"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata": {"name": f"kopf-example-{step}"}}
            await objects.create_namespaced_custom_object("kopf.dev", "v1", NAMESPACE, "kopfexamples", body)
            await asyncio.sleep(1.0)
            await objects.delete_namespaced_custom_object("kopf.dev", "v1", NAMESPACE, "kopfexamples",
                                                          f"kopf-example-{step}")
            await asyncio.sleep(1.0)


ready_flag, stop_flag = threading.Event(), threading.Event()
thread = threading.Thread(target=kopf_thread, kwargs=dict(stop_flag=stop_flag, ready_flag=ready_flag))
thread.start()
ready_flag.wait()
asyncio.run(app_activity(2))
print("Exiting the main app.", flush=True)
stop_flag.set()
thread.join()
print("Exited.", flush=True)
'''


@pytest.mark.timeout(120)
async def test_an_embedded_kopf_style_operator_in_a_thread(
    kubeconfig: Path, crd: str, namespace: str, tmp_path: Path
) -> None:
    script = ScriptProcess(EMBEDDED, tmp_path, {"KUBECONFIG": str(kubeconfig), "NAMESPACE": namespace}).start()
    try:
        code = await asyncio.get_running_loop().run_in_executor(None, script.wait, 60)
        out = script.output()
        assert code == 0, out
        for line in ("Hello, kopf-example-0!", "Good bye, kopf-example-0!", "Hello, kopf-example-1!",
                     "Good bye, kopf-example-1!", "Exited."):
            assert line in out, out
        assert "DEBUG" in out  # kopf.configure(verbose=True): debug lines are logged
        assert "Traceback" not in out
    finally:
        script.stop()


@pytest.mark.parametrize("flag", [["--peering", "default"], ["--priority", "100"], ["--dev"]])
def test_kopf_peering_flags_are_refused_in_one_line(tmp_path: Path, flag: list[str]) -> None:
    path = tmp_path / "example.py"
    path.write_text("import opd as kopf\n\n@kopf.on.create('kopfexamples')\ndef fn(**_):\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "opd", "run", str(path), *flag], capture_output=True, text=True,
                            timeout=60, env=_env())
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]
    assert lines == [f"Error: {flag[0]}: opd run does not peer with other operators (Kopf's KopfPeering): two of "
                     "them would both handle every object; run one (--standalone), or replicas with --ha (Leases)"]


@pytest.mark.parametrize("url", ["127.0.0.1:8080/healthz", "http://127.0.0.1/healthz", "https://h:1/x"])
def test_a_bad_liveness_url_is_one_line(tmp_path: Path, url: str) -> None:
    path = tmp_path / "example.py"
    path.write_text("import opd as kopf\n\n@kopf.on.create('kopfexamples')\ndef fn(**_):\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "opd", "run", str(path), "--liveness", url],
                            capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: --liveness: expected http://HOST:PORT/PATH (e.g. http://0.0.0.0:8080/healthz), got {url!r}")
    assert "Traceback" not in result.stderr
