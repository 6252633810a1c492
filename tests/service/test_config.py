"""The daemon's TOML config: defaults, every kind of problem (exact one-line messages), rendering, the CLI."""

from __future__ import annotations

import logging
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

from opd import Option
from opd.cli import main
from opd.service import config, plugins, rendering
from opd.service.config import ConfigFileError, DaemonConfig, Listen, parse

REPO = Path(__file__).resolve().parents[2]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as err:
        parse(text)
    return err.value.problems


def test_empty_file_gives_the_defaults() -> None:
    cfg = parse("")
    assert cfg == DaemonConfig()
    assert cfg.opd.clusterwide is True
    assert cfg.opd.namespaces == ()
    assert cfg.opd.log_level == "info"
    assert cfg.opd.log_format == "auto"
    assert cfg.opd.listen is None
    assert cfg.opd.shutdown_timeout == 8.0
    assert (cfg.kubernetes.kubeconfig, cfg.kubernetes.context, cfg.kubernetes.in_cluster) == (None, None, None)
    assert (cfg.plugins.enable, cfg.plugins.disable, dict(cfg.plugins.tables)) == (None, (), {})


def test_a_full_config(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text("""
[opd]
namespaces = ["dev-*", "!dev-tmp", "prod"]
log_level = "DEBUG"
log_format = "json"
listen = "127.0.0.1:8080"
shutdown_timeout = 3

[kubernetes]
kubeconfig = "kube/config"
context = "admin@local"

[plugins]
enable = ["good", "other"]
disable = ["bad"]

[plugins.good]
clusterwide = true
isolation = "thread"
greeting = "hi"
nested = { level = 2, items = [1, 2] }
""")
    cfg = config.load(path)
    assert cfg.path == path
    assert cfg.opd.namespaces == ("dev-*", "!dev-tmp", "prod")
    assert cfg.opd.clusterwide is False
    assert cfg.opd.log_level == "debug"
    assert cfg.opd.log_format == "json"
    assert cfg.opd.listen == Listen("127.0.0.1", 8080)
    assert cfg.opd.shutdown_timeout == 3.0
    # Relative to the config file, as kubeconfig's own paths are.
    assert cfg.kubernetes.kubeconfig == str(tmp_path / "kube" / "config")
    assert cfg.kubernetes.context == "admin@local"
    assert cfg.plugins.enable == ("good", "other")
    assert cfg.plugins.disable == ("bad",)

    good = cfg.plugin("good")
    assert (good.namespaces, good.clusterwide, good.isolation) == ((), True, "thread")
    assert dict(good.options) == {"greeting": "hi", "nested": {"level": 2, "items": [1, 2]}}
    # A plugin without a table inherits [opd]'s scope and runs shared.
    other = cfg.plugin("other")
    assert (other.namespaces, other.clusterwide, other.isolation, dict(other.options)) == (
        ("dev-*", "!dev-tmp", "prod"), False, "shared", {})


def test_plugin_options_are_copied_for_the_plugin() -> None:
    cfg = parse('[plugins.good]\nnested = { items = [1] }\n')
    mine = cfg.plugin("good").options_copy()
    mine["nested"]["items"].append(2)
    assert cfg.plugin("good").options_copy() == {"nested": {"items": [1]}}


def test_a_plugin_table_overrides_the_scope() -> None:
    cfg = parse('[opd]\nnamespaces = ["a"]\n[plugins.p]\nnamespaces = ["b-*"]\n[plugins.q]\nclusterwide = true\n')
    assert (cfg.plugin("p").namespaces, cfg.plugin("p").clusterwide) == (("b-*",), False)
    assert (cfg.plugin("q").namespaces, cfg.plugin("q").clusterwide) == ((), True)
    assert (cfg.plugin("r").namespaces, cfg.plugin("r").clusterwide) == (("a",), False)


def test_listen_accepts_ipv6() -> None:
    assert parse('[opd]\nlisten = "[::1]:9090"').opd.listen == Listen("::1", 9090)
    assert str(Listen("::1", 9090)) == "[::1]:9090"
    assert parse('[opd]\nlisten = ""').opd.listen is None


@pytest.mark.parametrize(("text", "expected"), [
    ('[opd]\nnamespaces = 3', "[opd].namespaces: expected a list of strings, got integer"),
    ('[opd]\nnamespaces = "default"', "[opd].namespaces: expected a list of strings, got string"),
    ('[opd]\nnamespaces = ["a", 1]', "[opd].namespaces[1]: expected a string, got integer"),
    ('[opd]\nnamespaces = [""]', "[opd].namespaces[0]: empty string"),
    ('[opd]\nnamespaces = ["Dev_1"]',
     "[opd].namespaces[0]: 'Dev_1' is not a namespace name or glob (lowercase letters, digits, '-', * ? [ ], "
     "a leading !)"),
    ('[opd]\nnamespaces = []', "[opd].namespaces: empty list (to serve every namespace, set clusterwide = true)"),
    ('[opd]\nnamespace = ["a"]', "[opd].namespace: unknown key (did you mean 'namespaces'?)"),
    ('[opd]\nlog-level = "info"', "[opd].log-level: unknown key (did you mean 'log_level'?)"),
    ('[opd]\ncolour = true', "[opd].colour: unknown key"),
    ('[kubernets]\ncontext = "x"', "[kubernets]: unknown section (did you mean 'kubernetes'?)"),
    ('log_level = "debug"', "log_level: unknown top-level key (did you mean '[opd].log_level'?)"),
    ('verbose = true', "verbose: unknown top-level key"),
    ('opd = 1', "[opd]: expected a table, got integer"),
    ('[opd]\nclusterwide = "yes"', "[opd].clusterwide: expected true or false, got string"),
    ('[opd]\nclusterwide = true\nnamespaces = ["a"]',
     "[opd].clusterwide: true together with namespaces: set one or the other"),
    ('[opd]\nclusterwide = false', "[opd].clusterwide: false needs namespaces = [...] in the same table"),
    ('[opd]\nlog_level = "warn"',
     "[opd].log_level: expected one of trace, debug, info, warning, error, got 'warn' (did you mean 'warning'?)"),
    ('[opd]\nlog_level = 10', "[opd].log_level: expected a string, got integer"),
    ('[opd]\nlog_format = "syslog"', "[opd].log_format: expected one of auto, text, json, journal, got 'syslog'"),
    ('[opd]\nlisten = "8080"', "[opd].listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got '8080'"),
    ('[opd]\nlisten = "localhost:70000"',
     "[opd].listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got 'localhost:70000'"),
    ('[opd]\nlisten = 8080', "[opd].listen: expected a string, got integer"),
    ('[opd]\nshutdown_timeout = 0', "[opd].shutdown_timeout: expected a number of seconds > 0, got 0"),
    ('[opd]\nshutdown_timeout = -1.5', "[opd].shutdown_timeout: expected a number of seconds > 0, got -1.5"),
    ('[opd]\nshutdown_timeout = inf', "[opd].shutdown_timeout: expected a number of seconds > 0, got inf"),
    ('[opd]\nshutdown_timeout = true', "[opd].shutdown_timeout: expected a number of seconds, got boolean"),
    ('[opd]\nshutdown_timeout = "8s"', "[opd].shutdown_timeout: expected a number of seconds, got string"),
    ('[kubernetes]\nkubeconfig = ""', "[kubernetes].kubeconfig: empty string (leave the key out for the default)"),
    ('[kubernetes]\nin_cluster = 1', "[kubernetes].in_cluster: expected true or false, got integer"),
    ('[kubernetes]\nin_cluster = true\nkubeconfig = "/k"',
     "[kubernetes].in_cluster: true together with kubeconfig: set one or the other"),
    ('[kubernetes]\ncontext = 2024-01-01', "[kubernetes].context: expected a string, got date"),
    ('[plugins]\nenable = "good"', "[plugins].enable: expected a list of strings, got string"),
    ('[plugins]\nenabled = ["good"]',
     "[plugins].enabled: unknown key (did you mean 'enable'?) (a plugin's own settings go in a table "
     "[plugins.<name>])"),
    ('[plugins]\nenable = ["a"]\ndisable = ["a"]', "[plugins].disable: 'a' is in enable too"),
    ('[plugins.good]\nisolation = "process"',
     "[plugins.good].isolation: expected one of shared, thread, got 'process'"),
    ('[plugins.good]\nnamespaces = [1]', "[plugins.good].namespaces[0]: expected a string, got integer"),
    ('[plugins."my.plugin"]\nclusterwide = false',
     '[plugins."my.plugin"].clusterwide: false needs namespaces = [...] in the same table'),
])
def test_each_problem_is_one_line_naming_the_key(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[opd]\nnamespace = ["a"]\nlog_level = "loud"\n[kubernetes]\ncontex = "x"\n'
                    '[plugins]\ndisable = "bad"\n')
    with pytest.raises(ConfigFileError) as err:
        config.load(path)
    assert err.value.lines() == [
        f"{path}: [opd].namespace: unknown key (did you mean 'namespaces'?)",
        f"{path}: [opd].log_level: expected one of trace, debug, info, warning, error, got 'loud'",
        f"{path}: [kubernetes].contex: unknown key (did you mean 'context'?)",
        f"{path}: [plugins].disable: expected a list of strings, got string",
    ]
    # As an exception (e.g. through the CLI's one-line errors): one line, all problems.
    assert str(err.value) == f"{path}: 4 problems: " + "; ".join(err.value.problems)
    assert "\n" not in str(err.value)


def test_a_toml_syntax_error_gives_line_and_column() -> None:
    # The position is ours to format; the wording is tomllib's (and may change between Pythons).
    [problem] = problems('[opd]\nlog_level = "info"\nlisten = 127.0.0.1:8080\n')
    assert re.fullmatch(r"line 3, column 15: TOML syntax error: [a-z].*", problem)
    [problem] = problems("[opd\n")
    assert re.fullmatch(r"line 1, column 5: TOML syntax error: [a-z].*", problem)
    [problem] = problems("[opd]\nlisten =")
    assert re.fullmatch(r"end of file: TOML syntax error: [a-z].*", problem)


def test_text_that_is_not_utf8() -> None:
    with pytest.raises(ConfigFileError) as err:
        parse(b'[opd]\n# caf\xe9\n')
    assert err.value.problems == ["line 2: not UTF-8 text (byte 0xe9)"]


def test_an_unreadable_file_names_path_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as err:
        config.load(tmp_path / "missing.toml")
    assert str(err.value) == f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"
    with pytest.raises(ConfigFileError) as err:
        config.load(tmp_path)
    assert str(err.value) == f"{tmp_path}: cannot read: Is a directory"


def test_the_default_path_may_be_missing_but_not_an_explicit_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert config.resolve_path(None, env={}) == (tmp_path / "absent.toml", False)
    assert config.load(None, env={}) == DaemonConfig()
    # $OPD_CONFIG names the file explicitly: it must exist.
    env = {"OPD_CONFIG": str(tmp_path / "named.toml")}
    assert config.resolve_path(None, env=env) == (tmp_path / "named.toml", True)
    with pytest.raises(ConfigFileError, match=r"named\.toml: cannot read: No such file or directory"):
        config.load(None, env=env)
    (tmp_path / "named.toml").write_text('[opd]\nlog_level = "error"\n')
    assert config.load(None, env=env).opd.log_level == "error"
    assert config.resolve_path("x.toml", env=env) == (Path("x.toml"), True)


def test_render_is_toml_that_reads_back_the_same() -> None:
    cfg = parse("""
[opd]
namespaces = ["a", "b-*"]
listen = "[::1]:9000"
shutdown_timeout = 2.5
[kubernetes]
kubeconfig = "/etc/opd/kubeconfig"
context = "c"
[plugins]
enable = ["x", "y.z"]
[plugins."y.z"]
isolation = "thread"
text = "quote \\" and \\\\ and ünï"
when = 2024-01-02T03:04:05Z
deep = { list = [1.5, true, "s"], t = { u = 1 } }
""")
    again = parse(rendering.render(cfg))
    assert (again.opd, again.kubernetes, again.plugins.enable) == (cfg.opd, cfg.kubernetes, cfg.plugins.enable)
    for name in ("x", "y.z", "other"):
        assert again.plugin(name) == cfg.plugin(name)
    assert parse(rendering.render(DaemonConfig())) == DaemonConfig()


def test_etc_opd_toml_is_valid_and_documents_every_key() -> None:
    text = (REPO / "etc" / "opd.toml").read_text()
    assert config.load(REPO / "etc" / "opd.toml") == DaemonConfig(path=REPO / "etc" / "opd.toml")
    documented: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        if found := re.fullmatch(r"#? ?\[([a-z.]+)\]", line):
            section = found.group(1)
        elif found := re.fullmatch(r"# ([a-z_]+) = .*", line):
            documented.setdefault(section, set()).add(found.group(1))
    assert documented["opd"] >= {"namespaces", "clusterwide", "log_level", "log_format", "listen", "shutdown_timeout"}
    assert documented["kubernetes"] >= {"kubeconfig", "context", "in_cluster"}
    assert documented["plugins"] >= {"enable", "disable"}
    assert documented["ha"] >= set(config._HA_KEYS)
    assert documented["plugins.backups"] >= set(config.PLUGIN_OWN_KEYS)
    assert '# log_level = "info"' in text and '# log_format = "auto"' in text
    assert "# shutdown_timeout = 8.0" in text and '# listen = ""' in text


def test_a_file_with_problems_still_gives_the_rest() -> None:
    # config check reads the plugins' tables in the same pass as opd's own problems.
    with pytest.raises(ConfigFileError) as err:
        parse('[opd]\nlog_level = "loud"\n[plugins]\nenable = ["a"]\n[plugins.a]\nx = 1\n')
    assert err.value.problems == ["[opd].log_level: expected one of trace, debug, info, warning, error, got 'loud'"]
    partial = err.value.partial
    assert partial is not None
    assert (partial.opd.log_level, partial.plugins.enable) == ("info", ("a",))
    assert dict(partial.plugin("a").options) == {"x": 1}
    with pytest.raises(ConfigFileError) as err:
        parse("[[[")
    assert err.value.partial is None


# -- config show: secrets redacted, plugins' defaults shown ----------------------------------------------------------


@pytest.mark.parametrize(("key", "secret"), [
    ("password", True), ("db_password", True), ("API_TOKEN", True), ("client-secret", True), ("key", True),
    ("ssh_key_file", True), ("greeting", False), ("namespaces", False), ("kubeconfig", False), ("tokens", True),
])
def test_secret_looking_names(key: str, secret: bool) -> None:
    assert rendering.secret_name(key) is secret


def test_redact_reaches_into_tables_and_lists() -> None:
    value = {"host": "db", "password": "p", "replicas": [{"name": "r1", "token": "t"}], "keys": ["a", "b"]}
    assert rendering.redact("database", value) == {
        "host": "db", "password": "<redacted>", "replicas": [{"name": "r1", "token": "<redacted>"}],
        "keys": "<redacted>"}
    assert rendering.redact("dsn", "postgres://u:p@db", secret=True) == "<redacted>"
    assert rendering.redact("dsn", "postgres://u:p@db") == "postgres://u:p@db"


def test_render_redacts_plugin_keys() -> None:
    cfg = parse('[plugins.p]\npassword = "hunter2"\nnested = { token = "abc", user = "me" }\nplain = "shown"\n')
    text = rendering.render(cfg)
    assert "hunter2" not in text and "abc" not in text
    assert ('password = "<redacted>"\nnested = {token = "<redacted>", user = "me"}\nplain = "shown"\n') in text


OPTIONS = [
    Option("interval", float, default=30.0, help="seconds\nbetween checks"),
    Option("bucket", str, help="where backups go"),
    Option("region", str, default=None),
    Option("dsn", str, default="postgres://u:hunter2@db", secret=True),
    Option("tags", list, items=str, default=["a"]),
]


def test_render_shows_declared_options_with_defaults() -> None:
    cfg = parse('[plugins.p]\ninterval = 5\ndsn = "postgres://u:s3cret@db"\nintervall = 1\n')
    text = rendering.render(cfg, {"p": OPTIONS, "q": OPTIONS[:1], "r": None})
    assert text.endswith(
        '\n[plugins.p]\nclusterwide = true\nisolation = "shared"\n'
        "interval = 5.0  # seconds between checks\n"
        "# bucket: required, not set (a string: where backups go)\n"
        "# region: not set\n"
        'dsn = "<redacted>"\n'
        'tags = ["a"]\n'
        "intervall = 1  # unknown key\n"
        '\n[plugins.q]\nclusterwide = true\nisolation = "shared"\n'
        "interval = 30.0  # seconds between checks\n")
    assert "s3cret" not in text and "hunter2" not in text
    tomllib.loads(text)


# -- the CLI ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI in this process with no plugins installed; the logging it sets up is undone afterwards."""
    monkeypatch.setattr(plugins, "installed", list)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.mark.usefixtures("no_plugins")
def test_cli_config_check_ok(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[opd]\nnamespaces = ["default"]\n')
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"{path}: ok\n", "")


@pytest.mark.usefixtures("no_plugins")
def test_cli_config_check_problems_one_line_each_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[opd]\nnamespace = ["a"]\nshutdown_timeout = 0\n')
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: [opd].namespace: unknown key (did you mean 'namespaces'?)",
        f"{path}: [opd].shutdown_timeout: expected a number of seconds > 0, got 0",
    ]


