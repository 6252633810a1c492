"""opd-mirror against a real kube-apiserver (opd's shipped fixtures), run the way the daemon runs it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import opd
import pytest
from kubernetes_asyncio import client
from loguru import logger
from opd.plugin import ENTRY_POINT_GROUP
from opd.plugin.manager import prepare
from opd.testing import RunningPlugin
from opd.testing import eventually as opd_eventually

import opd_mirror

FINALIZER = "mirror.opd.dev/finalizer"  # the persistence prefix the daemon gives the plugin "mirror"


@pytest.fixture
def kube_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plugin finds credentials as opd does: $KUBECONFIG first.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


@pytest.fixture
async def targets(api: client.ApiClient, namespace: str) -> AsyncIterator[list[str]]:
    """Two more namespaces to mirror into, deleted afterwards."""
    core = client.CoreV1Api(api)
    names = [f"{namespace[:56]}-t{i}" for i in (1, 2)]
    for name in names:
        await core.create_namespace({"metadata": {"name": name}})
    yield names
    for name in names:
        with contextlib.suppress(client.ApiException):
            await core.delete_namespace(name)


# These tests wait up to 10 s by default.
eventually = functools.partial(opd_eventually, timeout=10.0)


@contextlib.asynccontextmanager
async def running(config: dict[str, Any], namespaces: list[str]) -> AsyncIterator[None]:
    """The plugin in an operator of its own, set up as ``opd start`` does (its hooks through pluggy,
    its own registry and settings); stopped, and waited for, on leaving."""
    async with RunningPlugin(opd_mirror, "mirror", config=config, namespaces=namespaces, ready_timeout=20):
        yield


async def read(api: client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    path = f"/api/v1/namespaces/{namespace}/{kind}/{name}"
    try:
        obj: dict[str, Any] = await api.call_api(path, "GET", header_params={"Accept": "application/json"},
                                                 response_types_map={200: "object"}, auth_settings=["BearerToken"],
                                                 _return_http_data_only=True)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def warnings_about(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},type=Warning")
    return [e.reason for e in events.items]


async def delete_and_wait(api: client.ApiClient, kind: str, namespace: str, name: str) -> None:
    core = client.CoreV1Api(api)
    delete = core.delete_namespaced_secret if kind == "secrets" else core.delete_namespaced_config_map
    with contextlib.suppress(client.ApiException):
        await delete(name, namespace)
    await eventually(lambda: gone(api, kind, namespace, name))


async def gone(api: client.ApiClient, kind: str, namespace: str, name: str) -> bool:
    return await read(api, kind, namespace, name) is None


def test_entry_point_is_installed() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["mirror"].value == "opd_mirror"
    assert eps["mirror"].load() is opd_mirror


@pytest.mark.parametrize(("config", "error"), [
    ({"target": ["a"]}, r"\[plugins.mirror\].target: unknown key \(did you mean 'targets'\?\)"),
    ({"allowed_target": ["a"]}, "did you mean 'allowed_targets'"),
    ({"targets": "a"}, "targets: expected a list of strings"),
    ({"targets": ["Not_A_Name"]}, "targets: not a namespace name or glob: 'Not_A_Name'"),
    ({"allowed_targets": "team-*"}, "allowed_targets: expected a list of strings"),
    ({"allowed_targets": ["team-*", "kube system"]}, "allowed_targets: not a namespace name or glob: 'kube system'"),
    ({"targets": ["team-a"]}, r"targets: 'team-a' is not in allowed_targets, which allows none \(the default\)"),
    ({"targets": ["team-a", "dev"], "allowed_targets": ["team-*"]}, "'dev' is not in allowed_targets"),
    ({"resync": -1}, "resync: expected seconds >= 0, got -1"),
    ({"resync": True}, "resync: expected a number"),
])
def test_bad_config_is_one_line(config: dict[str, Any], error: str) -> None:
    # As the daemon loads the plugin: its table checked against opd_options, then opd_register.
    with pytest.raises(opd.ConfigError, match=error) as caught:
        prepare(opd_mirror, "mirror", config)
    assert "\n" not in str(caught.value)


def test_defaults_allow_no_target() -> None:
    config = prepare(opd_mirror, "mirror", {}).config
    assert config == {"allowed_targets": [], "targets": [], "resync": 60.0}
    assert not opd_mirror.Config.of(config).allows("default")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_mirrors_updates_prunes_and_deletes(api: client.ApiClient, namespace: str, targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    # Before the operator starts: a foreign object in t1 that a source of the same name must not clobber.
    await core.create_namespaced_config_map(t1, {"metadata": {"name": "clash"}, "data": {"mine": "yes"}})
    async with running({"targets": [t1], "allowed_targets": [t1, t2], "resync": 0.5}, [namespace]):
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "creds", "labels": {"opd.dev/mirror": "true"},
                         "annotations": {"opd.dev/mirror-to": f"{t1}, {t2}"}},
            "type": "example.com/token", "data": {"token": b64("s3cret"), "old": b64("x")}})
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "settings", "labels": {"opd.dev/mirror": "true"}}, "data": {"mode": "fast"}})
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "clash", "labels": {"opd.dev/mirror": "true"}}, "data": {"mine": "no"}})
        await core.create_namespaced_config_map(namespace, {"metadata": {"name": "private"}, "data": {"a": "b"}})

        # The annotation names both targets; the ConfigMap without it goes to the config's targets.
        for target in (t1, t2):
            copy = await eventually(lambda target=target: read(api, "secrets", target, "creds"))
            assert copy["type"] == "example.com/token"
            assert copy["data"] == {"token": b64("s3cret"), "old": b64("x")}
            assert copy["metadata"]["annotations"]["opd.dev/mirrored-from"] == f"{namespace}/creds"
            assert "opd.dev/mirror" not in (copy["metadata"].get("labels") or {})  # a copy is no source
        settings = await eventually(lambda: read(api, "configmaps", t1, "settings"))
        assert settings["data"] == {"mode": "fast"}
        source = await read(api, "configmaps", namespace, "settings")
        assert source is not None
        assert settings["metadata"]["labels"]["opd.dev/mirror-source"] == source["metadata"]["uid"]
        assert FINALIZER in source["metadata"]["finalizers"]
        assert await read(api, "configmaps", t2, "settings") is None
        assert await read(api, "configmaps", t1, "private") is None

        # The foreign object stays as it was, and the source gets a Warning Event.
        assert "MirrorConflict" in await eventually(lambda: warnings_about(api, namespace, "clash"))
        clash = await read(api, "configmaps", t1, "clash")
        assert clash is not None and clash["data"] == {"mine": "yes"}

        # Data changes reach the copies, removed keys included.
        await core.patch_namespaced_secret("creds", namespace, {"data": {"token": b64("n3w"), "old": None}})

        async def updated() -> bool:
            copies = [await read(api, "secrets", t, "creds") for t in (t1, t2)]
            return all(c is not None and c["data"] == {"token": b64("n3w")} for c in copies)

        await eventually(updated)

        # A copy edited by hand is repaired; a target dropped from the annotation loses its copy.
        await core.patch_namespaced_secret("creds", t2, {"data": {"token": b64("tampered")}})
        await core.patch_namespaced_secret("creds", namespace, {"metadata": {"annotations": {
            "opd.dev/mirror-to": t2}}})
        await eventually(lambda: gone(api, "secrets", t1, "creds"))

        async def repaired() -> bool:
            copy = await read(api, "secrets", t2, "creds")
            return copy is not None and copy["data"] == {"token": b64("n3w")}

        await eventually(repaired)

        # Deleting a source deletes its copies first (the finalizer holds it until then).
        await delete_and_wait(api, "secrets", namespace, "creds")
        assert await read(api, "secrets", t2, "creds") is None
        for name in ("settings", "clash"):
            await delete_and_wait(api, "configmaps", namespace, name)
        assert await read(api, "configmaps", t1, "settings") is None
        clash = await read(api, "configmaps", t1, "clash")
        assert clash is not None and clash["data"] == {"mine": "yes"}  # not ours: not deleted either


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_globs_and_missing_namespaces(api: client.ApiClient, namespace: str, targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    missing = f"{namespace[:50]}-nowhere"
    async with running({"resync": 0.5, "allowed_targets": [f"{namespace[:50]}-*"]}, [namespace]):
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "globbed", "labels": {"opd.dev/mirror": "true"},
                         "annotations": {"opd.dev/mirror-to": f"{namespace[:50]}-*, !{t2}, {missing}"}},
            "data": {"k": "v"}})
        await eventually(lambda: read(api, "configmaps", t1, "globbed"))
        assert "MirrorTargetMissing" in await eventually(lambda: warnings_about(api, namespace, "globbed"))
        assert await read(api, "configmaps", t2, "globbed") is None
        assert await read(api, "configmaps", namespace, "globbed") is not None  # the source is not its own copy
        await delete_and_wait(api, "configmaps", namespace, "globbed")
        assert await read(api, "configmaps", t1, "globbed") is None


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_label_set_to_false_stops_mirroring(api: client.ApiClient, namespace: str,
                                                 targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, _ = targets
    labelled = {"opd.dev/mirror": "true"}
    async with running({"targets": [t1], "allowed_targets": [t1], "resync": 0.5}, [namespace]):
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "shared", "labels": labelled}, "data": {"v": b64("1")}})
        await eventually(lambda: read(api, "secrets", t1, "shared"))
        await core.patch_namespaced_secret("shared", namespace, {
            "metadata": {"labels": {"opd.dev/mirror": "false"}}, "data": {"v": b64("2")}})
        await eventually(lambda: _no_finalizer(api, "secrets", namespace, "shared"))
        await asyncio.sleep(1.5)  # three resync intervals: the copy is left as it was
        copy = await read(api, "secrets", t1, "shared")
        assert copy is not None and copy["data"] == {"v": b64("1")}
        await delete_and_wait(api, "secrets", namespace, "shared")
        assert await read(api, "secrets", t1, "shared") is not None  # left alone: documented

        # A new source of that name adopts the copy (it names the source); a Secret's type is
        # immutable, so a copy of another type is replaced.
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "shared", "labels": labelled}, "type": "example.com/new", "data": {"v": b64("3")}})
        source = await eventually(lambda: read(api, "secrets", namespace, "shared"))

        async def adopted() -> bool:
            copy = await read(api, "secrets", t1, "shared")
            return copy is not None and copy["type"] == "example.com/new" and copy["data"] == {"v": b64("3")} and (
                copy["metadata"]["labels"]["opd.dev/mirror-source"] == source["metadata"]["uid"])

        await eventually(adopted)
        await delete_and_wait(api, "secrets", namespace, "shared")
        assert await read(api, "secrets", t1, "shared") is None


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_label_removed_releases_the_finalizer(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    name = f"unlabelled-{uuid.uuid4().hex[:6]}"
    try:
        async with running({"resync": 0}, [namespace]):
            await core.create_namespaced_config_map(namespace, {
                "metadata": {"name": name, "labels": {"opd.dev/mirror": "true"}}})

            async def finalizers() -> list[str]:
                source = await read(api, "configmaps", namespace, name)
                return (source or {}).get("metadata", {}).get("finalizers") or []

            await eventually(finalizers)
            await core.patch_namespaced_config_map(name, namespace, {"metadata": {"labels": {"opd.dev/mirror": None}}})
            await eventually(lambda: _no_finalizer(api, "configmaps", namespace, name), timeout=3.0)
    finally:
        # Whatever opd did, leave nothing that would hold the namespace's deletion.
        with contextlib.suppress(client.ApiException):
            await core.patch_namespaced_config_map(name, namespace, {"metadata": {"finalizers": None}})
            await core.delete_namespaced_config_map(name, namespace)


async def _no_finalizer(api: client.ApiClient, kind: str, namespace: str, name: str) -> bool:
    source = await read(api, kind, namespace, name)
    return source is not None and FINALIZER not in (source["metadata"].get("finalizers") or [])


@pytest.mark.parametrize(("allowed", "namespace", "expected"), [
    ([], "team-a", False),  # the default allows nothing
    (["team-a"], "team-a", True),
    (["team-a"], "team-b", False),
    (["team-*"], "team-b", True),
    (["team-*", "!team-sandbox"], "team-sandbox", False),
    (["*", "!kube-*"], "kube-system", False),
    (["*", "!kube-*"], "default", True),
    (["!kube-system"], "default", False),  # an exclusion alone includes nothing
])
def test_allowed_targets(allowed: list[str], namespace: str, expected: bool) -> None:
    config = prepare(opd_mirror, "mirror", {"allowed_targets": allowed}).config
    assert opd_mirror.Config.of(config).allows(namespace) is expected


async def events_about(api: client.ApiClient, namespace: str, name: str, reason: str) -> list[tuple[str, int]]:
    """(message, count) of each Warning Event ``reason`` about the object ``name``."""
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},type=Warning,reason={reason}")
    return [(e.message, e.count or 1) for e in events.items]


@contextlib.contextmanager
def log_lines() -> Iterator[list[str]]:
    """The messages opd and the plugin log while inside, WARNING and up."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        yield lines
    finally:
        logger.remove(sink)


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_targets_outside_allowed_targets_get_nothing(api: client.ApiClient, namespace: str,
                                                           targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    name = f"creds-{uuid.uuid4().hex[:6]}"  # unique: whatever kube-system holds is not ours
    config = {"allowed_targets": [f"{namespace[:50]}-t*", f"!{t2}"], "resync": 0.3}  # a glob and an exclusion
    with log_lines() as logs:
        async with running(config, [namespace]):
            await core.create_namespaced_secret(namespace, {
                "metadata": {"name": name, "labels": {"opd.dev/mirror": "true"},
                             "annotations": {"opd.dev/mirror-to": f"kube-system, {t1}, {t2}"}},
                "data": {"token": b64("s3cret")}})
            copy = await eventually(lambda: read(api, "secrets", t1, name))
            assert copy["data"] == {"token": b64("s3cret")}

            # The refusal is on the source, for people and tools.
            async def recorded() -> str | None:
                source = await read(api, "secrets", namespace, name)
                return ((source or {})["metadata"].get("annotations") or {}).get("mirror.opd.dev/refused-targets")

            assert await eventually(recorded) == ", ".join(sorted(["kube-system", t2]))

            await asyncio.sleep(2.0)  # six resyncs, and the event poster's batch window
            assert await read(api, "secrets", "kube-system", name) is None
            assert await read(api, "secrets", t2, name) is None
            # Said once (one Event, counted once; one log line), not at every resync.
            refusals = await events_about(api, namespace, name, "MirrorRefused")
            assert refusals == [(f"not copying to {', '.join(sorted(['kube-system', t2]))}: "
                                 "not in [plugins.mirror].allowed_targets", 1)]
            assert sum("not copying to" in line for line in logs) == 1
            assert not any("s3cret" in line or b64("s3cret") in line for line in logs)

            # Asking only for what is allowed clears the record.
            await core.patch_namespaced_secret(name, namespace, {
                "metadata": {"annotations": {"opd.dev/mirror-to": t1}}})
            await eventually(lambda: _is_none(recorded()))

            # A glob for everything still writes only where allowed.
            await core.patch_namespaced_secret(name, namespace, {
                "metadata": {"annotations": {"opd.dev/mirror-to": "*"}}})
            await eventually(lambda: _contains(recorded(), "kube-system"))
            for elsewhere in ("kube-system", "default", t2):
                assert await read(api, "secrets", elsewhere, name) is None
            assert await read(api, "secrets", t1, name) is not None
            await delete_and_wait(api, "secrets", namespace, name)
            assert await read(api, "secrets", t1, name) is None


async def _is_none(value: Awaitable[Any]) -> bool:
    return await value is None


async def _contains(value: Awaitable[str | None], part: str) -> bool:
    return part in (await value or "")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_the_default_allows_no_target(api: client.ApiClient, namespace: str, targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, _ = targets
    async with running({"resync": 0.3}, [namespace]):
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "denied", "labels": {"opd.dev/mirror": "true"},
                         "annotations": {"opd.dev/mirror-to": t1}}, "data": {"k": "v"}})
        assert await eventually(lambda: events_about(api, namespace, "denied", "MirrorRefused"))
        await asyncio.sleep(1.0)
        assert await read(api, "configmaps", t1, "denied") is None
        await delete_and_wait(api, "configmaps", namespace, "denied")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_sources_only_from_served_namespaces(api: client.ApiClient, namespace: str,
                                                   targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, unserved = targets
    labelled = {"opd.dev/mirror": "true"}
    await core.create_namespaced_secret(unserved, {
        "metadata": {"name": "outsider", "labels": labelled, "annotations": {"opd.dev/mirror-to": t1}},
        "data": {"v": b64("x")}})
    async with running({"allowed_targets": [t1], "resync": 0.3}, [namespace]):
        # A source in the served namespace shows that the plugin runs and copies into t1.
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "insider", "labels": labelled, "annotations": {"opd.dev/mirror-to": t1}},
            "data": {"v": b64("y")}})
        await eventually(lambda: read(api, "secrets", t1, "insider"))
        await core.patch_namespaced_secret("outsider", unserved, {"data": {"v": b64("z")}})  # a change: still nothing
        await asyncio.sleep(1.5)
        assert await read(api, "secrets", t1, "outsider") is None
        outsider = await read(api, "secrets", unserved, "outsider")
        assert outsider is not None
        assert not outsider["metadata"].get("finalizers")  # not even touched
        assert not [k for k in outsider["metadata"].get("annotations") or {} if "mirror.opd.dev" in k]
        await delete_and_wait(api, "secrets", namespace, "insider")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_copies_where_no_longer_allowed_are_left_and_said(api: client.ApiClient, namespace: str,
                                                                targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    source = {"metadata": {"name": "narrowed", "labels": {"opd.dev/mirror": "true"},
                           "annotations": {"opd.dev/mirror-to": f"{t1}, {t2}"}}, "data": {"v": "1"}}
    async with running({"allowed_targets": [t1, t2], "resync": 0.3}, [namespace]):
        await core.create_namespaced_config_map(namespace, source)
        for target in (t1, t2):
            await eventually(lambda target=target: read(api, "configmaps", target, "narrowed"))

    # The allow-list loses t2 (a config change, a restart): its copy stays, is no longer updated, and is said.
    with log_lines() as logs:
        async with running({"allowed_targets": [t1], "resync": 0.3}, [namespace]):
            await core.patch_namespaced_config_map("narrowed", namespace, {"data": {"v": "2"}})

            async def updated() -> bool:
                copy = await read(api, "configmaps", t1, "narrowed")
                return copy is not None and copy["data"] == {"v": "2"}

            await eventually(updated)
            left = await eventually(lambda: events_about(api, namespace, "narrowed", "MirrorCopyLeft"))
            assert left[0][0].startswith(f"left the copy {t2}/narrowed as it is")
            await asyncio.sleep(1.0)
            stale = await read(api, "configmaps", t2, "narrowed")
            assert stale is not None and stale["data"] == {"v": "1"}
            assert sum(f"left the copy {t2}/narrowed" in line for line in logs) == 1

            # Deleting the source deletes the allowed copy and leaves the other, with a line.
            await delete_and_wait(api, "configmaps", namespace, "narrowed")
            assert await read(api, "configmaps", t1, "narrowed") is None
            assert await read(api, "configmaps", t2, "narrowed") is not None


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_a_copy_is_never_a_source(api: client.ApiClient, namespace: str, targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    # t1 served too: a copy there, labelled as a source by hand, must not be mirrored on (to t2, or back).
    async with running({"allowed_targets": [namespace, t1, t2], "resync": 0.3}, [namespace, t1]):
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "origin", "labels": {"opd.dev/mirror": "true"},
                         "annotations": {"opd.dev/mirror-to": t1}}, "data": {"k": "v"}})
        await eventually(lambda: read(api, "configmaps", t1, "origin"))
        await core.patch_namespaced_config_map("origin", t1, {"metadata": {
            "labels": {"opd.dev/mirror": "true"}, "annotations": {"opd.dev/mirror-to": f"{t2}, {namespace}"}}})
        assert await eventually(lambda: events_about(api, t1, "origin", "MirrorIgnored"))
        await asyncio.sleep(1.0)
        assert await read(api, "configmaps", t2, "origin") is None
        source = await read(api, "configmaps", namespace, "origin")
        assert source is not None and "opd.dev/mirrored-from" not in (source["metadata"].get("annotations") or {})
        # Unlabel the copy first: it holds a finalizer of its own as a (refused) source.
        await core.patch_namespaced_config_map("origin", t1, {"metadata": {"labels": {"opd.dev/mirror": "false"}}})
        await eventually(lambda: _no_finalizer(api, "configmaps", t1, "origin"))
        await delete_and_wait(api, "configmaps", namespace, "origin")
