"""Fuzzing (hypothesis) of what opd rbac, opd manifests and opd config show take from outside: a plugin's
``opd_rbac`` result (any value: rules, or one line naming the plugin and the rule), and configs with
secrets at any depth (``config show`` prints none of them; ``opd manifests`` keeps them out of the
ConfigMap, and the pod's two files read back as the user's config)."""

from __future__ import annotations

import math
import tomllib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opd import Option
from opd.plugin.options import table_key
from opd.rbac import objects
from opd.rbac.derive import Policy
from opd.rbac.podconfig import for_pod
from opd.rbac.policy import PolicyError, Rule, declared_rules
from opd.service import config, rendering

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- opd_rbac: any value -------------------------------------------------------------------------------------------

_WORDS = st.sampled_from(["", "*", "get", "list", "watch", "create", "delete", "escalate", "bind", "impersonate",
                          "craete", "secrets", "pods", "*/scale", "deployments/scale", "apps", "Apps", "a.b",
                          "team-a", "dev-*", "/metrics", "/debug/*", "metrics", "x" * 70, "a\nb", "ü"])
class _Weird:
    """A plugin's object with a repr on two lines."""

    def __repr__(self) -> str:
        return "two\nlines"


_ODD = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.binary(max_size=8),
                 st.text(max_size=8), _WORDS, st.just(_Weird()), st.text(min_size=300, max_size=400))
_KEYS = st.sampled_from(["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs", "namespaces",
                         "clusterwide", "verb", "apigroups", ""])
_LISTS = st.one_of(st.lists(_WORDS, max_size=4), st.lists(_ODD, max_size=3), st.tuples(_WORDS), _ODD,
                   st.frozensets(_WORDS, max_size=2))
_RULE = st.one_of(
    st.dictionaries(_KEYS, st.one_of(_LISTS, st.booleans()), max_size=6),
    st.fixed_dictionaries({"apiGroups": _LISTS, "resources": _LISTS, "verbs": _LISTS},
                          optional={"resourceNames": _LISTS, "namespaces": _LISTS, "clusterwide": _ODD}),
    st.fixed_dictionaries({"nonResourceURLs": _LISTS, "verbs": _LISTS}),
    _ODD,
)
_ANY = st.one_of(st.lists(_RULE, max_size=4), st.tuples(_RULE), _RULE, st.recursive(
    _ODD, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10))


@FAST
@given(_ANY)
def test_declared_rules_are_rules_or_one_line(value: Any) -> None:
    try:
        rules = declared_rules("fuzz", value)
    except PolicyError as exc:
        message = str(exc)
        assert message.startswith("plugin 'fuzz': opd_rbac()"), message
        assert "\n" not in message and len(message) < 600, message
        return
    # Whatever passed becomes grants, merged rules and flags without a failure.
    policy = Policy()
    for rule in rules:
        places: list[str | None] = [None] if rule.clusterwide or rule.urls else list(rule.namespaces or ["ns"])
        for place in places:
            policy.grants.add_all(rule.grants(place), "fuzz: opd_rbac")
    for place in policy.grants.places():
        for merged in policy.grants.rules(place):
            assert isinstance(merged, Rule)
            for risk in merged.risks:
                assert risk.sources == ("plugin 'fuzz'",)
    for line in objects.flagged(policy, "opd", "ops"):
        assert "\n" not in line and "(asked by plugin 'fuzz')" in line
    risky = any(v in ("*", "escalate", "bind", "impersonate") for r in rules for v in r.verbs) or any(
        "*" in g for r in rules for g in (*r.groups, *r.resources, *r.urls))
    assert bool(objects.flagged(policy, "opd", "ops")) >= risky  # every wildcard and risky verb is flagged


# -- secrets at any depth --------------------------------------------------------------------------------------------

_PLAIN_KEYS = ["host", "name", "port", "user", "items", "opts", "a-b", "with space", "Ünï", "dotted.k", "x\x7fy"]
_SECRET_KEYS = ["password", "db_password", "API_TOKEN", "client-secret", "ssh_key", "Credentials", "private"]
_KEY = st.sampled_from(_PLAIN_KEYS + _SECRET_KEYS)
_LEAF = st.one_of(st.integers(-5, 5), st.booleans(), st.sampled_from(["v", "", "a b", "x\ny", "\x7f", "#", "'"]),
                  st.floats(allow_nan=False, allow_infinity=True, width=32))
_TREE = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_KEY, inner, max_size=4)), max_leaves=16)


