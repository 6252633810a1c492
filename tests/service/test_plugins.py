"""Plugins: discovery, options, isolation and failure handling, in-process and as installed distributions.

The in-process tests hand the loader entry points to modules written on the fly. The
installed ones build a fresh virtualenv once per session with opd and the plugins of
tests/fixtures/plugins/ (editable, from copies), and run its ``opd plugins`` command.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from helpers.plugin_venv import opd_cmd

import opd
from opd.plugin import naming
from opd.service import config, plugins
from opd.service.plugins import Discovery, PluginError, Status

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "plugins"

MakePlugin = Callable[..., metadata.EntryPoint]


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePlugin]:
    """Writes a module and returns an entry point to it (unique module names: no import cache surprises)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    modules: list[str] = []

    def make(source: str, name: str = "p", attr: str | None = None) -> metadata.EntryPoint:
        module = f"opd_unit_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        modules.append(module)
        value = f"{module}:{attr}" if attr else module
        return metadata.EntryPoint(name=name, value=value, group="opd.plugins")

    yield make
    for module in modules:
        sys.modules.pop(module, None)


GOOD = """
    import opd

    @opd.hookimpl
    def opd_register(registry, config):
        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(**_):
            return config.get("greeting")

    @opd.hookimpl
    def opd_configure(settings, config):
        settings.processing.workers = config.get("workers", 7)
        config["seen_by_configure"] = True
"""


def load(*eps: metadata.EntryPoint, cfg: config.DaemonConfig | None = None,
         env: dict[str, str] | None = None) -> Discovery:
    return plugins.load_all(cfg or config.DaemonConfig(), env=env or {}, entry_points=eps)


def test_a_good_plugin_registers_into_its_own_registry(make_plugin: MakePlugin) -> None:
    default_before = opd.get_default_registry().handlers
    found = load(make_plugin(GOOD, name="good"),
                 cfg=config.parse('[plugins.good]\nworkers = 3\ngreeting = "hi"\nnamespaces = ["a"]\n'))
    [good] = found.plugins
    assert (good.status, good.error, good.enabled) == (Status.LOADED, None, True)
    assert good.hooks == ("opd_configure", "opd_register")
    assert [(h.id, h.reason, h.resource) for h in good.handlers] == [("create_fn", "create", "kopfexamples")]
    assert good.resources == ["kopfexamples"]
    assert good.registry.handlers[0].fn() == "hi"  # its config, without opd's keys
    assert good.settings.processing.workers == 3
    persistence = good.settings.persistence
    assert (persistence.prefix, persistence.status_field, persistence.results_field) == (
        "good.opd.dev", "opd-good", "good")
    assert (good.config.namespaces, good.config.clusterwide) == (("a",), False)
    assert opd.get_default_registry().handlers == default_before
    assert found.loaded() == [good] and found.failed() == []


def test_plugin_config_is_the_plugins_own_copy(make_plugin: MakePlugin) -> None:
    cfg = config.parse('[plugins.good]\nnamespaces = ["a"]\nisolation = "thread"\nworkers = 2\n')
    [good] = load(make_plugin(GOOD, name="good"), cfg=cfg).plugins
    assert good.status is Status.LOADED
    assert dict(cfg.plugin("good").options) == {"workers": 2}  # opd_configure's write stayed in its copy


def test_plugins_never_see_each_other(make_plugin: MakePlugin) -> None:
    # The same handler id in two plugins: two registries, two managers, no clash.
    found = load(make_plugin(GOOD, name="one"), make_plugin(GOOD, name="two"))
    one, two = found.plugins
    assert (one.status, two.status) == (Status.LOADED, Status.LOADED)
    assert one.registry is not two.registry and one.manager is not two.manager
    assert len(one.registry.handlers) == len(two.registry.handlers) == 1
    assert one.settings.persistence.prefix == "one.opd.dev"
    assert two.settings.persistence.prefix == "two.opd.dev"


def test_module_level_decorators_land_in_the_plugins_registry(make_plugin: MakePlugin) -> None:
    default_before = opd.get_default_registry().handlers
    [plugin] = load(make_plugin("""
        import opd

        @opd.on.event("configmaps")
        def watch(**_):
            pass
    """, name="decorated")).plugins
    assert plugin.status is Status.LOADED and plugin.hooks == ()
    assert [h.id for h in plugin.registry.handlers] == ["watch"]
    assert opd.get_default_registry().handlers == default_before


def test_a_failing_import_is_recorded_with_type_message_and_place(make_plugin: MakePlugin) -> None:
    ep = make_plugin("""
        import opd

        def fail():
            raise RuntimeError("no token\\n  configured")

        fail()
    """, name="bad")
    found = load(ep, make_plugin(GOOD, name="good"))
    bad, good = found.plugins
    assert bad.status is Status.FAILED
    assert bad.error == f"RuntimeError: no token configured (at {ep.module}.py:5)"
    assert good.status is Status.LOADED  # the others go on
    assert found.failed() == [bad]


