"""What opd writes, and where, checked in the cluster: nothing to objects no handler selects, no
Secret data anywhere, results that survive on resources without a status, every kind of
handler's patch applied, optional delete handlers, refused writes backed off, short messages."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import GROUP, VERSION, RunningOperator, create_kex, eventually, get_kex
from kubernetes_asyncio import client, watch
from loguru import logger

import opd
from opd.kube import plain

PLURAL = "kopfexamples"


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


def _ours(meta: dict[str, Any]) -> dict[str, Any]:
    """Everything of opd's on an object: annotations, labels and finalizers in its domain."""
    found = {k: v for k, v in (meta.get("annotations") or {}).items() if "opd.dev/" in k}
    found.update({k: v for k, v in (meta.get("labels") or {}).items() if "opd.dev/" in k})
    found.update({f: "finalizer" for f in meta.get("finalizers") or () if "opd.dev/" in f})
    return found


async def _secret(api: client.ApiClient, namespace: str, name: str, value: str,
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": labels or {}},
            "data": {"password": base64.b64encode(value.encode()).decode()}}
    created: dict[str, Any] = await plain.request(api, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)
    return created


async def _raw(api: client.ApiClient, path: str) -> dict[str, Any]:
    found: dict[str, Any] = await plain.request(api, "GET", path)
    return found


async def test_objects_no_handler_selects_get_no_write_and_secret_data_is_copied_nowhere(
        api: client.ApiClient, namespace: str) -> None:
    """Defect 1: handlers filtered by a label plus a delete handler (a finalizer) wrote opd's diff-base,
    with the Secret's data in it, on every Secret of the namespace."""
    registry = opd.OperatorRegistry()
    events: list[tuple[str, str]] = []

    @opd.on.create("secrets", registry=registry, labels={"x": opd.PRESENT})
    def created(name: str, **_: Any) -> None:
        events.append(("create", name))

    @opd.on.update("secrets", registry=registry, labels={"x": opd.PRESENT})
    def updated(name: str, **_: Any) -> None:
        events.append(("update", name))

    @opd.on.delete("secrets", registry=registry, labels={"x": opd.PRESENT})
    def deleted(name: str, **_: Any) -> None:
        events.append(("delete", name))

    core = client.CoreV1Api(api)
    unselected = {f"plain-{i}": await _secret(api, namespace, f"plain-{i}", f"hunter2-plain-{i}")
                  for i in range(20)}
    for i in range(3):
        await _secret(api, namespace, f"picked-{i}", f"hunter2-picked-{i}", labels={"x": "1"})

    async def held(name: str) -> bool:
        meta = (await _raw(api, f"/api/v1/namespaces/{namespace}/secrets/{name}"))["metadata"]
        return "opd.dev/finalizer" in (meta.get("finalizers") or ())

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        for i in range(3):
            await eventually(lambda i=i: held(f"picked-{i}"))  # type: ignore[misc]
        await asyncio.sleep(1.0)
        for name, before in unselected.items():
            after = await _raw(api, f"/api/v1/namespaces/{namespace}/secrets/{name}")
            # Not one write: the resourceVersion is the one it was created with.
            assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], name
            assert _ours(after["metadata"]) == {}
        for i in range(3):
            meta = (await _raw(api, f"/api/v1/namespaces/{namespace}/secrets/picked-{i}"))["metadata"]
            text = json.dumps(meta)
            assert f"hunter2-picked-{i}" not in text
            assert base64.b64encode(f"hunter2-picked-{i}".encode()).decode() not in text
            assert meta["labels"].get("opd.dev/finalizer") == "true"  # the narrow stream follows it
        assert sorted(events) == [("create", f"picked-{i}") for i in range(3)]

        # Gaining the label makes it new to the operator: a creation, not an update.
        await core.patch_namespaced_secret("plain-0", namespace, {"metadata": {"labels": {"x": "1"}}})
        await eventually(lambda: ("create", "plain-0") in events)
        assert ("update", "plain-0") not in events

        # Leaving the selector while held: opd finds it through its own label and lets go.
        await core.patch_namespaced_secret("picked-0", namespace, {"metadata": {"labels": {"x": None}}})
        await eventually(lambda: _released(api, namespace, "picked-0"))

    # Leaving it while opd is down: found again after a restart.
    await core.patch_namespaced_secret("picked-1", namespace, {"metadata": {"labels": {"x": None}}})
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await eventually(lambda: _released(api, namespace, "picked-1"))
        await core.delete_namespaced_secret("picked-2", namespace)
        await eventually(lambda: ("delete", "picked-2") in events)
    assert ("delete", "picked-0") not in events and ("delete", "picked-1") not in events


