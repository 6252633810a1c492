"""opd-mirror against a real kube-apiserver (opd's shipped fixtures), run the way the daemon runs it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import subprocess
import sys
import tomllib
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


def rule(source: str, *targets: str, names: list[str] | None = None) -> dict[str, Any]:
    """One ``[[plugins.mirror.rules]]`` table."""
    return {"from": source, "to": list(targets), **({"names": names} if names is not None else {})}


@pytest.mark.parametrize(("config", "error"), [
    ({"rule": []}, r"\[plugins.mirror\].rule: unknown key \(did you mean 'rules'\?\)"),
    ({"rules": "a"}, r"\[plugins.mirror\].rules: expected a list of tables, got string"),
    ({"rules": [{"from": "a"}]}, r"rules\[0\].to: required: the namespaces to copy into"),
    ({"rules": [{"to": ["a"]}]}, r"rules\[0\].from: required"),
    ({"rules": [rule("a", "b"), {"from": "a", "too": ["b"]}]}, r"rules\[1\].too: unknown key \(did you mean 'to'\?\)"),
    ({"rules": [rule("a")]}, r"rules\[0\].to: expected at least one namespace name"),
    ({"rules": [rule("a", "team-*")]}, r"rules\[0\].to: expected namespace names \(no globs"),
    ({"rules": [rule("a", "Not_A_Name")]}, r"rules\[0\].to: expected namespace names"),
    ({"rules": [rule("a*", "b")]}, r"rules\[0\].from: expected a namespace name, got 'a\*'"),
    ({"rules": [rule("a", "b", "kube-system")]}, r"rules\[0\].to: 'kube-system' is refused: opd never copies into "
                                                 r"kube-\* namespaces"),
    ({"rules": [rule("a", "kube-public")]}, "'kube-public' is refused"),
    ({"rules": [rule("a", "kube-node-lease")]}, "'kube-node-lease' is refused"),
    ({"rules": [rule("a", "a")]}, r"rules\[0\].to: 'a' is the rule's own from"),
    ({"rules": [rule("a", "b", names=["!x"])]}, r"rules\[0\].names: only exclusions"),
    ({"rules": [rule("a", "b", names=["a b"])]}, r"rules\[0\].names: expected object names or globs"),
    ({"rules": [{"from": "a", "to": "b"}]}, r"rules\[0\].to: expected a list of namespace names, got 'b'"),
    # The keys of the first version point to rules, in one line.
    ({"allowed_targets": ["team-*"]}, r"\[plugins.mirror\].allowed_targets: no longer read: write one "
                                      r"\[\[plugins.mirror.rules\]\] per source namespace"),
    ({"targets": ["team-a"]}, r"\[plugins.mirror\].targets: no longer read"),
    ({"resync": -1}, "resync: expected seconds >= 0, got -1"),
    ({"resync": True}, "resync: expected a number"),
])
def test_bad_config_is_one_line(config: dict[str, Any], error: str) -> None:
    # As the daemon loads the plugin: its table checked against opd_options, then opd_register.
    with pytest.raises(opd.ConfigError, match=error) as caught:
        prepare(opd_mirror, "mirror", config)
    assert "\n" not in str(caught.value)


def test_opd_config_check_reports_bad_rules_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["mirror"]\n[plugins.mirror]\nallowed_targets = ["*"]\n'
                    '[[plugins.mirror.rules]]\nfrom = "platform"\nto = ["team-a", "kube-system"]\n')
    result = subprocess.run([sys.executable, "-m", "opd", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    problems = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert problems == [
        f"{path}: [plugins.mirror].allowed_targets: no longer read: write one [[plugins.mirror.rules]] per source "
        'namespace, with from = "<namespace>" and to = ["<namespace>", ...] (see the opd-mirror README)',
        f"{path}: [plugins.mirror].rules: rules[0].to: 'kube-system' is refused: opd never copies into kube-* "
        "namespaces (kube-system, kube-public, kube-node-lease), whose Secrets the cluster itself trusts",
    ]


def test_defaults_copy_nothing_and_watch_nothing() -> None:
    prepared = prepare(opd_mirror, "mirror", {})
    assert prepared.config == {"rules": [], "resync": 60.0, "allowed_targets": None, "targets": None}
    assert not opd_mirror.Config.of(prepared.config).targets_for("default", "x")
    # No rule: no handler of Secrets or ConfigMaps, so opd neither watches them nor asks rights for them.
    assert list(prepared.registry.resources()) == []
    assert opd_mirror.opd_rbac(prepared.config) == []


def test_readme_and_etc_opd_toml_examples_fit_the_options() -> None:
    """Each TOML example of the README, and etc/opd.toml's commented [plugins.mirror] uncommented, load."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        table = tomllib.loads(block)["plugins"]["mirror"]
        assert opd_mirror.Config.of(prepare(opd_mirror, "mirror", table).config).rules
    etc = (Path(__file__).parents[3] / "etc" / "opd.toml").read_text()
    found = re.search(r"^# \[plugins\.mirror\]\n((?:#.*\n)*)", etc, re.MULTILINE)
    assert found is not None
    example = [line[2:] for line in found.group(1).splitlines() if re.match(r"# (\w+ = |\[\[)", line)]
    table = tomllib.loads("[plugins.mirror]\n" + "\n".join(example))["plugins"]["mirror"]
    assert sorted(table) == ["resync", "rules"]
    cfg = opd_mirror.Config.of(prepare(opd_mirror, "mirror", table).config)
    assert cfg.targets_for("platform", "registry") == {"team-a", "team-b"}
    assert cfg.targets_for("platform", "internal-ca") == set()


