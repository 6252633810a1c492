"""opd-ttl against a real kube-apiserver (opd's shipped fixtures), run the way the daemon runs it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from opd.plugin import ENTRY_POINT_GROUP
from opd.testing import OptionsError, RunningPlugin, prepare
from opd.testing import eventually as opd_eventually

import opd_ttl
from opd_ttl import parse_ttl

FINALIZER = "ttl.opd.dev/finalizer"  # the persistence prefix the daemon gives the plugin "ttl"


@pytest.fixture
def kube_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plugin finds credentials as opd does: $KUBECONFIG first.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


# These tests wait up to 10 s by default.
eventually = functools.partial(opd_eventually, timeout=10.0)


@contextlib.asynccontextmanager
async def running(config: dict[str, Any], namespaces: list[str]) -> AsyncIterator[None]:
    """The plugin in an operator of its own, set up as ``opd start`` does (its hooks through pluggy,
    its own registry and settings); stopped, and waited for, on leaving."""
    async with RunningPlugin(opd_ttl, "ttl", config=config, namespaces=namespaces, ready_timeout=20):
        yield


def cm(name: str, ttl: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {"opd.dev/ttl": ttl} if ttl is not None else {}}}


async def read_cm(api: client.ApiClient, namespace: str, name: str) -> client.V1ConfigMap | None:
    try:
        return await client.CoreV1Api(api).read_namespaced_config_map(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    return await read_cm(api, namespace, name) is None


async def events_about(api: client.ApiClient, namespace: str, name: str) -> set[str]:
    events = await client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return {e.reason for e in events.items}


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("0", 0), ("0.5", 0.5), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400),
    ("1h30m", 5400), (" 2H ", 7200), ("soon", None), ("", None), ("5 minutes", None), ("-5", None),
    ("1h 30m", None), ("m", None), ("1w", None),
])
def test_parse_ttl(text: str, seconds: float | None) -> None:
    assert parse_ttl(text) == seconds


def test_entry_point_is_installed() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["ttl"].value == "opd_ttl"
    assert eps["ttl"].load() is opd_ttl


def test_options_and_their_defaults() -> None:
    # What opd hands the hooks: defaults filled in, an integer interval as the float it is declared.
    assert prepare(opd_ttl, "ttl").config == {"resources": ["configmaps"], "interval": 30.0,
                                              "allowed_namespaces": ["*", "!kube-*"]}
    prepared = prepare(opd_ttl, "ttl", {"interval": 5, "resources": ["configmaps", " secrets", "configmaps"]})
    assert prepared.config["interval"] == 5.0 and isinstance(prepared.config["interval"], float)
    timers = [h for h in prepared.registry.handlers if h.id == "expire"]
    assert [(str(h.resource), h.interval) for h in timers] == [("configmaps", 5.0), ("secrets", 5.0)]


@pytest.mark.parametrize(("config", "error"), [
    ({"intervall": 5}, "[plugins.ttl].intervall: unknown key (did you mean 'interval'?)"),
    ({"interval": 0}, "[plugins.ttl].interval: expected seconds > 0, got 0"),
    ({"interval": True}, "[plugins.ttl].interval: expected a number, got boolean"),
    ({"interval": "30s"}, "[plugins.ttl].interval: expected a number, got string"),
    ({"resources": "configmaps"}, "[plugins.ttl].resources: expected a list of strings, got string"),
    ({"resources": []}, '[plugins.ttl].resources: expected at least one resource name, e.g. ["configmaps", "secrets"]'),
    ({"resources": ["configmaps", " "]}, "[plugins.ttl].resources: expected resource names, got an empty string"),
    ({"resources": ["configmaps", 7]}, "[plugins.ttl].resources[1]: expected a string, got integer"),
    ({"allowed_namespaces": "team-*"}, "[plugins.ttl].allowed_namespaces: expected a list of strings, got string"),
    ({"allowed_namespaces": ["team a"]},
     "[plugins.ttl].allowed_namespaces: expected namespace names or globs (!glob excludes), got 'team a'"),
    ({"allowed_namespaces": ["!kube-*"]},
     '[plugins.ttl].allowed_namespaces: only exclusions, which allow nothing: add a glob, e.g. ["*", "!kube-*"]'),
])
def test_bad_config_is_one_line(config: dict[str, Any], error: str) -> None:
    with pytest.raises(OptionsError) as err:
        prepare(opd_ttl, "ttl", config)
    assert err.value.problems == [error]


def test_opd_config_check_reports_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["ttl"]\n[plugins.ttl]\nintervall = 10\nresources = []\n')
    result = subprocess.run([sys.executable, "-m", "opd", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    problems = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert problems == [
        f"{path}: [plugins.ttl].intervall: unknown key (did you mean 'interval'?)",
        f'{path}: [plugins.ttl].resources: expected at least one resource name, e.g. ["configmaps", "secrets"]',
    ]
    path.write_text('[plugins]\nenable = ["ttl"]\n[plugins.ttl]\ninterval = 10\n')
    result = subprocess.run([sys.executable, "-m", "opd", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, f"{path}: ok\n"), result.stderr



def test_readme_and_etc_opd_toml_show_the_declared_options() -> None:
    """The README's table of options and the commented [plugins.ttl] of etc/opd.toml: as declared."""
    options = {o.name: o for o in opd_ttl.opd_options()}
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", readme, re.MULTILINE)
    assert [name for name, _ in rows] == list(options)
    for name, default in rows:
        if default.strip().startswith("`"):  # a TOML value: the default itself
            assert tomllib.loads(f"v = {default.strip().strip('`')}")["v"] == options[name].default
    etc = (Path(__file__).parents[3] / "etc" / "opd.toml").read_text()
    found = re.search(r"^# \[plugins\.ttl\]\n((?:#.*\n)*)", etc, re.MULTILINE)
    assert found is not None
    # Uncommented, its example lines are exactly the defaults.
    example = [line[2:] for line in found.group(1).splitlines() if re.match(r"# (\w+ = |\[\[)", line)]
    table = tomllib.loads("[plugins.ttl]\n" + "\n".join(example))["plugins"]["ttl"]
    assert prepare(opd_ttl, "ttl", table).config == prepare(opd_ttl, "ttl").config
    assert sorted(table) == sorted(options)