async def _released(api: client.ApiClient, namespace: str, name: str) -> bool:
    meta = (await _raw(api, f"/api/v1/namespaces/{namespace}/secrets/{name}"))["metadata"]
    return "opd.dev/finalizer" not in (meta.get("finalizers") or ()) and "opd.dev/finalizer" not in (
        meta.get("labels") or {})


async def test_results_on_a_resource_without_status_are_kept_in_annotations(
        api: client.ApiClient, namespace: str) -> None:
    """Defect 2: a result of a handler on ConfigMaps (no status) vanished without a word."""
    registry = opd.OperatorRegistry()

    @opd.on.create("configmaps", registry=registry)
    def create_fn(name: str, **_: Any) -> dict[str, Any]:
        return {"seen": name}

    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="WARNING")
    core = client.CoreV1Api(api)
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            for i in range(3):
                await core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm-{i}"}})  # type: ignore[arg-type]

            async def stored(name: str) -> Any:
                meta = (await _raw(api, f"/api/v1/namespaces/{namespace}/configmaps/{name}"))["metadata"]
                return (meta.get("annotations") or {}).get("opd.dev/result.create_fn")

            for i in range(3):
                value = await eventually(lambda i=i: stored(f"cm-{i}"))  # type: ignore[misc]
                assert json.loads(value) == {"seen": f"cm-{i}"}
    finally:
        logger.remove(sink)
    said = [line for line in logs if "does not keep handler results" in line]
    assert len(said) == 1, logs  # once per resource, not per object


async def test_timer_daemon_and_event_handlers_patches_are_applied(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """Defect 4: the ``patch`` of timers, daemons and event handlers was dropped."""
    registry = opd.OperatorRegistry()

    @opd.on.timer(crd, registry=registry, interval=0.3)
    def tick(patch: opd.Patch, retry: int, started: float, **_: Any) -> dict[str, Any]:
        patch.metadata.labels["ticked"] = "yes"
        patch.status["timerPhase"] = "ticked"
        return {"retry": retry}

    @opd.on.daemon(crd, registry=registry)
    async def watch(patch: opd.Patch, **_: Any) -> None:
        patch.metadata.annotations["example.com/daemon"] = "done"

    @opd.on.event(crd, registry=registry)
    def seen(patch: opd.Patch, type: str, **_: Any) -> None:
        patch.metadata.annotations["example.com/event"] = "seen"

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "patched")

        async def applied() -> bool:
            obj = await get_kex(api, namespace, "patched")
            meta, status = obj["metadata"], obj.get("status") or {}
            return bool((meta.get("labels") or {}).get("ticked") == "yes"
                        and (meta.get("annotations") or {}).get("example.com/daemon") == "done"
                        and (meta.get("annotations") or {}).get("example.com/event") == "seen"
                        and status.get("timerPhase") == "ticked" and status.get("tick") == {"retry": 0})

        await eventually(applied)


async def test_optional_delete_handler_runs_when_someone_elses_finalizer_holds_the_object(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """Defect 5: ``on.delete(optional=True)`` ran only when another handler held opd's finalizer."""
    registry = opd.OperatorRegistry()
    ran: collections.Counter[str] = collections.Counter()

    @opd.on.delete(crd, registry=registry, optional=True)
    def goodbye(name: str, **_: Any) -> None:
        ran[name] += 1

    custom = client.CustomObjectsApi(api)
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "held", finalizers=["example.com/keep"])
        await create_kex(api, namespace, "free")
        await asyncio.sleep(0.5)
        obj = await get_kex(api, namespace, "held")
        assert "opd.dev/finalizer" not in obj["metadata"].get("finalizers", [])  # optional: never held
        await custom.delete_namespaced_custom_object("kopf.dev", "v1", namespace, PLURAL, "held")
        await custom.delete_namespaced_custom_object("kopf.dev", "v1", namespace, PLURAL, "free")
        await eventually(lambda: ran["held"] == 1 and ran["free"] == 1)
        await custom.patch_namespaced_custom_object("kopf.dev", "v1", namespace, PLURAL, "held",
                                                    {"metadata": {"finalizers": None}},
                                                    _content_type="application/merge-patch+json")
        await asyncio.sleep(1.0)
    assert ran == {"held": 1, "free": 1}


