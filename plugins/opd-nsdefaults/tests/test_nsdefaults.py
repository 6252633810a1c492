"""opd-nsdefaults against a real kube-apiserver (opd's shipped fixtures), run the way the daemon runs it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from opd.plugin import ENTRY_POINT_GROUP
from opd.testing import OptionsError, RunningPlugin, prepare
from opd.testing import eventually as opd_eventually

import opd_nsdefaults
from opd_nsdefaults import DEFAULT_OBJECTS, Config, render

README = Path(__file__).parent.parent / "README.md"
HANDLED = "nsdefaults.opd.dev/last-handled-configuration"  # the daemon gives the plugin this prefix


@pytest.fixture
def kube_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plugin finds credentials as opd does: $KUBECONFIG first.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


@pytest.fixture
async def namespaces(api: client.ApiClient, kube_env: None) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Creates namespaces with a prefix of this test's own; deletes them afterwards."""
    prefix = f"nsd-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    made: list[str] = []

    async def create(suffix: str) -> str:
        name = f"{prefix}-{suffix}"
        await core.create_namespace({"metadata": {"name": name}})
        made.append(name)
        return name

    create.prefix = prefix  # type: ignore[attr-defined]
    yield create
    for name in made:
        with contextlib.suppress(client.ApiException):
            await core.delete_namespace(name)


# These tests wait up to 10 s by default.
eventually = functools.partial(opd_eventually, timeout=10.0)


@contextlib.asynccontextmanager
async def running(config: dict[str, Any], namespaces: list[str]) -> AsyncIterator[None]:
    """The plugin in an operator of its own, set up as ``opd start`` does (its hooks through pluggy,
    its own registry and settings); stopped, and waited for, on leaving."""
    async with RunningPlugin(opd_nsdefaults, "nsdefaults", config=config, namespaces=namespaces, ready_timeout=20):
        yield


def readme_config() -> dict[str, Any]:
    """The example [plugins.nsdefaults] table of the README: what it documents must work."""
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
    assert block is not None
    table: dict[str, Any] = tomllib.loads(block.group(1))["plugins"]["nsdefaults"]
    return table


async def read(api: client.ApiClient, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = await api.call_api(
            f"/api/v1/namespaces/{namespace}/{plural}/{name}", "GET", header_params={"Accept": "application/json"},
            response_types_map={200: "object"}, auth_settings=["BearerToken"], _return_http_data_only=True)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


async def handled(api: client.ApiClient, namespace: str) -> bool:
    ns = await client.CoreV1Api(api).read_namespace(namespace)
    return HANDLED in (ns.metadata.annotations or {})


def test_entry_point_is_installed() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["nsdefaults"].value == "opd_nsdefaults"
    assert eps["nsdefaults"].load() is opd_nsdefaults


def config_of(table: dict[str, Any]) -> Config:
    """The plugin's Config from a table, as opd hands it over (checked, defaults filled in)."""
    return Config.of(prepare(opd_nsdefaults, "nsdefaults", table).config)


def test_defaults_and_the_readme_example() -> None:
    defaults = config_of({})
    assert (defaults.objects, defaults.include, defaults.exclude) == (DEFAULT_OBJECTS, ("*",), ("kube-*",))
    cfg = config_of(readme_config())
    assert [o["kind"] for o in cfg.objects] == ["ConfigMap", "ResourceQuota", "LimitRange"]
    assert cfg.selects("team-a")
    assert not cfg.selects("kube-system") and not cfg.selects("default")


def test_render_fills_the_namespace_and_labels() -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "b"}},
                "data": {"ns": "${namespace}", "list": "[$namespace]", "cost": "$$5", "other": "${other}"}}
    body = render(manifest, "team-a")
    assert body["metadata"] == {"name": "x", "namespace": "team-a", "labels": {"a": "b", "opd.dev/nsdefaults": "true"}}
    assert body["data"] == {"ns": "team-a", "list": "[team-a]", "cost": "$5", "other": "${other}"}
    assert "namespace" not in manifest["metadata"]  # the config's manifest is not changed


WHERE = "[plugins.nsdefaults]"


