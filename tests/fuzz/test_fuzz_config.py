"""Fuzzing opd.toml: any text, and documents of the daemon's schema with a wrong type at every key,
give either a valid config or a ConfigFileError of bounded one-line problems naming the file; a
plugin's table, whatever it holds, gives its values or one-line problems. Never a traceback."""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opd.plugin import options
from opd.plugin.options import MAX_PROBLEM, MAX_PROBLEMS, Option, resolve
from opd.service import config
from opd.service.config import ConfigFileError, DaemonConfig, parse

FUZZ = settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOURCE = Path("/etc/opd/fuzzed.toml")

# -- TOML values of every type, written by a small writer of our own ------------------------------------------------

scalars = st.one_of(
    st.text(max_size=20), st.text(alphabet="abcdefgh-*![]?.:/0123456789", max_size=20),
    st.integers(-(2**63), 2**63 - 1), st.integers(0, 2000), st.floats(), st.booleans(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)), st.dates(), st.times(),
    st.just("x" * 5000), st.just(10**18),
)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=10)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # mostly a TOML basic string (a DEL makes a syntax error: fine)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"


SCHEMA = {
    "opd": ["namespaces", "clusterwide", "log_level", "log_format", "listen", "shutdown_timeout"],
    "kubernetes": ["kubeconfig", "context", "in_cluster"],
    "ha": ["mode", "lease", "lease_namespace", "identity", "lease_duration", "renew_deadline", "retry_period",
           "shards"],
    "webhooks": ["listen", "host", "url", "service", "cert_dir", "managed"],
    "plugins": ["enable", "disable"],
}
PLUGIN_KEYS = ["namespaces", "clusterwide", "isolation", "module", "file", "interval", "rules", "token"]


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), values, max_size=5)


documents = st.fixed_dictionaries({}, optional={
    **{section: _table(keys) for section, keys in SCHEMA.items()},
    "plugins_tables": st.dictionaries(st.sampled_from(["mirror", "ttl", "x.y", "ü"]), _table(PLUGIN_KEYS),
                                      max_size=3),
    "stray": st.dictionaries(st.text(max_size=6), values, max_size=2),
})


def toml_text(document: dict[str, Any]) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in document.get("stray", {}).items()]
    for section in SCHEMA:
        if section in document or (section == "plugins" and "plugins_tables" in document):
            lines.append(f"[{section}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in document.get(section, {}).items()]
    for name, table in document.get("plugins_tables", {}).items():
        lines.append(f"[plugins.{json.dumps(name)}]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def outcome(data: str | bytes) -> DaemonConfig | ConfigFileError:
    """parse(), whose only failure may be a ConfigFileError of bounded one-line problems."""
    try:
        return parse(data, path=SOURCE)
    except ConfigFileError as exc:
        assert exc.problems and len(exc.problems) <= MAX_PROBLEMS + 1
        for line in exc.lines():
            assert line.startswith(f"{SOURCE}: ") and "\n" not in line and "\r" not in line
            assert len(line) <= len(str(SOURCE)) + 2 + MAX_PROBLEM
        assert "\n" not in str(exc)
        return exc


@FUZZ
@given(document=documents)
def test_fuzz_documents_of_the_schema_with_any_values(document: dict[str, Any]) -> None:
    result = outcome(toml_text(document))
    if isinstance(result, DaemonConfig):  # valid: every plugin's resolved config can be built
        for name in result.plugins.tables:
            result.plugin(name).options_copy()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_any_text(text: str | bytes) -> None:
    outcome(text)


@FUZZ
@given(document=documents, cut=st.integers(0, 400),
       junk=st.text(max_size=3) | st.sampled_from(["[" * 600, "{a=" * 600, "9" * 5000, "x." * 100, "\n[x]\n"]))
def test_fuzz_a_document_with_junk_inserted(document: dict[str, Any], cut: int, junk: str) -> None:
    text = toml_text(document)
    outcome(text[:cut] + junk + text[cut:])


# One option of each type a plugin may declare, with checks, required and not.
DECLARED = [
    Option("interval", float, default=60.0, check=lambda v: None if v > 0 else f"expected > 0, got {v}"),
    Option("count", int, default=1), Option("name", str), Option("enabled", bool, default=True),
    Option("rules", list, default=[], items=dict), Option("targets", list, default=None, items=str),
    Option("extra", dict, default={}), Option("either", (str, int), default="x"),
    Option("token", str, default=None, secret=True),
    Option("picky", str, default="a", check=lambda v: 1 / 0 if v == "boom" else None),
]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.dictionaries(st.sampled_from([o.name for o in DECLARED]) | st.text(max_size=8),
                             values | st.just("boom"), max_size=6))
def test_fuzz_a_plugins_table_against_its_options(table: dict[str, Any]) -> None:
    values_, problems = resolve("[plugins.x]", table, DECLARED)
    assert len(problems) <= MAX_PROBLEMS + 1
    for problem in problems:
        assert problem.startswith("[plugins.x]") and "\n" not in problem and len(problem) <= MAX_PROBLEM
    if not problems:
        for option in DECLARED:
            value = values_[option.name]
            assert value is None or any(options._is(value, kind) for kind in option.types)


# -- the crashes and unbounded messages fuzzing found, each pinned ---------------------------------------------------

@pytest.mark.parametrize(("text", "said"), [
    ("a = " + "[" * 5000 + "]" * 5000, "nested too deeply"),  # tomllib: RecursionError
    ("x = " + "{a = " * 2000 + "1" + "}" * 2000, "nested too deeply"),
    ("[opd]\nshutdown_timeout = " + "1" * 5000, "4300 digits"),  # tomllib: ValueError from int()
    ("[plugins.x]\n" + "a." * 200 + "b = 1", "nested more than 32 levels"),  # deepcopy of it recursed
    ("[plugins.x]\na = " + "[" * 300 + "]" * 300, "nested more than 32 levels"),
])
def test_deep_or_huge_values_are_one_line(text: str, said: str) -> None:
    result = outcome(text)
    assert isinstance(result, ConfigFileError) and said in str(result)


def test_a_huge_value_is_shown_cut() -> None:
    result = outcome('[opd]\nlog_level = "' + "x" * 200_000 + '"')
    assert isinstance(result, ConfigFileError)
    assert result.problems[0].startswith("[opd].log_level: expected one of") and "..." in result.problems[0]


def test_many_problems_are_counted_not_listed() -> None:
    result = outcome("[opd]\n" + "".join(f"unknown{i} = 1\n" for i in range(5000)))
    assert isinstance(result, ConfigFileError)
    assert len(result.problems) == MAX_PROBLEMS + 1 and result.problems[-1] == "... and 4950 more problems"


def test_a_file_over_the_bound_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    with path.open("wb") as file:  # sparse: 64 MiB on disk cost nothing
        file.truncate(64 * 2**20)
    with pytest.raises(ConfigFileError, match="larger than 1 MiB: not read"):
        config.load(path)


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,
    "[ha]\nshards = " + "9" * 5000,
    '[opd]\nnamespaces = ["' + "x" * (2 * 2**20) + '"]',
    "[plugins.x]\n" + "a." * 500 + "b = 1",
])
def test_config_check_exits_1_with_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "opd.toml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "opd", "config", "check", str(path)], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: "), done.stderr