class _Marker:
    """Gives each secret leaf a unique, recognisable value; ``named`` under keys named like a secret,
    ``declared`` under the options a plugin declares secret (and not named so)."""

    def __init__(self) -> None:
        self.named: list[str] = []
        self.declared: list[str] = []

    @property
    def values(self) -> list[str]:
        return self.named + self.declared

    def secret(self, value: Any, bucket: list[str]) -> Any:
        """``value``'s shape, every leaf a marked string (an empty container: one marked string)."""
        if isinstance(value, dict) and value:
            return {k: self.secret(v, bucket) for k, v in value.items()}
        if isinstance(value, list) and value:
            return [self.secret(v, bucket) for v in value]
        marked = f"QZ{len(self.values) + 1}QZ"
        bucket.append(marked)
        return marked

    def walk(self, table: dict[str, Any], declared: frozenset[str] = frozenset()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            if rendering.secret_name(key):
                out[key] = self.secret(value, self.named)
            elif key in declared:
                out[key] = self.secret(value, self.declared)
            else:
                out[key] = self.inside(value)
        return out

    def inside(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.walk(value)
        if isinstance(value, list):
            return [self.inside(v) for v in value]
        return value


_PLUGIN_TABLE = st.dictionaries(_KEY, _TREE, max_size=5)
_DECLARED = st.sets(st.sampled_from(["host", "user", "opts", "items"]), max_size=2)


def _document(tables: dict[str, dict[str, Any]], declared: set[str]) -> tuple[dict[str, Any], _Marker]:
    marker = _Marker()
    plugins = {name: marker.walk(table, frozenset(declared) if name == "p" else frozenset())
               for name, table in tables.items()}
    return {"opd": {"log_level": "info"}, "plugins": plugins}, marker


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN-free floats compare as values and ints read back as written."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


_TABLES = st.dictionaries(st.sampled_from(["p", "q", "odd name"]), _PLUGIN_TABLE, min_size=1, max_size=2)


@FAST
@given(_TABLES, _DECLARED)
def test_config_show_prints_no_secret_at_any_depth(tables: dict[str, dict[str, Any]], declared: set[str]) -> None:
    document, marker = _document(tables, declared)
    text = rendering.toml_document(document)
    assert _same(tomllib.loads(text), document)  # the writer the Secret's file uses reads back as written
    cfg = config.parse(text)
    options = {"p": [Option(name, (str, int, float, bool, list, dict), default=None, secret=True)
                     for name in sorted(declared)]}
    shown = rendering.render(cfg, options)
    tomllib.loads(shown)
    assert not [v for v in marker.values if v in shown], shown
    # Without the plugin's declarations (it did not load), the names alone keep theirs out.
    shown = rendering.render(cfg)
    tomllib.loads(shown)
    assert not [v for v in marker.named if v in shown], shown


@FAST
@given(_TABLES, _DECLARED, st.booleans())
def test_manifests_keep_every_secret_out_of_the_configmap(tables: dict[str, dict[str, Any]], declared: set[str],
                                                          comments: bool) -> None:
    document, marker = _document(tables, declared)
    text = rendering.toml_document(document)
    if comments:  # a comment after each line, and a commented-out secret, as people write them
        text = "".join(f"{line}  # note\n" if line.strip() and '"""' not in line else f"{line}\n"
                       for line in text.splitlines()) + '# password = "QZ0QZ"\n'
        marker.named.append("QZ0QZ")
    cfg = config.parse(text)
    pod = for_pod(cfg, text, declared={"p": sorted(declared)})
    assert not [v for v in marker.values if v in pod.text], pod.text
    assert (pod.secrets is not None) == bool(marker.values and marker.values != ["QZ0QZ"])
    assert pod.config.plugins.tables == cfg.plugins.tables  # the pod reads back the user's config


_DOC = st.dictionaries(_KEY, _TREE, max_size=4)


@FAST
@given(_DOC, _DOC)
def test_the_secrets_overlay_merges_or_names_each_conflict(main: dict[str, Any], top: dict[str, Any]) -> None:
    import copy

    merged = copy.deepcopy(main)
    conflicts = config.overlay(merged, top)
    for line in conflicts:
        assert "\n" not in line and line.endswith("(the secrets file overlays tables key by key)")

    def check(base: Any, over: Any, path: tuple[str, ...]) -> None:
        for key, value in over.items():
            here = ".".join(table_key(k) for k in (*path, key))
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                check(base[key], value, (*path, key))
            elif any(line.startswith(f"{here}: ") for line in conflicts):
                continue
            else:
                assert _same(base[key], value), here

    check(merged, top, ())
    assert len(conflicts) <= sum(1 for _ in _paths(top))


def _paths(value: Any) -> Any:
    if isinstance(value, dict):
        for v in value.values():
            yield v
            yield from _paths(v)