@pytest.mark.parametrize(("config", "error"), [
    ({"exclud": []}, f"{WHERE}.exclud: unknown key (did you mean 'exclude'?)"),
    ({"exclude": "kube-*"}, f"{WHERE}.exclude: expected a list of strings, got string"),
    ({"include": ["a-*", ""]}, f"{WHERE}.include: expected namespace globs, got an empty string"),
    ({"objects": {"kind": "ConfigMap"}}, f"{WHERE}.objects: expected a list of tables, got table"),
    ({"objects": ["ConfigMap"]}, f"{WHERE}.objects[0]: expected a table, got string"),
    ({"objects": [{"kind": "ConfigMap", "metadata": {"name": "a"}}]},
     f'{WHERE}.objects: item 0: apiVersion: expected a string, e.g. apiVersion = "v1", kind = "ConfigMap"'),
    ({"objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "a-"}}]},
     f"{WHERE}.objects: item 0: metadata.name: expected a string (generateName is not idempotent)"),
    ({"objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}}]},
     f"{WHERE}.objects: item 0: metadata.namespace: leave it out (each object goes into the new namespace)"),
    ({"objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}] * 2},
     f"{WHERE}.objects: ConfigMap 'a' is listed twice"),
])
def test_bad_config_is_one_line(config: dict[str, Any], error: str) -> None:
    with pytest.raises(OptionsError) as err:
        prepare(opd_nsdefaults, "nsdefaults", config)
    assert err.value.problems == [error]


def test_opd_config_check_reports_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["nsdefaults"]\n[plugins.nsdefaults]\nexclud = []\n'
                    '[[plugins.nsdefaults.objects]]\nkind = "ConfigMap"\nmetadata = { name = "a" }\n')
    result = subprocess.run([sys.executable, "-m", "opd", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    problems = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert problems == [
        f"{path}: {WHERE}.exclud: unknown key (did you mean 'exclude'?)",
        f'{path}: {WHERE}.objects: item 0: apiVersion: expected a string, e.g. apiVersion = "v1", kind = "ConfigMap"',
    ]
    # The README's example passes.
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
    assert block is not None
    path.write_text('[plugins]\nenable = ["nsdefaults"]\n' + block.group(1))
    result = subprocess.run([sys.executable, "-m", "opd", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, f"{path}: ok\n"), result.stderr



def test_readme_and_etc_opd_toml_show_the_declared_options() -> None:
    """The README's table of options and the commented [plugins.nsdefaults] of etc/opd.toml: as declared."""
    options = {o.name: o for o in opd_nsdefaults.opd_options()}
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", readme, re.MULTILINE)
    assert [name for name, _ in rows] == list(options)
    for name, default in rows:
        if default.strip().startswith("`"):  # a TOML value: the default itself
            assert tomllib.loads(f"v = {default.strip().strip('`')}")["v"] == options[name].default
    etc = (Path(__file__).parents[3] / "etc" / "opd.toml").read_text()
    found = re.search(r"^# \[plugins\.nsdefaults\]\n((?:#.*\n)*)", etc, re.MULTILINE)
    assert found is not None
    # Uncommented, its example lines are exactly the defaults.
    example = [line[2:] for line in found.group(1).splitlines() if re.match(r"# (\w+ = |\[\[)", line)]
    table = tomllib.loads("[plugins.nsdefaults]\n" + "\n".join(example))["plugins"]["nsdefaults"]
    assert prepare(opd_nsdefaults, "nsdefaults", table).config == prepare(opd_nsdefaults, "nsdefaults").config
    assert sorted(table) == sorted(options)


@pytest.mark.apiserver
async def test_new_namespaces_get_defaults(api: client.ApiClient, namespaces: Any) -> None:
    core = client.CoreV1Api(api)
    prefix = namespaces.prefix
    # A namespace that exists before the plugin runs, with a "defaults" ConfigMap of its own.
    existing = await namespaces("pre")
    await core.create_namespaced_config_map(existing, {"metadata": {"name": "defaults"}, "data": {"mine": "yes"}})
    config = {**readme_config(), "include": [f"{prefix}-*"], "exclude": [f"{prefix}-skip*"]}
    async with running(config, [existing]):
        fresh = await namespaces("new")
        skipped = await namespaces("skip")

        async def complete(namespace: str) -> bool:
            found = [await read(api, plural, namespace, name) for plural, name in (
                ("configmaps", "defaults"), ("resourcequotas", "default-quota"), ("limitranges", "default-limits"))]
            return all(found)

        await eventually(lambda: complete(fresh))
        await eventually(lambda: complete(existing))
        await asyncio.sleep(0.5)  # the skipped one was seen as early as the fresh one
        assert not await handled(api, skipped)  # no handler wanted it: opd writes nothing on it

    cm = await read(api, "configmaps", fresh, "defaults")
    assert cm is not None and cm["data"] == {"namespace": fresh}  # ${namespace} filled in
    assert cm["metadata"]["labels"] == {"opd.dev/nsdefaults": "true"}
    quota = await read(api, "resourcequotas", fresh, "default-quota")
    assert quota is not None and quota["spec"]["hard"]["pods"] == "50"
    mine = await read(api, "configmaps", existing, "defaults")
    assert mine is not None and mine["data"] == {"mine": "yes"}  # 409: left exactly as it was
    assert await read(api, "configmaps", skipped, "defaults") is None  # excluded


@pytest.mark.apiserver
async def test_refused_objects_are_reported_and_the_rest_created(api: client.ApiClient, namespaces: Any) -> None:
    prefix = namespaces.prefix
    config = {"include": [f"{prefix}-*"], "objects": [
        {"apiVersion": "v1", "kind": "Frobnicator", "metadata": {"name": "nope"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fine"}, "data": {"a": "b"}},
    ]}
    async with running(config, ["default"]):
        namespace = await namespaces("bad")
        await eventually(lambda: read(api, "configmaps", namespace, "fine"))

        async def reported() -> list[str]:
            # opd posts Events about cluster-scoped objects into "default".
            events = await client.CoreV1Api(api).list_namespaced_event(
                "default", field_selector=f"involvedObject.name={namespace},reason=DefaultsFailed")
            return [e.message for e in events.items]

        [message] = await eventually(reported)
        await eventually(lambda: handled(api, namespace))  # a final failure: not retried
    assert "no kind Frobnicator in v1" in message
    assert "ConfigMap" in message and "Not_Valid" in message and "422" in message