async def test_long_error_messages_are_truncated_in_records_and_events(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """Defect 8: an exception's whole text went into the progress record and the Event."""
    registry = opd.OperatorRegistry()

    @opd.on.create(crd, registry=registry, backoff=60)  # its record stays while it waits to retry
    def verbose(**_: Any) -> None:
        raise ValueError("é" * 5000)

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "loud")

        async def record() -> Any:
            status = (await get_kex(api, namespace, "loud")).get("status") or {}
            return ((status.get("opd") or {}).get("progress") or {}).get("verbose")

        failed = await eventually(record)
        assert failed["retries"] == 1 and 100 < len(failed["message"]) <= 500

        async def events() -> list[Any]:
            found = await client.CoreV1Api(api).list_namespaced_event(namespace)
            return [e for e in found.items if e.involved_object.name == "loud" and e.reason == "Retrying"]

        posted = await eventually(events)
        assert all(len(e.message.encode()) <= 1024 for e in posted)


async def _kubectl(kubeconfig: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec("kubectl", "--kubeconfig", str(kubeconfig), *args,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_refused_writes_back_off_and_are_said_once(
        api: client.ApiClient, crd: str, namespace: str, kubeconfig: Path, tmp_path: Path) -> None:
    """Defect 8: a write refused with 403 (no RBAC for kopfexamples/status) was retried every 2 s
    forever, one log line each."""
    rbac = client.RbacAuthorizationV1Api(api)
    await client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": "op"}})  # type: ignore[arg-type]
    await rbac.create_namespaced_role(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": "op"},
        "rules": [{"apiGroups": ["kopf.dev"], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
                  {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]})
    await rbac.create_namespaced_role_binding(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": "op"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}]})
    await client.RbacAuthorizationV1Api(api).create_cluster_role_binding({  # type: ignore[arg-type]
        "metadata": {"name": f"op-discovery-{namespace}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:discovery"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}]})
    token = (await _kubectl(kubeconfig, "create", "token", "op", "-n", namespace)).strip()
    config = json.loads(await _kubectl(kubeconfig, "config", "view", "--raw", "-o", "json"))
    config["users"] = [{"name": "op", "user": {"token": token}}]
    for ctx in config["contexts"]:
        ctx["context"]["user"] = "op"
    limited = tmp_path / "limited.kubeconfig"
    limited.write_text(json.dumps(config))

    registry = opd.OperatorRegistry()
    opd.on.create(crd, registry=registry)(lambda **_: {"done": True})
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="DEBUG", filter=lambda r: "writ" in r["message"])
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace],
                                   login=opd.Login(kubeconfig=str(limited))):
            await create_kex(api, namespace, "denied")
            await asyncio.sleep(9.0)
    finally:
        logger.remove(sink)
    said = [line for line in logs if "was refused" in line and "/denied" in line]
    tries = [line for line in logs if "/denied" in line and ("was refused" in line or "failed again" in line)]
    assert len(said) == 1, logs  # one line per object and outcome
    # Backoff 2 s, 4 s, 8 s (with jitter): at most 3 tries in 9 s (it was 5, every 2 s).
    assert 2 <= len(tries) <= 3, logs