@pytest.mark.parametrize(("rules", "source", "expected"), [
    ([], ("platform", "x"), set()),  # no rule, no target
    ([rule("platform", "team-a", "team-b")], ("platform", "x"), {"team-a", "team-b"}),
    ([rule("platform", "team-a")], ("other", "x"), set()),  # only the rule's own namespace is a source
    ([rule("platform", "team-a", names=["registry-*"])], ("platform", "registry-eu"), {"team-a"}),
    ([rule("platform", "team-a", names=["registry-*"])], ("platform", "bootstrap-token-x"), set()),
    ([rule("platform", "team-a", names=["*", "!secret-*"])], ("platform", "secret-x"), set()),
    ([rule("platform", "team-a"), rule("platform", "team-b", names=["ca"])], ("platform", "ca"), {"team-a", "team-b"}),
    ([rule("platform", "team-a"), rule("team-a", "platform")], ("team-a", "x"), {"platform"}),
])
def test_rules_say_where_a_source_goes(rules: list[dict[str, Any]], source: tuple[str, str],
                                       expected: set[str]) -> None:
    config = prepare(opd_mirror, "mirror", {"rules": rules}).config
    assert opd_mirror.Config.of(config).targets_for(*source) == expected


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_mirrors_updates_prunes_and_deletes(api: client.ApiClient, namespace: str, targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    # Before the operator starts: a foreign object in t1 that a source of the same name must not clobber.
    await core.create_namespaced_config_map(t1, {"metadata": {"name": "clash"}, "data": {"mine": "yes"}})
    # "creds" may go to both targets; every other source only to t1 (the rules' names).
    rules = [rule(namespace, t1, t2, names=["creds"]), rule(namespace, t1, names=["*", "!creds"])]
    async with running({"rules": rules, "resync": 0.5}, [namespace]):
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "creds", "labels": {"opd.dev/mirror": "true"},
                         "annotations": {"opd.dev/mirror-to": f"{t1}, {t2}"}},
            "type": "example.com/token", "data": {"token": b64("s3cret"), "old": b64("x")}})
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "settings", "labels": {"opd.dev/mirror": "true"}}, "data": {"mode": "fast"}})
        await core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "clash", "labels": {"opd.dev/mirror": "true"}}, "data": {"mine": "no"}})
        await core.create_namespaced_config_map(namespace, {"metadata": {"name": "private"}, "data": {"a": "b"}})

        # The annotation names both targets; the ConfigMap without it goes to its rule's targets.
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
    async with running({"resync": 0.5, "rules": [rule(namespace, t1, t2, missing)]}, [namespace]):
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
    async with running({"rules": [rule(namespace, t1)], "resync": 0.5}, [namespace]):
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
        async with running({"resync": 0, "rules": [rule(namespace, f"{namespace[:50]}-elsewhere")]}, [namespace]):
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