@pytest.mark.parametrize(("source", "expected"), [
    ("raise SystemExit(3)", "SystemExit: 3 (at {module}.py:1)"),
    ("import opd_surely_absent_module", "ModuleNotFoundError: No module named 'opd_surely_absent_module' "
                                        "(at {module}.py:1)"),
    ("def broken(:\n    pass", "SyntaxError: invalid syntax (at {module}.py:1)"),
    ("raise ValueError()", "ValueError (at {module}.py:1)"),
    ("raise ValueError('x' * 400)", "ValueError: " + "x" * 299 + "… (at {module}.py:1)"),
])
def test_import_failures_of_every_kind(make_plugin: MakePlugin, source: str, expected: str) -> None:
    ep = make_plugin(source)
    [plugin] = load(ep).plugins
    assert plugin.status is Status.FAILED
    assert plugin.error == expected.format(module=ep.module)


def test_an_entry_point_to_nothing(make_plugin: MakePlugin) -> None:
    ep = metadata.EntryPoint(name="ghost", value="opd_no_such_plugin_module", group="opd.plugins")
    [plugin] = load(ep).plugins
    assert plugin.error == "ModuleNotFoundError: No module named 'opd_no_such_plugin_module'"
    ep = make_plugin(GOOD, attr="missing_attribute")
    [plugin] = load(ep).plugins
    assert plugin.status is Status.FAILED and plugin.error is not None
    assert plugin.error.startswith("AttributeError: ")


@pytest.mark.parametrize(("hook", "line"), [("opd_register", 6), ("opd_configure", 10)])
def test_a_raising_hook_fails_only_its_plugin(make_plugin: MakePlugin, hook: str, line: int) -> None:
    ep = make_plugin(f"""
        import opd

        @opd.hookimpl
        def opd_register(registry):
            {"raise KeyError('region')" if hook == "opd_register" else "pass"}

        @opd.hookimpl
        def opd_configure(settings):
            {"raise KeyError('region')" if hook == "opd_configure" else "pass"}
    """, name="bad")
    bad, good = load(ep, make_plugin(GOOD, name="good")).plugins
    assert bad.status is Status.FAILED
    assert bad.error == f"KeyError: 'region' (at {ep.module}.py:{line})"
    assert bad.hooks == ("opd_configure", "opd_register")
    assert good.status is Status.LOADED


def test_hook_mistakes_are_failures(make_plugin: MakePlugin) -> None:
    typo = make_plugin("import opd\n@opd.hookimpl\ndef opd_regster(registry): pass\n", name="a")
    wrong_args = make_plugin("import opd\n@opd.hookimpl\ndef opd_register(registry, cfg): pass\n", name="b")
    unmarked = make_plugin("def opd_register(registry, config): pass\n", name="c")
    empty = make_plugin("x = 1\n", name="d")
    found = load(typo, wrong_args, unmarked, empty).plugins
    assert all(p.status is Status.FAILED for p in found)
    errors = [p.error or "" for p in found]
    assert errors[0].startswith("PluginValidationError: unknown hook 'opd_regster'")
    assert errors[1].startswith("PluginValidationError: Plugin 'b' for hook 'opd_register'")
    assert "{'cfg'}" in errors[1] and "\n" not in errors[1]
    assert errors[2] == f"no opd hooks in {unmarked.value}: opd_register is not marked with @opd.hookimpl"
    assert errors[3] == f"no opd hooks in {empty.value}: mark opd_register with @opd.hookimpl"


def test_an_object_as_entry_point(make_plugin: MakePlugin) -> None:
    ep = make_plugin("""
        import opd

        class Plugin:
            @opd.hookimpl
            def opd_register(self, registry):
                opd.on.create("kopfexamples", registry=registry)(lambda **_: None)

        plugin = Plugin()
    """, attr="plugin")
    [plugin] = load(ep).plugins
    assert plugin.status is Status.LOADED and len(plugin.registry.handlers) == 1


def test_clashing_persistence_names_fail_the_later_plugin(make_plugin: MakePlugin) -> None:
    same_prefix = """
        import opd

        @opd.hookimpl
        def opd_register(registry):
            opd.on.create("kopfexamples", registry=registry)(lambda **_: None)

        @opd.hookimpl
        def opd_configure(settings):
            settings.persistence.prefix = "opd.dev"
    """
    first, second = load(make_plugin(same_prefix, name="a"), make_plugin(same_prefix, name="b")).plugins
    assert first.status is Status.LOADED
    assert second.status is Status.FAILED
    assert second.error == "persistence prefix 'opd.dev' is also plugin 'a''s: set another in opd_configure"
    # Names that sanitise alike clash too.
    first, second = load(make_plugin(GOOD, name="my_plugin"), make_plugin(GOOD, name="my.plugin")).plugins
    assert (first.name, first.status) == ("my.plugin", Status.LOADED)
    assert (second.name, second.status) == ("my_plugin", Status.FAILED)
    assert second.error is not None and "'my-plugin.opd.dev'" in second.error