def _object(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, **({"namespace": namespace} if namespace else {})}}


@pytest.mark.parametrize(("patterns", "body", "expected"), [
    (["*", "!kube-*"], _object("ConfigMap", "x", "team-a"), True),
    (["*", "!kube-*"], _object("ConfigMap", "x", "kube-system"), False),
    (["*", "!kube-*"], _object("Secret", "x", "kube-public"), False),
    (["*", "!kube-*"], _object("Lease", "x", "kube-node-lease"), False),
    (["ci-*"], _object("ConfigMap", "x", "team-a"), False),
    (["ci-*"], _object("Namespace", "ci-123"), True),  # a Namespace: by its own name
    (["*", "!kube-*"], _object("Namespace", "kube-system"), False),
    (["*"], _object("ClusterRole", "admin"), False),  # other cluster-scoped objects: never
    ([], _object("ConfigMap", "x", "team-a"), False),
])
def test_allowed_namespaces(patterns: list[str], body: dict[str, Any], expected: bool) -> None:
    assert opd_ttl.allows(patterns, body) is expected


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_never_deletes_outside_allowed_namespaces(api: client.ApiClient, namespace: str) -> None:
    # issue #18: "may annotate" became "may delete" anywhere opd served the plugin, kube-system included.
    core = client.CoreV1Api(api)
    other = f"{namespace[:50]}-other"
    name = f"expired-{namespace[-6:]}"  # unique: whatever kube-system holds is not ours
    await core.create_namespace({"metadata": {"name": other}})
    try:
        for where in ("kube-system", other, namespace):
            await core.create_namespaced_config_map(where, cm(name, "0"))
        # The default (every namespace but kube-*), served in kube-system too.
        async with running({"interval": 0.3}, [namespace, "kube-system"]):
            await eventually(lambda: gone(api, namespace, name))  # it runs, and deletes where allowed
            await asyncio.sleep(1.5)  # five intervals
            kept = await read_cm(api, "kube-system", name)
            assert kept is not None
            assert not kept.metadata.finalizers  # not even touched
            assert not [k for k in kept.metadata.annotations or {} if "ttl.opd.dev" in k]

        # An explicit list: a served namespace it does not name keeps its expired objects.
        await core.create_namespaced_config_map(namespace, cm(name, "0"))
        async with running({"interval": 0.3, "allowed_namespaces": [namespace]}, [namespace, other]):
            await eventually(lambda: gone(api, namespace, name))
            await asyncio.sleep(1.5)
            kept = await read_cm(api, other, name)
            assert kept is not None and not kept.metadata.finalizers
    finally:
        with contextlib.suppress(client.ApiException):
            await core.delete_namespaced_config_map(name, "kube-system")
        with contextlib.suppress(client.ApiException):
            await core.delete_namespace(other)


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_expired_objects_are_deleted(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # Expired while no operator ran: deleted right after the start.
    await core.create_namespaced_config_map(namespace, cm("stale", "0"))
    async with running({"resources": ["configmaps", "secrets"], "interval": 0.3}, [namespace]):
        await eventually(lambda: gone(api, namespace, "stale"))
        await core.create_namespaced_config_map(namespace, cm("short", "1s"))
        await core.create_namespaced_secret(namespace, {"metadata": {"name": "short", "annotations": {
            "opd.dev/ttl": "1"}}})
        await core.create_namespaced_config_map(namespace, cm("long", "1h"))
        await core.create_namespaced_config_map(namespace, cm("plain"))

        await eventually(lambda: gone(api, namespace, "short"))
        assert "Expired" in await eventually(lambda: events_about(api, namespace, "short"))

        async def secret_gone() -> bool:
            try:
                await core.read_namespaced_secret("short", namespace)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        await eventually(secret_gone)

        long = await read_cm(api, namespace, "long")
        plain = await read_cm(api, namespace, "plain")
        assert long is not None and FINALIZER in (long.metadata.finalizers or [])
        assert plain is not None and not plain.metadata.finalizers  # no TTL: not held

        # The timer reads the newest value: shortening the TTL (an annotation-only edit) moves the deadline.
        await core.patch_namespaced_config_map("long", namespace, {"metadata": {"annotations": {"opd.dev/ttl": "2s"}}})
        await eventually(lambda: gone(api, namespace, "long"))
        assert await read_cm(api, namespace, "plain") is not None


@pytest.mark.apiserver
@pytest.mark.usefixtures("kube_env")
async def test_invalid_ttl_is_reported_once_and_kept(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    async with running({"interval": 0.2}, [namespace]):
        await core.create_namespaced_config_map(namespace, cm("bad", "soon"))
        await core.create_namespaced_config_map(namespace, cm("edited", "1h"))

        # Reported as a Warning Event; the failure is final: the object counts as handled, not retried.
        assert "InvalidTTL" in await eventually(lambda: events_about(api, namespace, "bad"))

        async def handled() -> bool:
            obj = await read_cm(api, namespace, "bad")
            return bool(obj and "ttl.opd.dev/last-handled-configuration" in (obj.metadata.annotations or {}))

        await eventually(handled)
        bad = await read_cm(api, namespace, "bad")
        assert bad is not None and not bad.metadata.finalizers  # no timer, no finalizer for it

        # A valid TTL edited into an invalid one: the running timer reports it, and keeps the object.
        await eventually(lambda: read_cm(api, namespace, "edited"))
        await core.patch_namespaced_config_map("edited", namespace, {"metadata": {"annotations": {
            "opd.dev/ttl": "never"}}})
        assert "InvalidTTL" in await eventually(lambda: events_about(api, namespace, "edited"))
        await asyncio.sleep(1.0)  # five intervals: each one reported once (one Event, count 1), both kept
        for name in ("bad", "edited"):
            events = await core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name},reason=InvalidTTL")
            assert [e.count for e in events.items] == [1]
            assert await read_cm(api, namespace, name) is not None

        # Clean up while the operator runs: it releases its finalizer on deletion.
        await core.delete_namespaced_config_map("edited", namespace)
        await eventually(lambda: gone(api, namespace, "edited"))
