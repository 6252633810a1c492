"""Kopf's settings and storages on opd, written from Kopf's documentation (its "Configuration" pages:
peering, persistence, posting, watching, batching/queueing, scanning, networking, execution,
background, admission, process) with ``import opd as kopf``: each setting exists, and either does
what Kopf's page says or is accepted and said once in the log. Where it touches the cluster, checked
on the local apiserver: what was written, and where.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import RunningOperator, create_kex, eventually, get_kex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client
from loguru import logger

import opd as kopf
from opd.engine.state import State, Storage, Writes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    yield lines
    logger.remove(sink)


async def _patch_kex(api: client.ApiClient, namespace: str, name: str, body: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfexamples", name, body, _content_type="application/merge-patch+json")


async def _gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        await get_kex(api, namespace, name)
    except client.ApiException as exc:
        return exc.status == 404
    return False


# --- every setting Kopf documents exists ---------------------------------------------------------------------------

# Kopf's configuration reference: group -> its documented settings (and a value a user might set).
KOPF_SETTINGS: dict[str, dict[str, Any]] = {
    "process": {"ultimate_exiting_timeout": 30},
    "posting": {"enabled": True, "level": 30, "loggers": True, "default_backoffs": (1, 2), "logging_backoffs": 1,
                "worker_limit": 4, "idle_timeout": 2.0, "reporting_component": "x", "reporting_instance": "y",
                "event_name_prefix": "z-"},
    "peering": {"name": "mine", "stealth": True, "priority": 100, "lifetime": 30, "mandatory": True,
                "standalone": True, "clusterwide": True, "namespaced": False},
    "watching": {"server_timeout": 120, "client_timeout": 150, "connect_timeout": 5, "reconnect_backoff": 0.2,
                 "inactivity_timeout": 100.0, "chunk_size": 100, "initial_streaming": True},
    "queueing": {"worker_limit": 10, "idle_timeout": 3.0, "exit_timeout": 1.0, "error_delays": (1, 2, 3),
                 "batch_window": 0.2},
    "batching": {"worker_limit": 11, "batch_window": 0.3},
    "scanning": {"disabled": True},
    "admission": {"server": None, "managed": "auto.example.com"},
    "execution": {"max_workers": 3, "default_backoff": 10},
    "background": {"cancellation_polling": 5, "instant_exit_timeout": 1.0, "instant_exit_zero_time_cycles": 3},
    "networking": {"request_timeout": 30, "connect_timeout": 5, "error_backoffs": (1, 2), "enforce_retry_after": True,
                   "trust_env": True},
    "persistence": {"finalizer": "example.com/my-finalizer", "consistency_timeout": 3.0,
                    "progress_storage": kopf.SmartProgressStorage(),
                    "diffbase_storage": kopf.AnnotationsDiffBaseStorage()},
}


def test_every_documented_setting_is_there_and_takes_a_kopf_value(logged: list[str]) -> None:
    settings = kopf.OperatorSettings()
    for group, names in KOPF_SETTINGS.items():
        section = getattr(settings, group)
        for name, value in names.items():
            getattr(section, name)  # readable, with a default
            setattr(section, name, value)
    assert settings.queueing is settings.batching is settings.processing
    assert settings.processing.workers == 11  # worker_limit is opd's workers
    assert settings.watching.backoff_initial == 0.2 and settings.watching.list_page_size == 100
    assert settings.peering.namespaced is False and settings.peering.clusterwide is True
    assert settings.persistence.finalizer == "example.com/my-finalizer"
    # Each setting opd takes otherwise is said once, naming it.
    for setting in ("peering.mandatory", "peering.priority", "queueing.batch_window",
                    "posting.worker_limit",
                    "scanning.disabled", "networking.trust_env", "background.cancellation_polling",
                    "process.ultimate_exiting_timeout", "persistence.consistency_timeout",
                    "execution.default_backoff", "watching.client_timeout"):
        assert sum(f"settings.{setting} =" in line for line in logged) == 1, setting


def test_a_setting_said_once_per_operator(logged: list[str]) -> None:
    settings = kopf.OperatorSettings()
    settings.peering.priority = 1
    settings.peering.priority = 2
    assert sum("settings.peering.priority" in line for line in logged) == 1
    kopf.OperatorSettings().peering.priority = 3  # another operator's settings: said for it too
    assert sum("settings.peering.priority" in line for line in logged) == 2


def test_a_setting_that_does_not_exist_is_said(logged: list[str]) -> None:
    settings = kopf.OperatorSettings()
    settings.peering.namespace = "x"  # type: ignore[attr-defined]  # (neither Kopf's nor opd's)
    settings.watching.server_timeot = 10  # type: ignore[attr-defined]
    assert any("settings.peering.namespace is no setting" in line for line in logged)
    assert any("settings.watching.server_timeot is no setting" in line for line in logged)
    settings.watching.server_timeout = 10  # a real one says nothing
    assert not any("server_timeout" in line for line in logged)


def test_kopf_nones_keep_a_bound(logged: list[str]) -> None:
    settings = kopf.OperatorSettings()
    settings.queueing.worker_limit = None
    settings.batching.worker_limit = None
    settings.watching.chunk_size = None
    assert settings.processing.workers == 64 and settings.watching.list_page_size == 500
    assert sum("settings.queueing.worker_limit = None: opd keeps its bound" in line for line in logged) == 1
    assert sum("settings.watching.chunk_size = None" in line for line in logged) == 1
    settings.watching.server_timeout = None  # type: ignore[assignment]
    settings.networking.request_timeout = None  # type: ignore[assignment]
    settings.networking.connect_timeout = None  # type: ignore[assignment]
    assert settings.watching.server_timeout == 300
    assert settings.networking.request_timeout == 60.0 and settings.networking.connect_timeout == 10.0


# --- peering (item 2) ------------------------------------------------------------------------------------------------

async def test_peering_settings_in_a_startup_handler_start_the_operator(
        api: client.ApiClient, crd: str, namespace: str, logged: list[str]) -> None:
    registry = kopf.OperatorRegistry()
    created: collections.Counter[str] = collections.Counter()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.standalone = True
        settings.peering.mandatory = True
        settings.peering.name = "my-peering"
        settings.peering.priority = 100
        settings.peering.lifetime = 60
        settings.peering.clusterwide = False
        settings.peering.namespaced = True
        settings.peering.stealth = True

    @kopf.on.create(crd, registry=registry)
    def create_fn(name: str, **_: Any) -> None:
        created[name] += 1

    async with RunningOperator(registry=registry, namespaces=[namespace], ready_timeout=20):
        await create_kex(api, namespace, "peered")
        await eventually(lambda: created["peered"] == 1)
    assert any("settings.peering.standalone = True: nothing to do" in line for line in logged)
    mandatory = [line for line in logged if "settings.peering.mandatory" in line]
    assert len(mandatory) == 1 and "opd run --ha leader" in mandatory[0]


# --- persistence.finalizer (item 3) -------------------------------------------------------------------------------

def test_finalizer_must_be_a_qualified_name() -> None:
    persistence = kopf.OperatorSettings().persistence
    assert persistence.finalizer == "opd.dev/finalizer"
    for bad in ("no-domain", "Example.com/x", "example.com/", "/x", "example.com/a/b", "x" * 300, 7):
        with pytest.raises(ValueError, match=r"settings\.persistence\.finalizer must be a qualified name"):
            persistence.finalizer = bad  # type: ignore[assignment]
    persistence.finalizer = "kopf.zalando.org/KopfFinalizerMarker"
    assert persistence.finalizer == "kopf.zalando.org/KopfFinalizerMarker"


async def test_persistence_finalizer_is_the_finalizer_opd_holds(api: client.ApiClient, crd: str,
                                                                namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = "example.com/my-finalizer"

    @kopf.on.delete(crd, registry=registry)
    def delete_fn(name: str, **_: Any) -> None:
        deleted.append(name)

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "held")

        async def held() -> bool:
            return (await get_kex(api, namespace, "held"))["metadata"].get("finalizers") == ["example.com/my-finalizer"]

        await eventually(held)
        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfexamples", "held")
        await eventually(lambda: _gone(api, namespace, "held"))
    assert deleted == ["held"]


# --- progress storages (item 4) -------------------------------------------------------------------------------------

def _retrying_registry(crd: str, configure: Any, calls: collections.Counter[str],
                       release: asyncio.Event) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    registry_startup = kopf.on.startup(registry=registry)
    registry_startup(configure)

    @kopf.on.create(crd, registry=registry, id="fn")
    async def fn(retry: int, **_: Any) -> None:
        calls["fn"] += 1
        if not release.is_set():
            raise kopf.TemporaryError("not yet", delay=0.3)

    return registry


async def test_status_progress_storage_keeps_progress_in_its_field(api: client.ApiClient, crd: str,
                                                                   namespace: str) -> None:
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.my-op")

    calls: collections.Counter[str] = collections.Counter()
    release = asyncio.Event()
    async with RunningOperator(registry=_retrying_registry(crd, configure, calls, release), namespaces=[namespace]):
        await create_kex(api, namespace, "progress")

        async def retrying() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, "progress")
            record = (obj.get("status") or {}).get("my-op", {}).get("fn") or {}
            return obj if (record.get("retries") or 0) >= 1 else None

        obj = await eventually(retrying)
        annotations = obj["metadata"].get("annotations") or {}
        assert not any(key.endswith("/fn") for key in annotations), annotations  # not in annotations
        assert "progress" not in (obj["status"].get("opd") or {})  # nor in opd's own place
        release.set()

        async def done() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, "progress")
            return obj if calls["fn"] >= 2 and "fn" not in ((obj.get("status") or {}).get("my-op") or {}) else None

        await eventually(done)  # a record is purged when its handler is done, as Kopf does
        await asyncio.sleep(0.5)
    assert calls["fn"] >= 2


@pytest.mark.parametrize("storage", ["annotations", "smart"])
async def test_annotations_and_smart_progress_storages(api: client.ApiClient, crd: str, namespace: str,
                                                       storage: str) -> None:
    """Kopf's AnnotationsProgressStorage(prefix=) and its default SmartProgressStorage(prefix=): records in
    annotations <prefix>/<id>, none written to the status."""
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        kind = kopf.AnnotationsProgressStorage if storage == "annotations" else kopf.SmartProgressStorage
        settings.persistence.progress_storage = kind(prefix="my-op.example.com")

    calls: collections.Counter[str] = collections.Counter()
    release = asyncio.Event()
    name = f"{storage}-progress"
    async with RunningOperator(registry=_retrying_registry(crd, configure, calls, release), namespaces=[namespace]):
        await create_kex(api, namespace, name)

        async def retrying() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, name)
            text = (obj["metadata"].get("annotations") or {}).get("my-op.example.com/fn")
            return obj if text and json.loads(text).get("retries", 0) >= 1 else None

        obj = await eventually(retrying)
        status = obj.get("status") or {}
        assert "kopf" not in status and "progress" not in (status.get("opd") or {}), status
        release.set()

        async def purged() -> bool:
            obj = await get_kex(api, namespace, name)
            return calls["fn"] >= 2 and "my-op.example.com/fn" not in (obj["metadata"].get("annotations") or {})

        await eventually(purged)


def test_smart_storage_reads_records_left_in_the_status() -> None:
    storage = kopf.SmartProgressStorage()
    body = {"status": {"kopf": {"progress": {"fn": {"retries": 2}}}}}
    assert storage.fetch(key="fn", body=body) == {"retries": 2}
    patch: dict[str, Any] = {}
    storage.store(key="fn", record={"retries": 3}, body=body, patch=patch)
    assert patch == {"metadata": {"annotations": {"kopf.zalando.org/fn": '{"retries":3}'}}}


async def test_multi_progress_storage_writes_to_each(api: client.ApiClient, crd: str, namespace: str) -> None:
    """Kopf's page: MultiProgressStorage([AnnotationsProgressStorage(prefix=), StatusProgressStorage(field=)])
    stores in both, and the first found is used when fetching."""
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.MultiProgressStorage([
            kopf.AnnotationsProgressStorage(prefix="my-op.example.com"),
            kopf.StatusProgressStorage(field="status.my-operator"),
        ])

    calls: collections.Counter[str] = collections.Counter()
    release = asyncio.Event()
    async with RunningOperator(registry=_retrying_registry(crd, configure, calls, release), namespaces=[namespace]):
        await create_kex(api, namespace, "multi")

        async def retried_twice() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, "multi")
            text = (obj["metadata"].get("annotations") or {}).get("my-op.example.com/fn")
            status = ((obj.get("status") or {}).get("my-operator") or {}).get("fn") or {}
            both = text and json.loads(text).get("retries", 0) >= 2 and status.get("retries", 0) >= 2
            return obj if both else None

        await eventually(retried_twice)  # the count goes on from the stored record: it is read back
        release.set()
        await eventually(lambda: calls["fn"] >= 3)


# --- diff-base storages (items 4 and 9) --------------------------------------------------------------------------

async def test_annotations_diffbase_storage_keeps_the_diffbase_under_its_key(
        api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    updates: list[Any] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="my.dev", key="last")

    @kopf.on.create(crd, registry=registry)
    def create_fn(**_: Any) -> None:
        pass

    @kopf.on.update(crd, registry=registry)
    def update_fn(diff: kopf.Diff, **_: Any) -> None:
        updates.append(list(diff))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "based", {"size": 1})

        async def stored() -> dict[str, Any] | None:
            obj = await get_kex(api, namespace, "based")
            text = (obj["metadata"].get("annotations") or {}).get("my.dev/last")
            return json.loads(text) if text else None

        base = await eventually(stored)
        assert base == {"spec": {"size": 1}}
        obj = await get_kex(api, namespace, "based")
        assert "lastHandled" not in ((obj.get("status") or {}).get("opd") or {})  # not in opd's own place
        await _patch_kex(api, namespace, "based", {"spec": {"size": 2}})
        await eventually(lambda: len(updates) >= 1)
        await eventually(lambda: _equals(stored, {"spec": {"size": 2}}))
        await asyncio.sleep(1.0)  # its own annotation is no change: no second update
    assert updates == [[("change", ("spec", "size"), 1, 2)]]


async def test_a_diffbase_written_by_hand_is_a_change_not_a_crash(api: client.ApiClient, crd: str,
                                                                  namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    updates: list[Any] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="my.dev", key="last")

    @kopf.on.update(crd, registry=registry)
    def update_fn(old: Any, new: Any, **_: Any) -> None:
        updates.append((old, new))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "by-hand", {"size": 1}, annotations={"my.dev/last": "{not json"})
        await eventually(lambda: bool(updates))
    assert updates[0] == (None, {"spec": {"size": 1}})  # seen as changed, not how (as for a digest)


async def _equals(read: Any, wanted: Any) -> bool:
    return bool(await read() == wanted)


async def test_status_diffbase_storage(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    created: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.my-op.base")

    @kopf.on.create(crd, registry=registry)
    def create_fn(name: str, **_: Any) -> None:
        created.append(name)

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "status-based", {"size": 1})

        async def stored() -> Any:
            obj = await get_kex(api, namespace, "status-based")
            text = ((obj.get("status") or {}).get("my-op") or {}).get("base")
            return json.loads(text) if text else None

        assert await eventually(stored) == {"spec": {"size": 1}}
    async with RunningOperator(registry=registry, namespaces=[namespace]):  # found again after a restart
        await asyncio.sleep(1.0)
    assert created == ["status-based"]


async def test_a_secret_value_never_reaches_a_diffbase_storage(api: client.ApiClient, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    seen: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="my.dev")

    @kopf.on.create("secrets", registry=registry)
    def create_fn(name: str, **_: Any) -> None:
        seen.append(name)

    core = client.CoreV1Api(api)
    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="s"), string_data={"password": "hunter2-very-secret"}))

        async def stored() -> str | None:
            secret = await core.read_namespaced_secret("s", namespace)
            return (secret.metadata.annotations or {}).get("my.dev/last-handled-configuration")

        text = await eventually(stored)
    assert seen == ["s"]
    assert "hunter2" not in text and "aHVudGVyM" not in text  # neither the value nor its base64
    assert json.loads(text)["data"]["password"].startswith("sha256:")


async def test_field_handler_sees_the_status_its_create_handler_wrote(api: client.ApiClient, crd: str,
                                                                      namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    calls: list[tuple[str, Any, Any]] = []

    @kopf.on.create(crd, registry=registry)
    def create_fn(patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Created"

    @kopf.on.field(crd, field="status.phase", new="Created", registry=registry)
    def phase_fn(name: str, old: Any, new: Any, **_: Any) -> None:
        calls.append((name, old, new))

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "phased")
        await eventually(lambda: len(calls) >= 1)
        await _patch_kex(api, namespace, "phased", {"spec": {"other": 1}})  # an unrelated change: not again
        await asyncio.sleep(1.5)
    assert calls == [("phased", None, "Created")]


# --- posting: Events' reporting component, instance and name prefix ----------------------------------------------

async def test_posting_reporting_settings_name_the_events(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.reporting_component = "my-operator"
        settings.posting.reporting_instance = "replica-1"
        settings.posting.event_name_prefix = "my-op-event-"

    @kopf.on.create(crd, registry=registry)
    def create_fn(body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason="Hello", message="posted")

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await create_kex(api, namespace, "posted")

        async def posted() -> Any:
            events = await client.CoreV1Api(api).list_namespaced_event(namespace)
            return [e for e in events.items if e.reason == "Hello"]

        event = (await eventually(posted))[0]
    assert event.metadata.name.startswith("my-op-event-")
    assert (event.reporting_component, event.reporting_instance, event.source.component) == (
        "my-operator", "replica-1", "my-operator")


def test_posting_settings_are_checked_when_set() -> None:
    posting = kopf.OperatorSettings().posting
    with pytest.raises(ValueError, match="event_name_prefix must start an object name"):
        posting.event_name_prefix = "Not Valid"
    with pytest.raises(ValueError, match="reporting_component must be a text"):
        posting.reporting_component = "x" * 200


# --- execution (the executor of the operator's own) ------------------------------------------------------------

async def test_execution_executor_runs_sync_handlers(api: client.ApiClient, crd: str, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    threads: list[str] = []
    executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mine")

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.execution.executor = executor

    @kopf.on.create(crd, registry=registry)
    def create_fn(**_: Any) -> None:
        threads.append(threading.current_thread().name)

    try:
        async with RunningOperator(registry=registry, namespaces=[namespace]):
            await create_kex(api, namespace, "executed")
            await eventually(lambda: bool(threads))
        assert threads[0].startswith("mine")
        assert executor.submit(lambda: 1).result() == 1  # the operator's own: opd does not shut it down
    finally:
        executor.shutdown()


async def test_execution_max_workers_set_at_startup_bounds_sync_handlers(api: client.ApiClient, crd: str,
                                                                         namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    threads: list[str] = []

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.execution.max_workers = 1

    @kopf.on.create(crd, registry=registry)
    def create_fn(**_: Any) -> None:
        threads.append(threading.current_thread().name)
        threading.Event().wait(0.3)  # busy: another object's handler needs another thread, if there is one

    async with RunningOperator(registry=registry, namespaces=[namespace]):
        await asyncio.gather(*(create_kex(api, namespace, f"bounded-{i}") for i in range(4)))
        await eventually(lambda: len(threads) >= 4)
    assert len(set(threads)) == 1, threads


# --- storages, pure logic -----------------------------------------------------------------------------------------

def _settings(**persistence: Any) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    for name, value in persistence.items():
        setattr(settings.persistence, name, value)
    return settings


def test_storage_settings_refuse_what_is_not_a_storage() -> None:
    with pytest.raises(ValueError, match="progress_storage must be a ProgressStorage"):
        _settings(progress_storage="status")
    with pytest.raises(ValueError, match="diffbase_storage must be a DiffBaseStorage"):
        _settings(diffbase_storage=kopf.StatusProgressStorage())
    with pytest.raises(ValueError, match="storage prefix must be a DNS subdomain"):
        kopf.AnnotationsProgressStorage(prefix="Not A Domain")
    with pytest.raises(ValueError, match="diff-base key"):
        kopf.AnnotationsDiffBaseStorage(key="a/b")


def test_kopf_defaults_of_the_storages() -> None:
    assert kopf.StatusProgressStorage().field == ("status", "kopf", "progress")
    assert kopf.StatusProgressStorage(name="x").touch_field == ("status", "x", "dummy")
    assert kopf.StatusDiffBaseStorage().field == ("status", "kopf", "last-handled-configuration")
    assert kopf.AnnotationsDiffBaseStorage().annotation == "kopf.zalando.org/last-handled-configuration"
    assert kopf.AnnotationsProgressStorage().prefix == "kopf.zalando.org"
    # Kopf's docs also name the annotation whole:
    assert kopf.AnnotationsDiffBaseStorage("my-op.example.com/last").annotation == "my-op.example.com/last"
    assert kopf.AnnotationsDiffBaseStorage(name="a.b/c").annotation == "a.b/c"


def test_a_kopf_record_is_not_resumed_from() -> None:
    """Kopf's own records (ISO times) on an object opd now serves are no record of opd's."""
    storage = Storage(_settings(progress_storage=kopf.AnnotationsProgressStorage()).persistence,
                      has_status_subresource=True, handler_ids=["fn"])
    body = {"metadata": {"annotations": {"kopf.zalando.org/fn": json.dumps(
        {"started": "2024-01-01T00:00:00.000000", "retries": 1})}}}
    assert storage.read(body) == State(None, {})


class _MemoryStorage(kopf.ProgressStorage):
    """A storage of the operator's own, as Kopf's docs show subclassing: records in one annotation."""

    def fetch(self, *, key: str, body: Any) -> Any:
        return json.loads((body.get("metadata", {}).get("annotations") or {}).get("mine/all", "{}")).get(key)

    def __init__(self) -> None:
        self.stored: list[str] = []

    def store(self, *, key: str, record: Any, body: Any, patch: Any) -> None:
        self.stored.append(key)
        patch.setdefault("metadata", {}).setdefault("annotations", {})["mine/all"] = json.dumps({key: record})

    def purge(self, *, key: str, body: Any, patch: Any) -> None:
        patch.setdefault("metadata", {}).setdefault("annotations", {})["mine/all"] = None


def test_a_subclassed_storage_is_used() -> None:
    mine = _MemoryStorage()
    storage = Storage(_settings(progress_storage=mine).persistence, has_status_subresource=True,
                      handler_ids=["fn"])
    assert storage.in_status  # not knowing where it writes, opd writes it after the results
    writes = Writes()
    storage.write(writes, old=State(None, {}), diff_base='{"spec":{}}', progress={"fn": {"retries": 1}})
    assert writes.body["metadata"]["annotations"]["mine/all"] == json.dumps({"fn": {"retries": 1}})
    assert writes.status == {"status": {"opd": {"lastHandled": '{"spec":{}}'}}}  # the diff-base: opd's place
    body = {"metadata": {"annotations": writes.body["metadata"]["annotations"]}}
    assert storage.read(body).progress == {"fn": {"retries": 1}}
    assert mine.stored == ["fn"]  # called for the handler's record only (it may write anywhere)


def test_storages_own_annotations_are_no_change() -> None:
    storage = Storage(_settings(progress_storage=kopf.AnnotationsProgressStorage(prefix="my-op.example.com"),
                                diffbase_storage=kopf.AnnotationsDiffBaseStorage(prefix="my.dev", key="last"))
                      .persistence, has_status_subresource=False, handler_ids=["fn"])
    body = {"spec": {"a": 1}, "metadata": {"annotations": {"my-op.example.com/fn": "{}", "my.dev/last": "{}",
                                                           "user/note": "kept"}}}
    assert storage.essence(body) == {"spec": {"a": 1}, "metadata": {"annotations": {"user/note": "kept"}}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(max_size=20), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8), max_size=6))
def test_records_from_outside_never_break_reading(record: dict[str, Any]) -> None:
    """Whatever a progress annotation holds, reading it gives opd-shaped records only, never an error."""
    storage = Storage(_settings(progress_storage=kopf.SmartProgressStorage()).persistence,
                      has_status_subresource=True, handler_ids=["fn"])
    body = {"metadata": {"annotations": {"kopf.zalando.org/fn": json.dumps(record)}},
            "status": {"kopf": {"progress": {"fn": record}}}}
    for rec in storage.read(body).progress.values():
        started = rec.get("started")
        assert started is None or (isinstance(started, (int, float)) and not isinstance(started, bool))
        assert rec.get("retries") is None or type(rec["retries"]) is int


# --- the essence keeps the fields handlers name (item 9), pure logic --------------------------------------------

def test_the_essence_keeps_named_status_and_metadata_fields_but_never_opds_own() -> None:
    storage = Storage(kopf.OperatorSettings().persistence, has_status_subresource=True, handler_ids=["create_fn"],
                      fields=[("status", "phase"), ("status", "opd", "progress"), ("metadata", "resourceVersion"),
                              ("metadata", "ownerReferences"), ("spec", "size")])
    body = {"spec": {"size": 1}, "status": {"phase": "Created", "opd": {"progress": {"x": {}}}, "other": 1},
            "metadata": {"resourceVersion": "7", "ownerReferences": [{"uid": "u"}], "labels": {"a": "b"}}}
    assert storage.essence(body) == {"spec": {"size": 1}, "status": {"phase": "Created"},
                                     "metadata": {"ownerReferences": [{"uid": "u"}], "labels": {"a": "b"}}}
    whole = Storage(kopf.OperatorSettings().persistence, has_status_subresource=True, handler_ids=["create_fn"],
                    fields=[("status",)])
    body["status"]["create_fn"] = {"result": 1}  # a handler's result: opd's own write, as its markers
    assert whole.essence(body)["status"] == {"phase": "Created", "other": 1}
    assert body["status"]["opd"] == {"progress": {"x": {}}}  # the body is not changed


def test_a_named_field_is_in_the_diff_base_written() -> None:
    storage = Storage(kopf.OperatorSettings().persistence, has_status_subresource=True, fields=[("status", "phase")])
    writes = Writes()
    current = json.dumps(storage.essence({"spec": {}, "status": {"phase": "Created"}}), sort_keys=True,
                         separators=(",", ":"))
    storage.write(writes, old=State(None, {}), diff_base=current, progress={})
    assert json.loads(writes.status["status"]["opd"]["lastHandled"]) == {"spec": {}, "status": {"phase": "Created"}}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=50), st.integers(), st.dictionaries(
    st.text(max_size=5), st.text(max_size=5), max_size=3)))
def test_a_diffbase_from_outside_never_breaks_reading(annotation: str, status_value: Any) -> None:
    """Whatever an object holds where a diff-base storage looks, reading gives text or nothing, never an error."""
    storage = Storage(_settings(diffbase_storage=kopf.MultiDiffBaseStorage([
        kopf.StatusDiffBaseStorage(field="status.base"), kopf.AnnotationsDiffBaseStorage(prefix="my.dev", key="last"),
    ])).persistence, has_status_subresource=True)
    body = {"metadata": {"annotations": {"my.dev/last": annotation}}, "status": {"base": status_value}}
    assert isinstance(storage.read(body).diff_base, (str, type(None)))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_finalizer_name_is_taken_or_refused_in_one_line(name: str) -> None:
    persistence = kopf.OperatorSettings().persistence
    try:
        persistence.finalizer = name
    except ValueError as exc:
        assert "\n" not in str(exc).replace(repr(name), "")
        assert persistence.finalizer == "opd.dev/finalizer"
    else:
        domain, _, rest = name.partition("/")
        assert domain and rest and len(rest) <= 63 and persistence.finalizer == name