def test_results_and_markers_share_the_status_namespace(make_plugin: MakePlugin) -> None:
    # Plugin "opd-x" keeps its results in .status.opd-x: where plugin "x" keeps its markers.
    opd_x, x = load(make_plugin(GOOD, name="x"), make_plugin(GOOD, name="opd-x")).plugins
    assert (opd_x.name, opd_x.status) == ("opd-x", Status.LOADED)
    assert (x.status, x.error) == (
        Status.FAILED, "persistence status_field 'opd-x' is also plugin 'opd-x''s: set another in opd_configure")


def test_persistence_names_are_valid() -> None:
    assert naming.dns_label("My_Plugin.v2") == "my-plugin-v2"
    assert naming.dns_label("__") == "plugin"
    assert len(naming.dns_label("x" * 100)) == 63
    assert naming.field_name("My Plugin.v2") == "My_Plugin_v2"
    assert naming.field_name("acme-dns") == "acme-dns"
    persistence = naming.isolated_settings("Acme DNS").persistence
    assert (persistence.prefix, persistence.status_field, persistence.results_field) == (
        "acme-dns.opd.dev", "opd-Acme_DNS", "Acme_DNS")
    assert persistence.finalizer == "acme-dns.opd.dev/finalizer"


def test_a_name_declared_twice(make_plugin: MakePlugin) -> None:
    first, second = load(make_plugin(GOOD, name="dup"), make_plugin(GOOD, name="dup")).plugins
    assert first.status is Status.LOADED
    assert (second.status, second.error) == (Status.FAILED, "the plugin name 'dup' is taken by distribution None")


@pytest.mark.parametrize(("toml", "env", "enabled", "reason"), [
    ("", {}, {"a", "b", "c"}, None),
    ('[plugins]\nenable = ["a"]', {}, {"a"}, "not in [plugins].enable (<file>)"),
    ('[plugins]\ndisable = ["b", "c"]', {}, {"a"}, "in [plugins].disable (<file>)"),
    ("", {"OPD_PLUGINS": "a, b"}, {"a", "b"}, "not in $OPD_PLUGINS"),
    ("", {"OPD_PLUGINS": ""}, set(), "not in $OPD_PLUGINS"),
    ("", {"OPD_DISABLED_PLUGINS": "c"}, {"a", "b"}, "in $OPD_DISABLED_PLUGINS"),
    # Every rule must allow a plugin: the environment narrows the config, never widens it.
    ('[plugins]\nenable = ["a", "b"]', {"OPD_PLUGINS": "b,c"}, {"b"}, None),
    ('[plugins]\ndisable = ["a"]', {"OPD_PLUGINS": "a,b"}, {"b"}, None),
])
def test_enabling_and_disabling(make_plugin: MakePlugin, tmp_path: Path, toml: str, env: dict[str, str],
                                enabled: set[str], reason: str | None) -> None:
    path = tmp_path / "opd.toml"
    path.write_text(toml)
    eps = [make_plugin(GOOD, name=name) for name in ("a", "b", "c")]
    found = load(*eps, cfg=config.load(path), env=env)
    assert {p.name for p in found.plugins if p.enabled} == enabled
    for plugin in found.plugins:
        assert plugin.status is (Status.LOADED if plugin.enabled else Status.DISABLED)
        # A disabled plugin is never imported.
        assert (plugin.entry_point is not None and plugin.entry_point.module in sys.modules) == plugin.enabled
        assert plugin.hooks == () or plugin.enabled
    if reason is not None:
        disabled = [p for p in found.plugins if not p.enabled]
        assert disabled[-1].disabled_by == reason.replace("<file>", str(path))


def test_unknown_names_warn_and_strict_mode_fails(make_plugin: MakePlugin) -> None:
    cfg = config.parse('[plugins]\nenable = ["good", "godo", "bad"]\ndisable = ["nope"]\n[plugins.gooood]\nx = 1\n')
    bad = make_plugin("raise RuntimeError('boom')", name="bad")
    found = load(make_plugin(GOOD, name="good"), bad, cfg=cfg, env={"OPD_PLUGINS": "good,bad,extra"})
    assert found.warnings == [
        "[plugins].enable: no installed plugin 'godo' (did you mean 'good'?)",
        "[plugins].disable: no installed plugin 'nope'",
        "$OPD_PLUGINS: no installed plugin 'extra'",
        "[plugins.gooood]: no installed plugin 'gooood' (did you mean 'good'?)",
    ]
    assert found.missing == ["extra", "godo"]
    found.check(strict=False)
    with pytest.raises(PluginError) as err:
        found.check(strict=True)
    assert str(err.value) == (
        f"strict mode (OPD_STRICT_PLUGINS=1): plugin 'bad' failed: RuntimeError: boom (at {bad.module}.py:1); "
        "plugin 'extra' is enabled but not installed; plugin 'godo' is enabled but not installed")