async def recorded(api: client.ApiClient, namespace: str, name: str) -> str | None:
    """The source's record of the targets it asked for and was refused."""
    source = await read(api, "secrets", namespace, name)
    return ((source or {}).get("metadata", {}).get("annotations") or {}).get("mirror.opd.dev/refused-targets")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_a_source_reaches_only_its_rules_targets(api: client.ApiClient, namespace: str,
                                                       targets: list[str]) -> None:
    # The attack of issue #18: whoever may create a Secret in a served namespace names its copy's
    # targets. A Secret named like a bootstrap token, asking for kube-system and a namespace no rule
    # gives it, gets a copy only where its rule says.
    core = client.CoreV1Api(api)
    t1, t2 = targets
    name = f"bootstrap-token-{uuid.uuid4().hex[:6]}"  # unique: whatever kube-system holds is not ours
    with log_lines() as logs:
        async with running({"rules": [rule(namespace, t1)], "resync": 0.3}, [namespace]):
            await core.create_namespaced_secret(namespace, {
                "metadata": {"name": name, "labels": {"opd.dev/mirror": "true"},
                             "annotations": {"opd.dev/mirror-to": f"kube-system, {t1}, {t2}"}},
                "data": {"token": b64("s3cret")}})
            copy = await eventually(lambda: read(api, "secrets", t1, name))
            assert copy["data"] == {"token": b64("s3cret")}

            # The refusal is on the source, for people and tools.
            refused = ", ".join(sorted(["kube-system", t2]))
            assert await eventually(lambda: recorded(api, namespace, name)) == refused

            await asyncio.sleep(2.0)  # six resyncs, and the event poster's batch window
            assert await read(api, "secrets", "kube-system", name) is None
            assert await read(api, "secrets", t2, name) is None
            # Said once (one Event, counted once; one log line), not at every resync.
            refusals = await events_about(api, namespace, name, "MirrorRefused")
            assert refusals == [(f"not copying to {refused}: no rule of [plugins.mirror] copies this source there", 1)]
            assert sum("not copying to" in line for line in logs) == 1
            assert not any("s3cret" in line or b64("s3cret") in line for line in logs)

            # Asking only for what a rule gives clears the record.
            await core.patch_namespaced_secret(name, namespace, {
                "metadata": {"annotations": {"opd.dev/mirror-to": t1}}})
            await eventually(lambda: _is_none(recorded(api, namespace, name)))

            # A glob for everything matches among the rule's targets only.
            await core.patch_namespaced_secret(name, namespace, {
                "metadata": {"annotations": {"opd.dev/mirror-to": "*, kube-system"}}})
            await eventually(lambda: _contains(recorded(api, namespace, name), "kube-system"))
            await asyncio.sleep(1.0)
            for elsewhere in ("kube-system", "default", t2):
                assert await read(api, "secrets", elsewhere, name) is None
            assert await read(api, "secrets", t1, name) is not None
            await delete_and_wait(api, "secrets", namespace, name)
            assert await read(api, "secrets", t1, name) is None


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_cluster_credentials_are_never_copied(api: client.ApiClient, namespace: str,
                                                    targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, _ = targets
    labelled = {"opd.dev/mirror": "true"}
    token = f"bootstrap-token-{uuid.uuid4().hex[:6]}"
    async with running({"rules": [rule(namespace, t1)], "resync": 0.3}, [namespace]):
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "sa-token", "labels": labelled,
                         "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/service-account-token", "data": {"token": b64("t0ken")}})
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": token, "labels": labelled}, "type": "bootstrap.kubernetes.io/token",
            "data": {"token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef")}})
        # A plain Secret beside them shows that the plugin runs and copies into t1.
        await core.create_namespaced_secret(namespace, {
            "metadata": {"name": "plain", "labels": labelled}, "data": {"v": b64("x")}})
        await eventually(lambda: read(api, "secrets", t1, "plain"))
        refused = (("sa-token", "kubernetes.io/service-account-token"), (token, "bootstrap.kubernetes.io/token"))
        for name, kind in refused:
            said = await eventually(lambda name=name: events_about(api, namespace, name, "MirrorRefused"))
            assert said == [(f"not mirroring: a Secret of type {kind} is a credential of the cluster itself, "
                             "never copied", 1)]
        await asyncio.sleep(1.0)  # three resyncs: still nothing, said once
        for name in ("sa-token", token):
            assert await read(api, "secrets", t1, name) is None
            assert [count for _, count in await events_about(api, namespace, name, "MirrorRefused")] == [1]
        for name in ("sa-token", token, "plain"):
            await delete_and_wait(api, "secrets", namespace, name)


async def _is_none(value: Awaitable[Any]) -> bool:
    return await value is None