@pytest.mark.usefixtures("no_plugins")
@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b"[[[", b"a = 1\na = 2\n"])
def test_cli_config_check_never_shows_a_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "opd.toml"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"{path}: ")


@pytest.mark.usefixtures("no_plugins")
def test_cli_config_check_missing_and_default_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    monkeypatch.delenv("OPD_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["config", "check"])
    assert result.exit_code == 0
    assert result.stdout == f"{tmp_path / 'absent.toml'}: ok (no such file: the defaults apply)\n"
    result = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert result.stderr == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


@pytest.mark.usefixtures("no_plugins")
def test_cli_config_check_warns_about_unknown_plugin_names(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\ndisable = ["surely-not-installed"]\n')
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 0
    assert result.stdout == f"{path}: ok\n"
    assert result.stderr == f"{path}: warning: [plugins].disable: no installed plugin 'surely-not-installed'\n"


@pytest.mark.usefixtures("no_plugins")
def test_cli_config_show_prints_the_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[opd]\nlog_level = "debug"\n[plugins.p]\nkey = "v"\n')
    result = CliRunner().invoke(main, ["config", "show", str(path)])
    assert result.exit_code == 0
    assert result.stdout == rendering.render(config.load(path))
    assert 'log_level = "debug"' in result.stdout
    assert "shutdown_timeout = 8.0" in result.stdout  # a default, shown
    assert '[plugins.p]\nclusterwide = true\nisolation = "shared"\nkey = "<redacted>"\n' in result.stdout


def test_the_kubernetes_section_is_a_login() -> None:
    from dataclasses import asdict

    from opd import Login

    cfg = parse('[kubernetes]\nkubeconfig = "/etc/opd/kubeconfig"\ncontext = "c"\n')
    assert Login(**asdict(cfg.kubernetes)) == Login(kubeconfig="/etc/opd/kubeconfig", context="c")
    assert Login(**asdict(DaemonConfig().kubernetes)) == Login()


def test_ha_section() -> None:
    ha = parse('[ha]\nmode = "shards"\nshards = 3\nlease = "ops"\nlease_namespace = "opd-system"\n').ha
    assert (ha.mode, ha.shards, ha.lease, ha.lease_namespace, ha.lease_duration) == ("shards", 3, "ops", "opd-system",
                                                                                   15.0)
    with pytest.raises(ConfigFileError) as err:
        parse('[ha]\nmode = "lead"\nshards = 0\nlease = "Bad_Name"\nrenew_deadline = 20\n')
    assert err.value.problems == [
        "[ha].lease: expected a DNS name (lowercase letters, digits, '-', '.'), got 'Bad_Name'",
        "[ha].shards: expected a whole number from 1 to 1024, got 0",
        "[ha].mode: expected one of off, leader, shards, got 'lead' (did you mean 'leader'?)",
        "[ha]: expected lease_duration > renew_deadline > retry_period, got 15 > 20 > 2",
    ]


# -- the secrets file overlaid ($OPD_CONFIG_SECRETS, issue #18) --------------------------------------------------------


def _files(tmp_path: Path, main: str, secrets: str) -> tuple[Path, dict[str, str]]:
    path, secret = tmp_path / "opd.toml", tmp_path / "secrets.toml"
    path.write_text(main)
    secret.write_text(secrets)
    return path, {config.SECRETS_ENV_VAR: str(secret)}


def test_the_secrets_file_overlays_tables_key_by_key(tmp_path: Path) -> None:
    path, env = _files(tmp_path,
                       '[plugins.p]\nuser = "me"\n[plugins.p.auth]\nrealm = "r"\n[opd]\nlog_level = "debug"\n',
                       '[plugins.p]\ntoken = "t0k"\nitems = [1, 2]\n[plugins.p.auth]\npassword = "pw"\n'
                       '[plugins.q]\nkey = "k"\n')
    cfg = config.load(path, env=env)
    assert dict(cfg.plugins.tables["p"].options) == {"user": "me", "auth": {"realm": "r", "password": "pw"},
                                                   "token": "t0k", "items": [1, 2]}
    assert dict(cfg.plugins.tables["q"].options) == {"key": "k"}
    assert cfg.opd.log_level == "debug" and cfg.path == path
    assert config.load(path, env={}).plugins.tables["p"].options == {"user": "me", "auth": {"realm": "r"}}


def test_the_merged_config_is_validated_and_problems_name_both_files(tmp_path: Path) -> None:
    path, env = _files(tmp_path, '[opd]\nlog_level = "debug"\n', '[opd]\nlog_level = "loud"\n')
    with pytest.raises(ConfigFileError) as err:
        config.load(path, env=env)
    [line] = err.value.lines()
    assert line.startswith(f"{path} (with {tmp_path / 'secrets.toml'}): [opd].log_level: expected one of")


def test_secrets_file_problems_are_one_line(tmp_path: Path) -> None:
    path, env = _files(tmp_path, '[plugins.p]\nauth = "basic"\n', '[plugins.p.auth]\npassword = "x"\n')
    with pytest.raises(ConfigFileError) as err:
        config.load(path, env=env)
    assert err.value.lines() == [f"{path} (with {tmp_path / 'secrets.toml'}): plugins.p.auth: a table in one file "
                                 "and a value in the other (the secrets file overlays tables key by key)"]
    path, env = _files(tmp_path, "", "[plugins.p\n")
    with pytest.raises(ConfigFileError) as err:
        config.load(path, env=env)
    assert err.value.lines()[0].startswith(f"{tmp_path / 'secrets.toml'}: line 1")
    with pytest.raises(ConfigFileError) as err:
        config.load(path, env={config.SECRETS_ENV_VAR: str(tmp_path / "missing.toml")})
    assert err.value.lines() == [f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"]


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_bytes(b"# x\n" * (config.MAX_FILE_BYTES // 4 + 1))
    with pytest.raises(ConfigFileError) as err:
        config.load(path, env={})
    assert err.value.lines() == [f"{path}: larger than 1 MiB: not read (a config file is a few KiB)"]


def test_the_secrets_file_alone_when_the_default_file_is_missing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    _, env = _files(tmp_path, "", '[plugins.p]\ntoken = "t"\n')
    assert config.load(env=env).plugins.tables["p"].options == {"token": "t"}


@pytest.mark.usefixtures("no_plugins")
def test_cli_config_show_reads_the_secrets_file_and_redacts_it(tmp_path: Path) -> None:
    path, env = _files(tmp_path, '[plugins.p]\nuser = "me"\n',
                       '[plugins.p]\nregion = "eu-1"\n[plugins.p.db]\nhost = "h"\npassword = "hunter2"\n')
    result = CliRunner(env=env).invoke(main, ["config", "show", str(path)])
    assert result.exit_code == 0, result.output
    assert 'region = "eu-1"' in result.stdout and "hunter2" not in result.stdout
    assert 'db = {host = "h", password = "<redacted>"}' in result.stdout


def test_render_writes_a_delete_character_toml_can_read() -> None:
    """TOML forbids a raw DEL in a string, and JSON's escaping leaves it raw: config show's output did not read."""
    cfg = parse('[plugins.p]\nodd = "a\\u007fb"\n')
    assert tomllib.loads(rendering.render(cfg))["plugins"]["p"]["odd"] == "a\x7fb"


# -- one declaration: validation, defaults, config show and etc/opd.toml all read it (issue #20) ----------------------


def _etc_blocks() -> dict[str, str]:
    """etc/opd.toml's text by section (``[name]`` or ``# [plugins.name]``)."""
    blocks: dict[str, str] = {}
    section = ""
    for line in (REPO / "etc" / "opd.toml").read_text().splitlines():
        if found := re.fullmatch(r"#? ?\[([a-z.]+)\]", line):
            section = found.group(1)
        blocks[section] = blocks.get(section, "") + line + "\n"
    return blocks


def test_etc_opd_toml_documents_every_declared_key_with_its_default() -> None:
    blocks = _etc_blocks()
    assert list(config.SECTIONS) == ["opd", "kubernetes", "ha", "webhooks", "plugins"]
    for name, section in [*config.SECTIONS.items(), ("plugins.backups", config.PluginTable)]:
        documented = dict(re.findall(r"^# ([a-z_]+) = (.*)$", blocks[name], re.M))
        for key, (spec, default) in config.keys(section).items():
            assert key in documented, f"[{name}].{key} is not documented in etc/opd.toml"
            if default not in (None, ()):  # else an example is shown
                assert documented[key] == rendering.toml_value(default), f"[{name}].{key}"
            for variable in re.findall(r"\$[A-Z_]+", spec.unset):  # what unset means, said the same way
                assert variable in blocks[name], f"[{name}].{key}: {variable}"


def test_opd_s_keys_of_a_plugin_table_are_the_ones_options_may_not_take() -> None:
    from opd.plugin.options import RESERVED

    assert config.PLUGIN_OWN_KEYS == RESERVED == tuple(config.keys(config.PluginTable))


FULL = """
[opd]
namespaces = ["a", "b-*"]
listen = "127.0.0.1:8080"
[kubernetes]
kubeconfig = "/etc/opd/kubeconfig"
context = "c"
[ha]
mode = "shards"
shards = 3
identity = "me"
lease_duration = 30
[webhooks]
service = "opd/hooks:443"
managed = ""
cert_dir = "/var/lib/opd"
excluded_namespaces = []
[plugins]
enable = ["p"]
"""


@pytest.mark.parametrize("text", ["", FULL, '[ha]\nmode = "leader"\n[kubernetes]\nin_cluster = true\n'])
def test_config_show_writes_every_declared_key_and_reads_back(text: str) -> None:
    cfg = parse(text)
    shown = rendering.render(cfg)
    back = tomllib.loads(shown)
    for name, section in config.SECTIONS.items():
        values = getattr(cfg, name)
        for key, (spec, _) in config.keys(section).items():
            if spec.shown is not None and not spec.shown(values):
                assert key not in back[name]
            elif getattr(values, key) is None:
                assert f"\n# {key}: not set ({spec.unset})\n" in shown and key not in back[name]
            else:
                assert key in back[name], f"[{name}].{key}"
    again = parse(shown)
    assert (again.opd, again.kubernetes, again.ha, again.webhooks) == (cfg.opd, cfg.kubernetes, cfg.ha, cfg.webhooks)
    assert (again.plugins.enable, again.plugins.disable) == (cfg.plugins.enable, cfg.plugins.disable)


def test_config_show_says_what_an_empty_value_means() -> None:
    shown = rendering.render(parse(FULL))
    assert 'managed = ""  # not managed\n' in shown and "excluded_namespaces = []  # none but opd's own" in shown
    assert "shards = 3\n" in shown and "shards" not in rendering.render(DaemonConfig())
    assert '[opd]\nnamespaces = ["a", "b-*"]\nlog_level' in shown  # clusterwide: implied, not written


def test_a_key_reads_converts_and_says_what_is_wrong(tmp_path: Path) -> None:
    lower = config.Key(list, items=str, each=lambda s: None if s.islower() else f"{s!r} is not lowercase",
                       convert=tuple)
    assert lower.read(["a", "b"], tmp_path) == (("a", "b"), [])
    assert lower.read(["a", 1, "B"], tmp_path) == (None, [("[1]", "expected a string, got integer"),
                                                          ("[2]", "'B' is not lowercase")])
    assert lower.read("a", tmp_path) == (None, [("", "expected a list of strings, got string")])
    pick = config.Key(str, choices=("one", "two"))
    assert pick.read("TWO", tmp_path) == ("two", [])
    assert pick.read("tow", tmp_path) == (None, [("", "expected one of one, two, got 'tow' (did you mean 'two'?)")])
    assert config.Key(str, path=True).read("x/y", tmp_path) == (str(tmp_path / "x" / "y"), [])
    assert config.Key(str, path=True).read("/x", tmp_path) == ("/x", [])
    seconds = config.Key(float, words="a number of seconds")
    assert seconds.read(True, tmp_path) == (None, [("", "expected a number of seconds, got boolean")])
    assert seconds.read(3, tmp_path) == (3, [])
    assert config.Key(None, check=lambda v: None if v == 1 else "not one").read([], tmp_path) == (None,
                                                                                                [("", "not one")])


def test_problems_follow_the_declaration_and_a_rule_follows_the_keys_it_reads() -> None:
    # The file's order within a table does not matter: each key's problems come in the declaration's order,
    # a rule's right after the last key it reads (host/url/service before managed, the timings after mode).
    assert problems('[webhooks]\nlisten = "x"\nmanaged = "one"\nurl = "https://u"\nhost = "h"\n') == [
        "[webhooks]: host and url: set one of them (how the API server reaches opd)",
        "[webhooks].managed: expected a DNS name with a dot (webhooks are named <handler>.<plugin>.<managed>), "
        "or \"\" for none; got 'one'",
        "[webhooks].listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got 'x'",
    ]
    # Which keys are written decides "set one of them", also when they are wrong themselves.
    assert problems('[plugins.a]\nmodule = 1\nfile = 2\n') == [
        "[plugins.a].module: expected a string, got integer", "[plugins.a].file: expected a string, got integer",
        "[plugins.a]: module and file: set one of them (where the plugin's code is)"]


# Values for every declared key, good and bad, so that most drawn files are valid.
_VALUES: dict[str, list[Any]] = {
    "namespaces": [["a"], ["dev-*", "!dev-x"], []], "clusterwide": [True, False], "log_level": ["DEBUG", "warn"],
    "log_format": ["json", "auto"], "listen": ["", "127.0.0.1:80", "[::1]:9"], "shutdown_timeout": [1, 2.5, 0],
    "kubeconfig": ["k", "~/k"], "context": ["c", ""], "in_cluster": [True, False], "mode": ["off", "SHARDS", "leader"],
    "lease": ["opd", "A"], "lease_namespace": ["ns"], "identity": ["me"], "lease_duration": [15, 30.0],
    "renew_deadline": [10, 20], "retry_period": [2, 1], "shards": [1, 3, 0], "host": ["h", "[::1]"],
    "url": ["https://a/b"], "service": ["a/b:443"], "managed": ["", "a.b"], "cert_dir": ["c"],
    "excluded_namespaces": [[], ["kube-system", "x"]], "enable": [["a"], []], "disable": [["b"]],
    "filtering": ["auto", "Labels", "client", "server"],
}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_config_show_of_a_valid_file_reads_back_the_same(data: st.DataObject) -> None:
    lines = []
    for name, section in config.SECTIONS.items():
        chosen = data.draw(st.lists(st.sampled_from(list(config.keys(section))), unique=True, max_size=3))
        lines += [f"[{name}]", *(f"{key} = {rendering.toml_value(data.draw(st.sampled_from(_VALUES[key])))}"
                                 for key in chosen)]
    try:
        cfg = parse("\n".join(lines), path=Path("/etc/opd/opd.toml"))
    except ConfigFileError:
        return
    again = parse(rendering.render(cfg))
    assert (again.opd, again.kubernetes, again.ha, again.webhooks) == (cfg.opd, cfg.kubernetes, cfg.ha, cfg.webhooks)
    assert (again.plugins.enable, again.plugins.disable) == (cfg.plugins.enable, cfg.plugins.disable)