def test_strict_mode_from_the_environment() -> None:
    assert plugins.strict_mode({}) is False
    for text in ("1", "true", "YES", "on"):
        assert plugins.strict_mode({"OPD_STRICT_PLUGINS": text}) is True
    for text in ("", "0", "false", "no", "off"):
        assert plugins.strict_mode({"OPD_STRICT_PLUGINS": text}) is False
    with pytest.raises(opd.ConfigError, match=r"^\$OPD_STRICT_PLUGINS: expected 1 or 0, got 'maybe'$"):
        plugins.strict_mode({"OPD_STRICT_PLUGINS": "maybe"})


def test_to_dict_has_every_field(make_plugin: MakePlugin) -> None:
    [good] = load(make_plugin(GOOD, name="good")).plugins
    ep = good.entry_point
    assert ep is not None
    assert good.to_dict() == {
        "name": "good", "distribution": None, "version": None, "entry_point": ep.value,
        "enabled": True, "disabled_by": None, "status": "loaded", "error": None,
        "hooks": ["opd_configure", "opd_register"], "resources": ["kopfexamples"],
        "handlers": [{"id": "create_fn", "reason": "create", "resource": "kopfexamples"}],
        "namespaces": [], "clusterwide": True, "isolation": "shared",
        "prefix": "good.opd.dev", "status_field": "opd-good", "results_field": "good",
    }
    json.dumps(good.to_dict())


# -- declared options ---------------------------------------------------------------------------------------------

OPTIONS = """
    import opd

    def positive(seconds):
        return None if seconds > 0 else f"expected seconds > 0, got {seconds:g}"

    @opd.hookimpl
    def opd_options():
        return [
            opd.Option("interval", float, default=30.0, check=positive),
            opd.Option("bucket", str, help="where backups go"),
            opd.Option("tags", list, items=str, default=[]),
        ]

    @opd.hookimpl
    def opd_register(registry, config):
        seen = {**config, "tags": list(config["tags"])}
        config["tags"].append("mine")  # the plugin's own copy: the default stays as declared

        @opd.on.create("kopfexamples", registry=registry)
        def create_fn(**_):
            return seen

    @opd.hookimpl
    def opd_configure(settings, config):
        settings.processing.workers = len(config["tags"])  # the same config as opd_register's
"""


def test_declared_options_get_their_defaults(make_plugin: MakePlugin) -> None:
    cfg = config.parse('[plugins.opts]\nbucket = "b"\ninterval = 2\n')
    ep = make_plugin(OPTIONS, name="opts")
    [opts] = load(ep, cfg=cfg).plugins
    assert (opts.status, opts.error, opts.problems) == (Status.LOADED, None, [])
    assert opts.hooks == ("opd_configure", "opd_options", "opd_register")
    assert opts.options is not None and [o.name for o in opts.options] == ["interval", "bucket", "tags"]
    seen = opts.registry.handlers[0].fn()
    assert seen == {"interval": 2.0, "bucket": "b", "tags": []} and isinstance(seen["interval"], float)
    assert opts.settings.processing.workers == 1
    # Loaded again: a fresh default, not the list the first load appended to.
    [again] = load(make_plugin(OPTIONS, name="opts"), cfg=cfg).plugins
    assert again.registry.handlers[0].fn()["tags"] == []


def test_a_table_that_does_not_fit_fails_only_its_plugin(make_plugin: MakePlugin) -> None:
    cfg = config.parse('[plugins.opts]\nintervall = 2\ninterval = 0\ntags = ["a", 1]\n[plugins.good]\nanything = 1\n')
    found = load(make_plugin(OPTIONS, name="opts"), make_plugin(GOOD, name="good"), cfg=cfg)
    good, opts = found.plugins
    assert opts.status is Status.FAILED
    assert opts.problems == [
        "[plugins.opts].intervall: unknown key (did you mean 'interval'?)",
        "[plugins.opts].interval: expected seconds > 0, got 0",
        "[plugins.opts].tags[1]: expected a string, got integer",
        "[plugins.opts].bucket: required key missing (a string: where backups go)",
    ]
    assert opts.error == "; ".join(opts.problems)
    assert not opts.registry.handlers  # its hooks never ran with a config that does not fit
    assert good.status is Status.LOADED  # no opd_options: its table goes to it unchecked
    with pytest.raises(PluginError, match=r"plugin 'opts' failed: \[plugins\.opts\]\.intervall: unknown key"):
        found.check(strict=True)