async def test_a_result_that_is_not_json_fails_only_its_own_handler(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """Defect 8: a result that is not JSON (a set, NaN) failed every handler written with it."""
    registry = opd.OperatorRegistry()
    opd.on.create(crd, registry=registry, id="bad_set")(lambda **_: {"ids": {1, 2}})
    opd.on.create(crd, registry=registry, id="bad_nan")(lambda **_: float("nan"))

    @opd.on.create(crd, registry=registry, id="good")
    def good(patch: opd.Patch, **_: Any) -> str:
        patch.metadata.labels["good"] = "yes"
        return "fine"

    states: list[dict[str, Any]] = []  # every state the API server had, in order

    async def observe() -> None:
        stream = watch.Watch().stream(client.CustomObjectsApi(api).list_namespaced_custom_object,
                                      GROUP, VERSION, namespace, PLURAL, timeout_seconds=60)
        async for event in stream:
            states.append(event["object"])

    observer = asyncio.create_task(observe())
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await create_kex(api, namespace, "mixed")

            async def written() -> Any:
                obj = await get_kex(api, namespace, "mixed")
                return obj if (obj.get("status") or {}).get("good") == "fine" else None

            obj = await eventually(written)
            assert obj["metadata"]["labels"] == {"good": "yes"}
            assert "bad_set" not in obj["status"] and "bad_nan" not in obj["status"]
            await asyncio.sleep(1.0)
            obj = await get_kex(api, namespace, "mixed")
            assert obj["status"]["opd"]["lastHandled"]  # all three are done: two of them failed for good
    finally:
        observer.cancel()
    # The handler's patch lands first: no state ever shows its result without its label (CI once saw one).
    with_result = [o for o in states if (o.get("status") or {}).get("good") == "fine"]
    assert with_result and all((o["metadata"].get("labels") or {}).get("good") == "yes" for o in with_result)


async def test_timers_and_daemons_retry_and_time_out_as_every_handler_does(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    """Design step of #11: errors=, retries=, backoff=, timeout= and the retry kwarg mean the same for
    timers and daemons as for change handlers."""
    registry = opd.OperatorRegistry()
    tries: list[int] = []
    daemon_runs: list[int] = []

    @opd.on.timer(crd, registry=registry, interval=0.5, backoff=0.1, retries=5)
    def flaky(retry: int, **_: Any) -> None:
        tries.append(retry)
        if retry < 2:
            raise RuntimeError("not yet")

    @opd.on.daemon(crd, registry=registry, timeout=0.5, backoff=0.1)
    async def slow(retry: int, stopped: opd.Stopped, **_: Any) -> None:
        daemon_runs.append(retry)
        await asyncio.sleep(30)

    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="ERROR")
    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await create_kex(api, namespace, "ticking")
            await eventually(lambda: tries.count(0) >= 2)
            await asyncio.sleep(0.5)
    finally:
        logger.remove(sink)
    assert tries[:4] == [0, 1, 2, 0]  # retried within a run; the next run starts afresh
    assert daemon_runs == [0]  # its timeout is over all its tries: one run, then a final failure
    assert sum("daemon 'slow'" in line and "HandlerTimeoutError" in line for line in logs) == 1, logs


async def test_leaving_the_label_selector_is_not_a_deletion(api: client.ApiClient, crd: str, namespace: str) -> None:
    """With a server-side selector, an object that loses the label leaves the stream with a DELETED
    event carrying its earlier content: optional delete handlers must not take it for a deletion."""
    registry = opd.OperatorRegistry()
    ran: list[str] = []
    opd.on.delete(crd, registry=registry, labels={"x": opd.PRESENT}, optional=True)(
        lambda name, **_: ran.append(name))
    custom = client.CustomObjectsApi(api)
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "leaves", labels={"x": "1"})
        await create_kex(api, namespace, "goes", labels={"x": "1"})
        await asyncio.sleep(0.5)
        await custom.patch_namespaced_custom_object("kopf.dev", "v1", namespace, PLURAL, "leaves",
                                                    {"metadata": {"labels": {"x": None}}},
                                                    _content_type="application/merge-patch+json")
        await custom.delete_namespaced_custom_object("kopf.dev", "v1", namespace, PLURAL, "goes")
        await eventually(lambda: ran == ["goes"])
        await asyncio.sleep(1.0)
    assert ran == ["goes"]


