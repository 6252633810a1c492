"""Any value of the mirror's table gives valid rules or one line: never a traceback, never a kube-* target."""

from __future__ import annotations

import re
from typing import Any

import opd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opd.plugin.manager import prepare

import opd_mirror
from opd_mirror import rules as rules_

# Whatever TOML can hold (datetimes aside): scalars, arrays and tables, nested.
scalars = st.one_of(st.text(max_size=80), st.integers(), st.floats(allow_nan=True), st.booleans())
toml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                          st.dictionaries(st.text(max_size=12), inner, max_size=6)),
                           max_leaves=12)

# Namespace-like strings, near-misses and hostile ones: names, globs, kube-*, empty, long, odd characters.
namespaces = st.one_of(
    st.sampled_from(["platform", "team-a", "team-b", "kube-system", "kube-public", "kube-node-lease", "kube-x",
                     "default", "*", "team-*", "!team-a", "", " ", "Team-A", "a" * 63, "a" * 64, "-a", "a-",
                     "bootstrap-token-*", "a\nb", "ä"]),
    st.from_regex(r"[-a-z0-9*!?\[\]]{0,70}", fullmatch=True),
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(["from", "to", "names"]), st.text(max_size=10))
rule_tables = st.dictionaries(
    keys,
    st.one_of(namespaces, st.lists(namespaces, max_size=8), toml_values),
    max_size=4,
)
tables = st.one_of(
    st.fixed_dictionaries({"rules": st.lists(rule_tables, max_size=5)}),
    st.fixed_dictionaries({"rules": toml_values}),
    st.dictionaries(st.sampled_from(["rules", "resync", "allowed_targets", "targets", "rule", "namespaces"]),
                    toml_values, max_size=3),
)

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(table: dict[str, Any]) -> None:
    """The property: loaded as the daemon loads it, the table gives sound rules, or a one-line ConfigError."""
    try:
        prepared = prepare(opd_mirror, "mirror", table)
    except opd.ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert message.startswith("[plugins.mirror]"), message
        assert len(message) < 2000, len(message)  # a quoted value is cut short
        return
    cfg = opd_mirror.Config.of(prepared.config)
    for rule in cfg.rules:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", rule.source)
        assert rule.targets
        for target in rule.targets:
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", target)
            assert not target.startswith("kube-") and target != rule.source
    for source in cfg.sources():
        for name in ("x", "bootstrap-token-abcdef", "registry"):
            targets = cfg.targets_for(source, name)
            assert targets <= cfg.destinations()
            assert not any(t.startswith("kube-") for t in targets) and source not in targets
    # Its rights: only in the namespaces the rules name, never cluster-wide.
    for grant in opd_mirror.opd_rbac(prepared.config):
        assert "clusterwide" not in grant
        assert set(grant["namespaces"]) <= cfg.sources() | cfg.destinations()


@FUZZ
@given(tables)
def test_any_table_gives_rules_or_one_line(table: dict[str, Any]) -> None:
    check(table)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries(
    {"from": namespaces, "to": st.lists(namespaces, min_size=1, max_size=6)},
    optional={"names": st.lists(namespaces, max_size=4)}), min_size=1, max_size=4))
def test_well_shaped_rules_with_any_names(rules: list[dict[str, Any]]) -> None:
    # Shapes right, values anything: the names decide, and kube-* never gets through.
    check({"rules": rules})


def test_sizes_are_bounded() -> None:
    too_many = [{"from": "a", "to": ["b"]}] * (rules_.MAX_RULES + 1)
    assert rules_.problem(too_many) == f"{rules_.MAX_RULES + 1} rules: at most {rules_.MAX_RULES}"
    wide = [{"from": "a", "to": [f"t{i}" for i in range(rules_.MAX_TARGETS + 1)]}]
    assert rules_.problem(wide) == f"rules[0].to: {rules_.MAX_TARGETS + 1} entries: at most {rules_.MAX_TARGETS}"
    long = [{"from": "x" * 10_000, "to": ["b"]}]
    problem = rules_.problem(long)
    assert problem is not None and len(problem) < 200 and "(10002 characters)" in problem