@pytest.mark.parametrize(("declaration", "error"), [
    ('"interval"', "TypeError: opd_options must return a list of opd.Option, got str"),
    ("None", "TypeError: opd_options must return a list of opd.Option, got NoneType"),
    ('["interval"]', "TypeError: opd_options must return a list of opd.Option, got an item 'interval'"),
    ('[opd.Option("a", str, default=""), opd.Option("a", int, default=1)]',
     "ValueError: opd_options declares 'a' twice"),
    ('[opd.Option("interval", float, default="30s")]',
     "TypeError: Option 'interval': default '30s': expected a number, got string (at {module}.py:6)"),
    ('[opd.Option("namespaces", list)]',
     "ValueError: Option 'namespaces': opd reads 'namespaces' itself (one of namespaces, clusterwide, isolation, "
     "module, file) (at {module}.py:6)"),
    ('[opd.Option("tags", set)]',
     "TypeError: Option 'tags': type set is not one of str, int, float, bool, list, dict (at {module}.py:6)"),
])
def test_a_bad_declaration_fails_the_plugin(make_plugin: MakePlugin, declaration: str, error: str) -> None:
    ep = make_plugin(f"""
        import opd

        @opd.hookimpl
        def opd_options():
            return {declaration}
    """)
    [plugin] = load(ep).plugins
    assert (plugin.status, plugin.error) == (Status.FAILED, error.format(module=ep.module))


def test_prepare_checks_the_table_as_the_daemon_does(make_plugin: MakePlugin) -> None:
    from opd.plugin.manager import OptionsError, prepare

    module = importlib.import_module(make_plugin(OPTIONS).module)
    prepared = prepare(module, "opts", {"bucket": "b"})
    assert prepared.config == {"interval": 30.0, "bucket": "b", "tags": ["mine"]}
    assert prepared.settings.persistence.prefix == "opts.opd.dev"
    assert prepared.hooks.options() is not None
    with pytest.raises(OptionsError) as err:
        prepare(module, "opts", {"bucket": 1})
    assert str(err.value) == "[plugins.opts].bucket: expected a string, got integer"
    good = importlib.import_module(make_plugin(GOOD).module)
    assert prepare(good, "good", {"workers": 3}).config == {"workers": 3, "seen_by_configure": True}


# -- trust: login handlers, the allow-list -------------------------------------------------------------------------

LOGIN = """
    import opd

    @opd.hookimpl
    def opd_register(registry):
        @opd.on.login(registry=registry)
        def my_login(**_):
            return None
"""


def test_login_handlers_need_a_thread_of_their_own(make_plugin: MakePlugin) -> None:
    good, shared = load(make_plugin(LOGIN, name="l"), make_plugin(GOOD, name="good")).plugins
    assert shared.status is Status.FAILED
    assert shared.error == ('on.login handlers (my_login) need isolation = "thread" in [plugins.l] '
                            "(a shared plugin uses the daemon's connection)")
    assert good.status is Status.LOADED
    [threaded] = load(make_plugin(LOGIN, name="l"), cfg=config.parse('[plugins.l]\nisolation = "thread"\n')).plugins
    assert (threaded.status, threaded.error) == (Status.LOADED, None)


@pytest.mark.parametrize(("toml", "env", "expected"), [
    ("", {}, ["[plugins].enable is not set: every installed plugin runs (a, b, c), in opd's process and with its "
              'credentials; pin the list with [plugins] enable = ["a", "b", "c"]']),
    ('[plugins]\ndisable = ["b"]', {},
     ["[plugins].enable is not set: every installed plugin runs (a, c), in opd's process and with its "
      'credentials; pin the list with [plugins] enable = ["a", "c"]']),
    ('[plugins]\nenable = ["a"]', {}, ["installed but not in [plugins].enable, so not run: b, c"]),
    ('[plugins]\nenable = ["a", "b", "c"]', {}, []),
    ("", {"OPD_PLUGINS": "b"}, ["installed but not in $OPD_PLUGINS, so not run: a, c"]),
    ('[plugins]\nenable = ["a", "b"]', {"OPD_PLUGINS": "a"},
     ["installed but not in $OPD_PLUGINS, so not run: b, c"]),
])
def test_the_allow_list_is_said(make_plugin: MakePlugin, toml: str, env: dict[str, str],
                                expected: list[str]) -> None:
    eps = [make_plugin(GOOD, name=name) for name in ("a", "b", "c")]
    assert plugins.discover(config.parse(toml), env=env, entry_points=eps).warnings == expected
    assert plugins.discover(config.parse(""), env={}, entry_points=[]).warnings == []  # nothing installed


