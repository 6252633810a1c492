"""A Kopf operator module as an opd plugin, without an entry point: ``[plugins.<name>] module = ...``
or ``file = ...`` in opd.toml; its module-level decorators land in the plugin's own registry."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.operators import create_kex, eventually, get_kex
from helpers.processes import Process, _env
from kubernetes_asyncio import client

from opd.service import config, plugins, rendering
from opd.service.config import ConfigFileError

KOPF_OPERATOR = """
from typing import Any

import opd as kopf


@kopf.on.create("kopfexamples")
def create_fn(spec: kopf.Spec, **_: Any) -> Any:
    return {"from": "{who}", "size": spec.get("size")}
"""


def _write(folder: Path, name: str, who: str) -> Path:
    path = folder / name
    path.write_text(KOPF_OPERATOR.replace("{who}", who))
    return path


def test_module_and_file_are_read_as_opd_s_own_keys(tmp_path: Path) -> None:
    cfg = config.parse('[plugins.a]\nfile = "ops/handlers.py"\ncolour = "red"\n[plugins.b]\nmodule = "pkg.handlers"\n',
                       path=tmp_path / "opd.toml")
    a, b = cfg.plugin("a"), cfg.plugin("b")
    assert a.file == str(tmp_path / "ops" / "handlers.py") and a.module is None  # relative to the config file
    assert dict(a.options) == {"colour": "red"}  # the plugin's own options stay its own
    assert b.module == "pkg.handlers" and b.file is None
    shown = rendering.render(cfg)
    assert f'file = "{tmp_path / "ops" / "handlers.py"}"' in shown and 'module = "pkg.handlers"' in shown


@pytest.mark.parametrize(("table", "problem"), [
    ('module = "pkg.handlers"\nfile = "h.py"', "[plugins.a]: module and file: set one of them"),
    ('module = "pkg/handlers.py"', "[plugins.a].module: expected a module's dotted name"),
    ("module = 7", "[plugins.a].module: expected a string, got integer"),
    ('file = ""', "[plugins.a].file: empty string"),
])
def test_a_wrong_module_or_file_is_one_line(table: str, problem: str) -> None:
    with pytest.raises(ConfigFileError) as err:
        config.parse(f"[plugins.a]\n{table}\n")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(problem), err.value.problems


def test_configured_plugins_load_beside_installed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "by_file.py", "file")
    package = tmp_path / "kopfops"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _write(package, "handlers.py", "module")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.parse(
        '[plugins]\nenable = ["byfile", "bymodule", "missing", "broken", "mirror"]\n'
        '[plugins.byfile]\nfile = "by_file.py"\n[plugins.bymodule]\nmodule = "kopfops.handlers"\n'
        '[plugins.missing]\nfile = "nowhere.py"\n[plugins.broken]\nmodule = "kopfops.absent"\n'
        '[plugins.mirror]\nfile = "by_file.py"\n',  # the name of an installed plugin
        path=tmp_path / "opd.toml")
    found = plugins.load_all(cfg, env={})
    by_name = {p.name: p for p in found.plugins}
    for name, source in (("byfile", f"file {tmp_path / 'by_file.py'}"), ("bymodule", "module kopfops.handlers")):
        plugin = by_name[name]
        assert plugin.status is plugins.Status.LOADED, plugin.error
        assert plugin.value == source
        assert [(h.id, h.reason, h.resource) for h in plugin.handlers] == [("create_fn", "create", "kopfexamples")]
    assert by_name["missing"].error == f"file {tmp_path / 'nowhere.py'}: no such file"
    assert by_name["broken"].error == "ModuleNotFoundError: No module named 'kopfops.absent'"
    mirrors = [p for p in found.plugins if p.name == "mirror"]
    assert [p.status for p in mirrors] == [plugins.Status.LOADED, plugins.Status.FAILED]  # the installed one runs
    assert "names a file, and the installed distribution opd-mirror has a plugin named 'mirror' too" in str(
        mirrors[1].error)
    assert not [w for w in found.warnings if "no installed plugin" in w]  # a configured plugin is no typo
    # Loaded again (a reload of the daemon): the module's decorators run again, into the new registry.
    again = plugins.load_all(cfg, env={})
    assert [h.id for h in next(p for p in again.plugins if p.name == "bymodule").handlers] == ["create_fn"]


def test_opd_plugins_lists_them(tmp_path: Path) -> None:
    _write(tmp_path, "by_file.py", "file")
    (tmp_path / "opd.toml").write_text('[plugins]\nenable = ["byfile"]\n[plugins.byfile]\nfile = "by_file.py"\n')
    result = subprocess.run([sys.executable, "-m", "opd", "plugins", "--json", "--config", str(tmp_path / "opd.toml")],
                            capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode == 0, result.stderr
    [listed] = [p for p in json.loads(result.stdout) if p["name"] == "byfile"]
    assert listed["status"] == "loaded" and listed["entry_point"] == f"file {tmp_path / 'by_file.py'}"
    assert listed["handlers"] == [{"id": "create_fn", "reason": "create", "resource": "kopfexamples"}]


@pytest.mark.timeout(120)
async def test_kopf_operators_run_as_plugins_under_opd_start(
    kubeconfig: Path, crd: str, namespace: str, api: client.ApiClient, tmp_path: Path
) -> None:
    _write(tmp_path, "by_file.py", "file")
    modules = tmp_path / "site"
    modules.mkdir()
    _write(modules, "kopf_by_module.py", "module")
    toml = tmp_path / "opd.toml"
    toml.write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3
log_format = "text"

[kubernetes]
kubeconfig = "{kubeconfig}"

[plugins]
enable = ["byfile", "bymodule"]

[plugins.byfile]
file = "by_file.py"

[plugins.bymodule]
module = "kopf_by_module"
""")
    proc = Process([sys.executable, "-m", "opd", "start", "--config", str(toml)], tmp_path / "opd.log",
                   {**_env(), "PYTHONPATH": str(modules)})
    try:
        await eventually(lambda: "2 of 2 plugin(s) ready" in proc.output(), timeout=60)
        await create_kex(api, namespace, "kex", {"size": 3})

        async def results() -> Any:
            status = (await get_kex(api, namespace, "kex")).get("status") or {}
            found = {name: (status.get(name) or {}).get("create_fn") for name in ("byfile", "bymodule")}
            return found if all(found.values()) else None

        # Each plugin's results under its own name (.status.<plugin>.<handler>), as for any plugin.
        assert await eventually(results) == {"byfile": {"from": "file", "size": 3},
                                             "bymodule": {"from": "module", "size": 3}}
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.get_running_loop().run_in_executor(None, proc.popen.wait, 30) == 0
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()