async def test_handlers_of_secrets_get_the_data_in_new_and_the_diff_base_keeps_digests(
        api: client.ApiClient, namespace: str) -> None:
    """Kopf's kwargs reference: ``new`` is the object's new essence and ``diff`` holds the new values.
    A Secret's handlers got opd's salted digests there (the essence kept as the diff-base); they get
    the data itself now, in memory only: the diff-base written to the Secret still holds no value,
    and ``old`` (read back from it) can only be digests."""
    registry = opd.OperatorRegistry()
    seen: list[tuple[str, Any, Any, Any]] = []

    @opd.on.update("secrets", registry=registry, labels={"x": opd.PRESENT})
    def updated(old: Any, new: Any, diff: Any, **_: Any) -> None:
        seen.append(("update", old["data"]["k"], new["data"]["k"], [tuple(d) for d in diff]))

    @opd.on.field("secrets", field="data.k", registry=registry, labels={"x": opd.PRESENT})
    def field_k(old: Any, new: Any, diff: Any, **_: Any) -> None:
        seen.append(("field", old, new, [tuple(d) for d in diff]))

    @opd.on.field("secrets", field="data.k", new=base64.b64encode(b"hunter2-two").decode(),
                  registry=registry, labels={"x": opd.PRESENT})
    def field_k_filtered(new: Any, **_: Any) -> None:
        seen.append(("filtered", None, new, None))

    one, two = (base64.b64encode(v).decode() for v in (b"hunter2-one", b"hunter2-two"))
    path = f"/api/v1/namespaces/{namespace}/secrets/s"
    await plain.request(api, "POST", f"/api/v1/namespaces/{namespace}/secrets",
                        body={"metadata": {"name": "s", "labels": {"x": "1"}}, "data": {"k": one}})

    async def based() -> bool:
        meta = (await _raw(api, path))["metadata"]
        return "opd.dev/last-handled-configuration" in (meta.get("annotations") or {})

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await eventually(based)
        await client.CoreV1Api(api).patch_namespaced_secret("s", namespace, {"data": {"k": two}})
        await eventually(lambda: {"update", "filtered"} <= {kind for kind, *_ in seen})
        await asyncio.sleep(0.5)  # and the field handler's run for it, just before or after

    got = {kind: (old, new, diff) for kind, old, new, diff in seen}
    assert got["update"][1] == two and got["field"][1] == two and got["filtered"][1] == two
    digest = got["field"][0]  # old: what the diff-base kept, a digest of the old value
    assert digest == got["update"][0] and isinstance(digest, str) and digest not in (one, two)
    assert ("change", ("data", "k"), digest, two) in got["update"][2]
    assert got["field"][2] == [("change", (), digest, two)]
    stored = json.dumps((await _raw(api, path))["metadata"])
    for value in ("hunter2-one", "hunter2-two", one, two):
        assert value not in stored  # the diff-base keeps digests only


async def test_a_diff_base_copied_to_another_object_with_its_annotations_is_not_that_objects(
        api: client.ApiClient, namespace: str) -> None:
    """Operators copy an object's annotations to the children they create, leaving out Kopf's own
    domain only (dask-kubernetes: a DaskCluster's to its DaskWorkerGroup). With opd's diff-base among
    them, the child looked handled already: its creation was taken for an update and its create
    handler never ran. opd's diff-base names the object it was written for; another's counts as none."""
    registry = opd.OperatorRegistry()
    created: list[str] = []
    selected = {"copied": "yes"}

    @opd.on.create("configmaps", labels=selected, registry=registry)
    def create_fn(name: str, **_: Any) -> None:
        created.append(name)

    @opd.on.update("configmaps", labels=selected, registry=registry)  # a diff-base is kept
    def update_fn(name: str, **_: Any) -> None:
        pass

    core = client.CoreV1Api(api)

    async def annotations(name: str) -> dict[str, str]:
        meta = (await _raw(api, f"/api/v1/namespaces/{namespace}/configmaps/{name}"))["metadata"]
        return dict(meta.get("annotations") or {})

    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "parent", "labels": selected},
                                                        "data": {"a": "1"}})
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await eventually(lambda: created == ["parent"])
        copied = await eventually(lambda: _with_diff_base(annotations("parent")))
        await core.create_namespaced_config_map(namespace, {"metadata": {
            "name": "child", "labels": selected, "annotations": copied}, "data": {"a": "1"}})
        await eventually(lambda: "child" in created)
        base = (await annotations("child"))["opd.dev/last-handled-configuration"]
        assert json.loads(base)["@uid"] == (await _raw(
            api, f"/api/v1/namespaces/{namespace}/configmaps/child"))["metadata"]["uid"]
    assert created == ["parent", "child"]


async def _with_diff_base(found: Any) -> dict[str, str] | None:
    annotations: dict[str, str] = await found
    return annotations if "opd.dev/last-handled-configuration" in annotations else None