def test_the_readmes_example_plugin_and_messages(make_plugin: MakePlugin) -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"```python\n# opd_hello/__init__.py\n(.*?)```", readme, re.DOTALL)
    assert found is not None
    source = found.group(1)
    [hello] = load(make_plugin(source, name="hello"), cfg=config.parse('[plugins.hello]\napi_token = "t"\n')).plugins
    assert (hello.status, hello.hooks) == (Status.LOADED, ("opd_configure", "opd_options", "opd_register"))
    assert hello.registry.handlers[0].fn(name="x") == {"message": "hello, x"}
    assert hello.settings.processing.workers == 16
    [hello] = load(make_plugin(source, name="hello"), cfg=config.parse("[plugins.hello]\ngreting = 1\n")).plugins
    assert hello.problems == ["[plugins.hello].greting: unknown key (did you mean 'greeting'?)",
                              "[plugins.hello].api_token: required key missing (a string: for the greeting service)"]
    prose = " ".join(readme.split())
    assert f"opd.toml: {hello.problems[0]}" in prose
    [x] = load(make_plugin(LOGIN.replace("my_login", "login_fn"), name="x")).plugins
    assert f"`{x.error}`" in prose  # the Trust model's example is the real message


# -- installed distributions, in a virtualenv of their own (the `venv` fixture in conftest.py) ---------------------

INSTALLED = ["broken-import", "broken-register", "decorated", "good", "mirror", "nsdefaults", "options", "ttl"]
NO_ALLOW_LIST = (
    f"warning: [plugins].enable is not set: every installed plugin runs ({', '.join(INSTALLED)}), in opd's process "
    "and with its credentials; pin the list with [plugins] enable = [" + ", ".join(f'"{n}"' for n in INSTALLED) + "]"
)
CANNOT_LOAD = "Error: 2 plugin(s) cannot load: broken-import, broken-register"
BROKEN_IMPORT = "RuntimeError: no API token configured (set ACME_TOKEN) (at opd_test_broken_import/__init__.py:7)"


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "opd.toml"
    path.write_text("")
    return path


def by_name(listing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in listing}


@pytest.mark.timeout(300)
def test_installed_plugins_as_json(venv: Path, empty_config: Path) -> None:
    result = opd_cmd(venv, "plugins", "--json", "--config", str(empty_config))
    # The listing first; then, as two enabled plugins cannot load, one line and exit 1.
    assert result.returncode == 1
    assert result.stderr.splitlines() == [NO_ALLOW_LIST, CANNOT_LOAD]
    listing = json.loads(result.stdout)
    assert [p["name"] for p in listing] == INSTALLED
    found = by_name(listing)
    assert found["good"] == {
        "name": "good", "distribution": "opd-test-good", "version": "1.2.3", "entry_point": "opd_test_good",
        "enabled": True, "disabled_by": None, "status": "loaded", "error": None,
        "hooks": ["opd_configure", "opd_register"], "resources": ["kopfexamples"],
        "handlers": [{"id": "create_fn", "reason": "create", "resource": "kopfexamples"}],
        "namespaces": [], "clusterwide": True, "isolation": "shared",
        "prefix": "good.opd.dev", "status_field": "opd-good", "results_field": "good",
    }
    assert found["broken-import"]["status"] == "failed"
    assert found["broken-import"]["error"] == BROKEN_IMPORT
    assert found["broken-import"]["hooks"] == []
    assert found["broken-register"]["status"] == "failed"
    assert found["broken-register"]["error"] == "KeyError: 'region' (at opd_test_broken_register/helpers.py:6)"
    assert found["broken-register"]["hooks"] == ["opd_register"]
    assert found["broken-register"]["entry_point"] == "opd_test_broken_register.plugin"
    assert found["decorated"]["status"] == "loaded"
    assert found["decorated"]["handlers"] == [{"id": "watch_configmaps", "reason": "event", "resource": "configmaps"}]
    assert found["options"]["hooks"] == ["opd_options", "opd_register"]
    for example in ("mirror", "nsdefaults", "ttl"):  # the example plugins of plugins/
        assert found[example]["status"] == "loaded", found[example]
        assert found[example]["distribution"] == f"opd-{example}"
        assert "opd_options" in found[example]["hooks"]


@pytest.mark.timeout(300)
def test_installed_plugins_as_a_table(venv: Path, empty_config: Path) -> None:
    result = opd_cmd(venv, "plugins", "--config", str(empty_config))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "DISTRIBUTION", "ENTRY", "POINT"]
    assert lines[1].split() == ["broken-import", "failed", "opd-test-broken-import", "0.1.0", "opd_test_broken_import"]
    assert f"    error: {BROKEN_IMPORT}" in lines
    assert "    error: KeyError: 'region' (at opd_test_broken_register/helpers.py:6)" in lines
    assert "    handlers: create_fn (create kopfexamples)" in lines
    assert ("    runs: cluster-wide; isolation shared; markers good.opd.dev, .status.opd-good; "
            "results .status.good") in lines
    assert lines[-1] == "8 plugin(s): 6 loaded, 2 failed, 0 disabled"
    assert result.stderr.splitlines() == [NO_ALLOW_LIST, CANNOT_LOAD]