async def _contains(value: Awaitable[str | None], part: str) -> bool:
    return part in (await value or "")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_without_rules_nothing_is_watched_or_copied(api: client.ApiClient, namespace: str,
                                                          targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, _ = targets
    with log_lines() as logs:
        async with running({"resync": 0.3}, [namespace]):
            await core.create_namespaced_config_map(namespace, {
                "metadata": {"name": "denied", "labels": {"opd.dev/mirror": "true"},
                             "annotations": {"opd.dev/mirror-to": t1}}, "data": {"k": "v"}})
            await asyncio.sleep(1.5)
            assert await read(api, "configmaps", t1, "denied") is None
            source = await read(api, "configmaps", namespace, "denied")
            assert source is not None and not source["metadata"].get("finalizers")  # not even touched
    assert any("no [[plugins.mirror.rules]]" in line for line in logs)
    await delete_and_wait(api, "configmaps", namespace, "denied")


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_sources_only_from_served_namespaces_a_rule_names(api: client.ApiClient, namespace: str,
                                                                 targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    labelled = {"opd.dev/mirror": "true"}
    outsider = f"{namespace[:50]}-out"
    await core.create_namespace({"metadata": {"name": outsider}})
    try:
        # outsider: named by a rule, not served. t2: served, named by no rule as a source.
        for where in (outsider, t2):
            await core.create_namespaced_secret(where, {
                "metadata": {"name": "outsider", "labels": labelled, "annotations": {"opd.dev/mirror-to": t1}},
                "data": {"v": b64("x")}})
        rules = [rule(namespace, t1), rule(outsider, t1)]
        async with running({"rules": rules, "resync": 0.3}, [namespace, t2]):
            # A source in the served namespace shows that the plugin runs and copies into t1.
            await core.create_namespaced_secret(namespace, {
                "metadata": {"name": "insider", "labels": labelled, "annotations": {"opd.dev/mirror-to": t1}},
                "data": {"v": b64("y")}})
            await eventually(lambda: read(api, "secrets", t1, "insider"))
            for where in (outsider, t2):
                await core.patch_namespaced_secret("outsider", where, {"data": {"v": b64("z")}})  # a change
            await asyncio.sleep(1.5)
            assert await read(api, "secrets", t1, "outsider") is None
            for where in (outsider, t2):
                found = await read(api, "secrets", where, "outsider")
                assert found is not None
                assert not found["metadata"].get("finalizers")  # not even touched
                assert not [k for k in found["metadata"].get("annotations") or {} if "mirror.opd.dev" in k]
            await delete_and_wait(api, "secrets", namespace, "insider")
    finally:
        with contextlib.suppress(client.ApiException):
            await core.delete_namespace(outsider)


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_copies_no_rule_gives_any_longer_are_left_and_said(api: client.ApiClient, namespace: str,
                                                                 targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    source = {"metadata": {"name": "narrowed", "labels": {"opd.dev/mirror": "true"},
                           "annotations": {"opd.dev/mirror-to": f"{t1}, {t2}"}}, "data": {"v": "1"}}
    async with running({"rules": [rule(namespace, t1, t2)], "resync": 0.3}, [namespace]):
        await core.create_namespaced_config_map(namespace, source)
        for target in (t1, t2):
            await eventually(lambda target=target: read(api, "configmaps", target, "narrowed"))

    # The rules change (a restart): t2 is a target of other sources only. Its copy stays, is no
    # longer updated, and is said; opd writes nothing there for this source, deletions included.
    narrowed = [rule(namespace, t1), rule(namespace, t2, names=["others-*"])]
    with log_lines() as logs:
        async with running({"rules": narrowed, "resync": 0.3}, [namespace]):
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

            # Deleting the source deletes the copy its rule gives, and leaves the other.
            await delete_and_wait(api, "configmaps", namespace, "narrowed")
            assert await read(api, "configmaps", t1, "narrowed") is None
            assert await read(api, "configmaps", t2, "narrowed") is not None


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_a_copy_is_never_a_source(api: client.ApiClient, namespace: str, targets: list[str]) -> None:
    core = client.CoreV1Api(api)
    t1, t2 = targets
    # t1 served and a source namespace too: a copy there, labelled as a source by hand, must not be
    # mirrored on (to t2, or back).
    rules = [rule(namespace, t1), rule(t1, t2, namespace)]
    async with running({"rules": rules, "resync": 0.3}, [namespace, t1]):
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