@pytest.mark.timeout(300)
def test_strict_mode_makes_a_failed_plugin_an_error(venv: Path, empty_config: Path) -> None:
    result = opd_cmd(venv, "plugins", "--json", "--config", str(empty_config), env={"OPD_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert len(json.loads(result.stdout)) == 8  # the listing still comes first
    [warning, error] = result.stderr.splitlines()
    assert warning == NO_ALLOW_LIST
    assert error.startswith("Error: strict mode (OPD_STRICT_PLUGINS=1): plugin 'broken-import' failed: ")
    # With the broken ones disabled, strict mode is content, and so is the command.
    result = opd_cmd(venv, "plugins", "--config", str(empty_config),
                     env={"OPD_STRICT_PLUGINS": "1", "OPD_DISABLED_PLUGINS": "broken-import, broken-register"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "8 plugin(s): 6 loaded, 0 failed, 2 disabled"


@pytest.mark.timeout(300)
def test_enable_and_disable_by_config_and_environment(venv: Path, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["good", "decorated", "broken-import"]\n'
                    '[plugins.good]\nnamespaces = ["dev-*"]\nisolation = "thread"\n')
    result = opd_cmd(venv, "plugins", "--json", "--config", str(path))
    assert result.returncode == 1  # broken-import is enabled, and cannot load
    assert result.stderr.splitlines() == [
        "warning: installed but not in [plugins].enable, so not run: broken-register, mirror, nsdefaults, options, ttl",
        "Error: 1 plugin(s) cannot load: broken-import",
    ]
    found = by_name(json.loads(result.stdout))
    assert {n: p["status"] for n, p in found.items()} == {
        "broken-import": "failed", "broken-register": "disabled", "decorated": "loaded", "good": "loaded",
        "mirror": "disabled", "nsdefaults": "disabled", "options": "disabled", "ttl": "disabled"}
    assert found["broken-register"]["enabled"] is False
    assert found["broken-register"]["disabled_by"] == f"not in [plugins].enable ({path})"
    assert (found["good"]["namespaces"], found["good"]["clusterwide"], found["good"]["isolation"]) == (
        ["dev-*"], False, "thread")

    result = opd_cmd(venv, "plugins", "--json", "--config", str(path), env={"OPD_PLUGINS": "good"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("warning: installed but not in $OPD_PLUGINS, so not run: broken-import, broken-register, "
                             "decorated, mirror, nsdefaults, options, ttl\n")
    found = by_name(json.loads(result.stdout))
    assert [n for n, p in found.items() if p["status"] != "disabled"] == ["good"]
    assert found["decorated"]["disabled_by"] == "not in $OPD_PLUGINS"

    result = opd_cmd(venv, "plugins", "--json", "--config", str(path), env={"OPD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    assert {p["status"] for p in json.loads(result.stdout)} == {"disabled"}


@pytest.mark.timeout(300)
def test_config_reaches_the_plugin(venv: Path, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins.good]\nworkers = 3\ngreeting = "hi"\n[plugins.options]\ninterval = 5\n')
    probe = textwrap.dedent(f"""
        from opd.service import config, plugins
        found = plugins.load_all(config.load({str(path)!r}), env={{"OPD_PLUGINS": "good,options"}})
        good, options = (next(p for p in found.plugins if p.name == name) for name in ("good", "options"))
        print(good.settings.processing.workers, good.registry.handlers[0].fn(spec={{"size": 2}}))
        print(options.registry.handlers[0].fn())
    """)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "3 {'size': 2, 'greeting': 'hi'}",
        "{'interval': 5.0, 'resources': ['configmaps']}",  # the defaults filled in, the integer a float
    ]


@pytest.mark.timeout(300)
def test_config_problems_and_name_warnings(venv: Path, tmp_path: Path) -> None:
    result = opd_cmd(venv, "plugins", "--config", str(tmp_path / "missing.toml"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory\n"

    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["good", "options"]\ndisable = ["broken-imprt"]\n[plugins.goood]\nx = 1\n')
    result = opd_cmd(venv, "config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok\n"
    assert result.stderr.splitlines() == [
        f"{path}: warning: [plugins].disable: no installed plugin 'broken-imprt' (did you mean 'broken-import'?)",
        f"{path}: warning: [plugins.goood]: no installed plugin 'goood' (did you mean 'good'?)",
        f"{path}: warning: installed but not in [plugins].enable, so not run: "
        "broken-import, broken-register, decorated, mirror, nsdefaults, ttl",
    ]
    result = opd_cmd(venv, "plugins", "--json", env={"OPD_CONFIG": str(path)})
    assert result.returncode == 0
    assert "warning: [plugins.goood]: no installed plugin 'goood' (did you mean 'good'?)" in result.stderr


@pytest.mark.timeout(300)
def test_config_check_reports_every_problem_of_the_file_and_the_plugins(venv: Path, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text("""
[opd]
log_level = "loud"

[plugins]
enable = ["options", "good", "broken-import", "ttl"]

[plugins.options]
intervall = 5
interval = 0
resources = ["configmaps", 1]

[plugins.ttl]
intervall = 10
""")
    result = opd_cmd(venv, "config", "check", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if ": warning: " not in line] == [
        f"{path}: [opd].log_level: expected one of trace, debug, info, warning, error, got 'loud'",
        f"{path}: plugin 'broken-import' cannot load: {BROKEN_IMPORT}",
        f"{path}: [plugins.options].intervall: unknown key (did you mean 'interval'?)",
        f"{path}: [plugins.options].interval: expected seconds > 0, got 0",
        f"{path}: [plugins.options].resources[1]: expected a string, got integer",
        f"{path}: [plugins.ttl].intervall: unknown key (did you mean 'interval'?)",
    ]
    # `opd plugins` says the same of the plugins, one line each, and exits 1 after the listing.
    path.write_text(path.read_text().replace('log_level = "loud"', ""))
    result = opd_cmd(venv, "plugins", "--config", str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "    error: [plugins.options].intervall: unknown key (did you mean 'interval'?)" in lines
    assert "    error: [plugins.options].interval: expected seconds > 0, got 0" in lines
    assert result.stderr.splitlines()[-1] == "Error: 3 plugin(s) cannot load: broken-import, options, ttl"
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_config_show_fills_in_plugin_defaults_and_redacts_secrets(venv: Path, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text("""
[plugins]
enable = ["options", "good"]

[plugins.options]
interval = 5
password = "s3cret-password"

[plugins.good]
greeting = "hi"
api_token = "s3cret-token"
database = { host = "db", password = "s3cret-db" }
""")
    result = opd_cmd(venv, "config", "show", str(path))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "s3cret" not in result.stdout and "hunter2" not in result.stdout  # hunter2: the dsn option's default
    assert """
[plugins.options]
clusterwide = true
isolation = "shared"
interval = 5.0  # seconds between checks
resources = ["configmaps"]  # where to look
password = "<redacted>"  # the backend's password
dsn = "<redacted>"  # where state goes
""" in result.stdout
    assert """
[plugins.good]
clusterwide = true
isolation = "shared"
greeting = "hi"
api_token = "<redacted>"
database = {host = "db", password = "<redacted>"}
""" in result.stdout
    config.parse(result.stdout)  # TOML that opd reads

    # A plugin with options and no table: its table is shown all the same, with the defaults.
    path.write_text('[plugins]\nenable = ["options"]\n')
    result = opd_cmd(venv, "config", "show", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith('\n[plugins.options]\nclusterwide = true\nisolation = "shared"\n'
                                  "interval = 30.0  # seconds between checks\n"
                                  'resources = ["configmaps"]  # where to look\n'
                                  "# password: not set (the backend's password)\n"
                                  'dsn = "<redacted>"  # where state goes\n')

    # A table that does not fit, or a plugin that cannot load: shown as far as known, and said on stderr.
    path.write_text('[plugins]\nenable = ["options", "broken-import"]\n[plugins.options]\nintervall = 5\n')
    result = opd_cmd(venv, "config", "show", str(path))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"{path}: warning: plugin 'broken-import' cannot load: {BROKEN_IMPORT}",
        f"{path}: warning: [plugins.options].intervall: unknown key (did you mean 'interval'?)",
    ]
    assert "intervall = 5  # unknown key\n" in result.stdout


def test_cli_without_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import logging

    from click.testing import CliRunner
    from loguru import logger

    from opd.cli import main

    monkeypatch.setattr(plugins, "installed", list)
    # The command sets up logging for the process: give the other tests theirs back.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    (tmp_path / "opd.toml").write_text("")
    try:
        result = CliRunner().invoke(main, ["plugins", "--config", str(tmp_path / "opd.toml")])
        assert (result.exit_code, result.stdout) == (
            0, "no plugins installed (none declares an entry point in the group 'opd.plugins')\n")
        result = CliRunner().invoke(main, ["plugins", "--json", "--config", str(tmp_path / "opd.toml")])
        assert (result.exit_code, result.stdout) == (0, "[]\n")
    finally:
        logger.remove()
        logger.add(sys.stderr)
