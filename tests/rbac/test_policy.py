"""RBAC derived from plugins (pure logic): grants merged into rules, Roles or a ClusterRole, what the
handlers need, what a plugin declares (opd_rbac) and its one-line errors, the Leases of [ha]."""

from __future__ import annotations

import textwrap
from importlib import metadata
from typing import Any

import pytest

import opd
from opd.rbac import objects
from opd.rbac.derive import Policy, derive
from opd.rbac.policy import Grant, Grants, PolicyError, Rule, declared_rules
from opd.resources import Resource
from opd.service import config, plugins

SERVED = [
    Resource(group="", version="v1", plural="configmaps", kind="ConfigMap", namespaced=True, singular="configmap",
             short_names=("cm",)),
    Resource(group="", version="v1", plural="secrets", kind="Secret", namespaced=True, singular="secret"),
    Resource(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False, singular="namespace",
             short_names=("ns",), subresources=frozenset({"status", "finalize"})),
    Resource(group="", version="v1", plural="events", kind="Event", namespaced=True, singular="event"),
    Resource(group="batch", version="v1", plural="jobs", kind="Job", namespaced=True, singular="job",
             subresources=frozenset({"status"})),
    Resource(group="kopf.dev", version="v1", plural="kopfexamples", kind="KopfExample", namespaced=True,
             singular="kopfexample", short_names=("kex",), subresources=frozenset({"status"})),
    Resource(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease", namespaced=True,
             singular="lease"),
]


DECLARED = [
    # where the plugin runs (team-a): merged with what opd grants for its handlers
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["watch", "get", "list"]},
    # named objects: one rule per set of names; a whole-resource grant drops its named ones
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"], "resourceNames": ["b", "a"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["x"]},
    # elsewhere by name: a Role there; everywhere: the ClusterRole, which covers the namespaced copies
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "namespaces": ["team-b"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"], "clusterwide": True},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get"], "namespaces": ["team-b"]},
    # a cluster-scoped resource is cluster-wide whatever the rule says; URLs too
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
    {"nonResourceURLs": ["/version", "/healthz"], "verbs": ["get"]},
]


class Handles:
    """A plugin whose table says what it handles (``resources``, ``labelled``), whether it posts Events
    (``quiet``), and what its opd_rbac returns (``rules``; ``"delete-own"``: delete on its resources)."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
        labels = {"app": "x"} if config.get("labelled") else None
        for name in config.get("resources", ["configmaps"]):
            opd.on.create(name, registry=registry, labels=labels, id="made")(lambda **_: None)

    @opd.hookimpl
    def opd_configure(self, settings: opd.OperatorSettings, config: dict[str, Any]) -> None:
        settings.posting.enabled = not config.get("quiet", False)

    @opd.hookimpl
    def opd_rbac(self, config: dict[str, Any], resources: list[dict[str, list[str]]], lookup: Any) -> Any:
        rules = config.get("rules")
        if rules == "delete-own":
            return [{**r, "verbs": ["delete"]} for r in resources]
        if rules == "create-kind":
            return [{**lookup("batch/v1", "Job"), "verbs": ["create"]}]
        if rules == "raise":
            raise RuntimeError("no rules today")
        if rules == "declared":
            return DECLARED
        return rules


class NoHook:
    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        opd.on.create("secrets", registry=registry, id="made")(lambda **_: None)


handles = Handles()
no_hook = NoHook()


def _policy(toml: str, **kinds: str) -> Policy:
    """The policy for a config whose plugins are ``name=object`` of this module."""
    cfg = config.parse(textwrap.dedent(toml))
    eps = [metadata.EntryPoint(name=name, value=f"{__name__}:{obj}", group="opd.plugins")
           for name, obj in kinds.items()]
    found = plugins.load_all(cfg, env={}, entry_points=eps)
    assert not found.failed(), [p.error for p in found.failed()]
    return derive(cfg, found.loaded(), SERVED)


def _rules(policy: Policy, place: str | None) -> list[dict[str, Any]]:
    return [r.to_dict() for r in policy.grants.rules(place)]


def _kinds(policy: Policy) -> list[tuple[str, str | None]]:
    docs = objects.documents(policy, "opd", "ops")
    return [(d.body["kind"], d.body["metadata"].get("namespace")) for d in docs]


CORE_EVENTS = {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}


def test_roles_only_when_every_plugin_serves_namespaces_by_name() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["team-a", "team-b"]
        [plugins.a]
        resources = ["cm"]
    """, a="handles")
    assert policy.grants.places() == ["team-a", "team-b"]
    for place in ("team-a", "team-b"):
        assert _rules(policy, place) == [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "patch", "watch"]}, CORE_EVENTS]
    assert _kinds(policy) == [("ServiceAccount", "ops"), ("Role", "team-a"), ("RoleBinding", "team-a"),
                              ("Role", "team-b"), ("RoleBinding", "team-b")]
    binding = objects.documents(policy, "opd", "ops")[2].body
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "opd"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "opd", "namespace": "ops"}]


def test_namespace_patterns_need_a_cluster_role_and_the_namespaces() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["dev-*", "!dev-tmp"]
        [plugins.a]
    """, a="handles")
    assert policy.grants.places() == [None]
    assert _rules(policy, None) == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "patch", "watch"]},
        CORE_EVENTS,
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    cluster_role = objects.documents(policy, "opd", "ops")[1]
    assert cluster_role.body["kind"] == "ClusterRole"
    assert cluster_role.body["metadata"]["name"] == "ops:opd"
    said = " ".join(" ".join(cluster_role.comment).split())
    assert "serves namespaces by pattern (dev-*, !dev-tmp)" in said
    assert "namespaces yet to come cannot be named" in said


def test_every_namespace_is_a_cluster_role_without_the_namespaces() -> None:
    policy = _policy("[plugins.a]\n", a="handles")
    assert _rules(policy, None) == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "patch", "watch"]}, CORE_EVENTS]
    assert "plugin 'a' serves every namespace" in policy.clusterwide_because


def test_a_cluster_scoped_resource_is_cluster_wide_and_its_events_go_to_default() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["team-a"]
        [plugins.a]
        resources = ["namespaces"]
    """, a="handles")
    assert _rules(policy, None) == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "patch", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces/status"], "verbs": ["patch"]},
    ]
    assert _rules(policy, "default") == [CORE_EVENTS]
    assert policy.grants.places() == [None, "default"]
    assert "plugin 'a' handles namespaces, a cluster-scoped resource" in policy.clusterwide_because


def test_status_subresource_label_selector_and_quiet_plugins() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["team-a"]
        [plugins.a]
        resources = ["kex", "jobs.batch"]
        labelled = true
        quiet = true
    """, a="handles")
    # A label selector: opd reads an object that leaves it (get); status subresources: results there;
    # Events turned off: no events.
    assert _rules(policy, "team-a") == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "patch", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["patch"]},
        {"apiGroups": ["kopf.dev"], "resources": ["kopfexamples"], "verbs": ["get", "list", "patch", "watch"]},
        {"apiGroups": ["kopf.dev"], "resources": ["kopfexamples/status"], "verbs": ["patch"]},
    ]


def test_the_hook_gets_the_resolved_resources_and_a_lookup_by_kind() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["team-a"]
        [plugins.a]
        resources = ["cm", "jobs.batch"]
        rules = "delete-own"
        [plugins.b]
        resources = ["secrets"]
        rules = "create-kind"
    """, a="handles", b="handles")
    assert _rules(policy, "team-a") == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete", "list", "patch", "watch"]},
        CORE_EVENTS,
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "patch", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "list", "patch", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["patch"]},
    ]


def test_declared_rules_go_where_they_say_and_merge() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["team-a"]
        [plugins.a]
        rules = "declared"
    """, a="handles")
    assert _rules(policy, "team-a") == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "patch", "watch"]},
        CORE_EVENTS,
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"], "resourceNames": ["a", "b"]},
    ]
    assert _rules(policy, "team-b") == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ]
    assert _rules(policy, None) == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"nonResourceURLs": ["/healthz", "/version"], "verbs": ["get"]},
    ]
    assert "plugin 'a' asks for cluster-wide rules (opd_rbac)" in policy.clusterwide_because
    assert "plugin 'a' asks for namespaces, a cluster-scoped resource (opd_rbac)" in policy.clusterwide_because


LEASE_RULES = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}


def test_the_leaders_lease_by_name_in_its_namespace() -> None:
    policy = _policy("""
        [ha]
        mode = "leader"
        lease = "elect"
        lease_namespace = "ops"
    """)
    assert policy.grants.places() == ["ops"]
    assert _rules(policy, "ops") == [
        # create cannot be held to resourceNames (the name is in the body); the watch names the Lease
        {**LEASE_RULES, "verbs": ["create"]},
        {**LEASE_RULES, "verbs": ["get", "list", "update", "watch"], "resourceNames": ["elect"]},
    ]
    role = objects.documents(policy, "opd", "ops")[1]
    assert "create cannot be limited to resourceNames" in " ".join(role.body["rules"][0].comment)


def test_shards_and_their_members_leases_by_name() -> None:
    policy = _policy("""
        [ha]
        mode = "shards"
        shards = 3
        lease = "elect"
        lease_namespace = "ops"
    """)
    # Every Lease is known by name (the members in one Lease), each watched by its name: only create is not.
    assert _rules(policy, "ops") == [
        {**LEASE_RULES, "verbs": ["create"]},
        {**LEASE_RULES, "verbs": ["get", "update"],
         "resourceNames": ["elect-0", "elect-1", "elect-2", "elect-labeller"]},
        {**LEASE_RULES, "verbs": ["list", "watch"],
         "resourceNames": ["elect-0", "elect-1", "elect-2", "elect-labeller", "elect-members"]},
        {**LEASE_RULES, "verbs": ["patch"], "resourceNames": ["elect-members"]},
    ]
    reasons = " ".join(r for rule in policy.grants.rules("ops") for r in rule.reasons)
    assert "EVERY LEASE" not in reasons and "watches each by name" in reasons


@pytest.mark.parametrize("mode", ["leader", "shards"])
def test_the_lease_verbs_are_those_opd_ha_uses(mode: str) -> None:
    leases = pytest.importorskip("opd.ha.leases")  # the replicas' side (issue #13, part 2)
    policy = _policy(f'[ha]\nmode = "{mode}"\nlease_namespace = "ops"\n')
    assert {verb for rule in policy.grants.rules("ops") for verb in rule.verbs} <= set(leases.VERBS)
    if mode == "shards":
        assert {verb for rule in policy.grants.rules("ops") for verb in rule.verbs} == set(leases.VERBS)


def test_no_leases_when_ha_is_off() -> None:
    assert _policy("[ha]\nmode = \"off\"\n").grants.places() == []
    assert _kinds(_policy("")) == [("ServiceAccount", "ops")]


# -- merging -------------------------------------------------------------------------------------------------------


def test_merging_dedupes_sorts_verbs_and_groups_resources_with_the_same_verbs() -> None:
    grants = Grants()
    for verb in ("watch", "list", "patch", "list"):
        grants.add(Grant("ns", "", "configmaps", verb), "a: handlers")
    for verb in ("patch", "watch", "list"):
        grants.add(Grant("ns", "", "secrets", verb), "b: handlers")
    grants.add(Grant("ns", "apps", "deployments", "list"), "c: opd_rbac")
    grants.add(Grant("ns", "", "secrets", "get", "one"), "b: opd_rbac")
    rules = grants.rules("ns")
    assert [r.to_dict() for r in rules] == [
        {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["list", "patch", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
    ]
    assert rules[0].reasons == ("a: handlers", "b: handlers")


def test_a_broader_grant_covers_and_takes_the_reasons() -> None:
    grants = Grants()
    grants.add(Grant("ns", "", "secrets", "get", "one"), "a: opd_rbac")
    grants.add(Grant("ns", "", "secrets", "get"), "b: handlers")
    grants.add(Grant(None, "", "secrets", "get"), "c: handlers")
    grants.add(Grant("ns", "", "pods", "delete"), "d: opd_rbac")
    grants.add(Grant("ns", "", "pods", "*"), "e: opd_rbac")
    grants.add(Grant("ns", "", "pods/log", "get"), "f: opd_rbac")
    grants.add(Grant("ns", "*", "*", "list"), "g: opd_rbac")
    grants.add(Grant("ns", "", "configmaps", "list"), "h: handlers")
    assert grants.places() == [None, "ns"]
    assert [r.to_dict() for r in grants.rules(None)] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert grants.rules(None)[0].reasons == ("a: opd_rbac", "b: handlers", "c: handlers")
    assert [r.to_dict() for r in grants.rules("ns")] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["list"]},
    ]


def test_grant_coverage_follows_the_authorizer() -> None:
    whole = Grant("ns", "", "deployments/scale", "get")
    assert Grant("ns", "", "*/scale", "get").covers(whole)
    assert Grant("ns", "", "*", "get").covers(whole)
    assert not Grant("ns", "", "deployments", "get").covers(whole)  # a subresource is its own resource
    assert not Grant("other", "", "deployments/scale", "get").covers(whole)
    assert not Grant("ns", "", "deployments/scale", "get", "x").covers(whole)
    assert Grant(None, "", "", "get", url="/metrics/*").covers(Grant(None, "", "", "get", url="/metrics/x"))
    assert not Grant(None, "", "", "get", url="/metrics").covers(Grant(None, "", "", "get", url="/metricsx"))


def test_rule_reasons_in_comments() -> None:
    policy = Policy()
    policy.grants.add(Grant("ns", "", "configmaps", "list"), "a: handlers")
    policy.grants.add(Grant("ns", "", "configmaps", "get"), "a: re-reads")
    policy.grants.add(Grant("ns", "", "configmaps", "get"), "b: opd_rbac")
    role = objects.documents(policy, "opd", "ops")[1]
    assert role.body["rules"][0].comment == ("a: handlers, re-reads; b: opd_rbac",)
    assert Rule(urls=("/x",), verbs=("get",)).to_dict() == {"nonResourceURLs": ["/x"], "verbs": ["get"]}


# -- a plugin's own rules, checked -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "error"), [
    ("secrets", "opd_rbac() must return a list of PolicyRules (dicts), got str"),
    (["secrets"], "opd_rbac()[0]: expected a PolicyRule (a dict with apiGroups, resources, verbs), got str"),
    ([{"apiGroups": [""], "resources": ["secrets"]}], "opd_rbac()[0]: missing verbs"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["craete"]}],
     "opd_rbac()[0].verbs: unknown verb 'craete' (did you mean 'create'?)"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": "get"}],
     "opd_rbac()[0].verbs: expected a list of strings, got 'get'"),
    ([{"apiGroups": [""], "resources": [], "verbs": ["get"]}],
     "opd_rbac()[0].resources: empty list (a rule that allows nothing)"),
    ([{"resources": ["secrets"], "verbs": ["get"]}], "opd_rbac()[0]: missing apiGroups"),
    ([{"apiGroups": [""], "resources": ["Secrets"], "verbs": ["get"]}],
     "opd_rbac()[0].resources: 'Secrets' is not a resource"),
    ([{"apiGroups": ["apps/v1"], "resources": ["deployments"], "verbs": ["get"]}],
     "opd_rbac()[0].apiGroups: 'apps/v1' is not an API group"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verb": ["get"]}],
     "opd_rbac()[0]: unknown key 'verb' (did you mean 'verbs'?)"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"], "resourceNames": ["x"]}],
     "opd_rbac()[0]: resourceNames cannot restrict create (the request's URL names no object)"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "namespaces": ["dev-*"]}],
     "opd_rbac()[0].namespaces: 'dev-*' is not a namespace name"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "namespaces": ["a"], "clusterwide": True}],
     "opd_rbac()[0]: namespaces and clusterwide together"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "clusterwide": "yes"}],
     "opd_rbac()[0].clusterwide: expected True or False, got 'yes'"),
    ([{"nonResourceURLs": ["/x"], "apiGroups": [""], "verbs": ["get"]}],
     "opd_rbac()[0]: nonResourceURLs with apiGroups"),
    ([{"nonResourceURLs": ["metrics"], "verbs": ["get"]}], "opd_rbac()[0].nonResourceURLs: 'metrics' is not a path"),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, 7], "opd_rbac()[1]: expected a PolicyRule"),
])
def test_bad_rules_are_one_line_naming_the_plugin(value: Any, error: str) -> None:
    with pytest.raises(PolicyError) as caught:
        declared_rules("mine", value)
    message = str(caught.value)
    assert message.startswith("plugin 'mine': ")
    assert error in message
    assert "\n" not in message


def test_good_rules_pass_and_none_is_no_rules() -> None:
    assert declared_rules("mine", None) == []
    [rule] = declared_rules("mine", [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"],
                                      "resourceNames": ["p"], "namespaces": ["a"]}])
    assert rule.grants("a") == [Grant("a", "", "pods/log", "get", "p")]


def test_a_plugin_whose_hook_fails_or_returns_bad_rules_fails_opd_rbac_in_one_line() -> None:
    with pytest.raises(PolicyError) as caught:
        _policy('[plugins.a]\nrules = "raise"\n', a="handles")
    message = str(caught.value)
    assert message.startswith("plugin 'a': opd_rbac failed: RuntimeError: no rules today (at ")
    assert "test_policy.py:" in message
    assert "\n" not in message
    with pytest.raises(PolicyError, match=r"^plugin 'b': opd_rbac\(\)\[0\]\.verbs: unknown verb 'gett'"):
        _policy('[plugins.b]\nrules = [{apiGroups = [""], resources = ["pods"], verbs = ["gett"]}]\n', b="handles")


def test_a_plugin_without_the_hook_gets_what_its_handlers_need() -> None:
    policy = _policy('[opd]\nnamespaces = ["x"]\n', n="no_hook")
    assert _rules(policy, "x") == [
        CORE_EVENTS, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "patch", "watch"]}]


def test_a_resource_the_server_does_not_serve_is_an_error() -> None:
    with pytest.raises(opd.OpdError, match=r"^plugin 'a': resource widgets is not served by the API server"):
        _policy('[plugins.a]\nresources = ["widgets"]\n', a="handles")


# -- the example plugins' own rules --------------------------------------------------------------------------------


def _examples(toml: str) -> Policy:
    cfg = config.parse(textwrap.dedent(toml))
    found = plugins.load_all(cfg, env={})
    assert not found.failed(), [p.error for p in found.failed()]
    return derive(cfg, found.loaded(), SERVED)


COPIES = {"apiGroups": [""], "resources": ["configmaps", "secrets"]}


def test_the_mirror_reads_and_writes_only_where_its_rules_say() -> None:
    # issue #18: it used to list Secrets and ConfigMaps cluster-wide (and namespaces, for glob targets).
    policy = _examples("""
        [plugins]
        enable = ["mirror"]
        [plugins.mirror]
        namespaces = ["platform"]
        [[plugins.mirror.rules]]
        from = "platform"
        to = ["team-a", "team-b"]
    """)
    assert policy.grants.places() == ["platform", "team-a", "team-b"]  # no ClusterRole
    assert _rules(policy, "platform") == [{**COPIES, "verbs": ["get", "list", "patch", "watch"]}, CORE_EVENTS]
    for target in ("team-a", "team-b"):
        assert _rules(policy, target) == [{**COPIES, "verbs": ["create", "delete", "get", "list", "patch"]}]
    nowhere = _examples('[plugins]\nenable = ["mirror"]\n[plugins.mirror]\nnamespaces = ["platform"]\n')
    assert nowhere.grants.places() == []  # no rule: no handlers, no rights


def test_nsdefaults_creates_its_kinds_where_include_says() -> None:
    policy = _examples("""
        [plugins]
        enable = ["nsdefaults"]
        [plugins.nsdefaults]
        include = ["team-a", "kube-system"]
        [[plugins.nsdefaults.objects]]
        apiVersion = "batch/v1"
        kind = "Job"
        metadata = { name = "hello" }
    """)
    assert policy.grants.places() == [None, "default", "team-a"]  # kube-system is excluded by default
    assert _rules(policy, "team-a") == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]
    globbed = _examples('[plugins]\nenable = ["nsdefaults"]\n')
    assert {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]} in _rules(globbed, None)


def test_ttl_deletes_what_it_watches_where_it_runs() -> None:
    policy = _examples("""
        [plugins]
        enable = ["ttl"]
        [plugins.ttl]
        namespaces = ["ci"]
        resources = ["cm", "jobs.batch"]
    """)
    assert _rules(policy, "ci") == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete", "list", "patch", "watch"]},
        CORE_EVENTS,
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["delete", "list", "patch", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["patch"]},
    ]


class Webhooks:
    """A plugin with an admission handler and a converter."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        opd.on.validate("kopfexamples", registry=registry, id="check")(lambda **_: None)
        opd.on.convert("kopfexamples", registry=registry, from_version="v1", to_version="v2", id="up")(
            lambda body, **_: body)


webhooks = Webhooks()


def test_webhook_configurations_and_converted_crds() -> None:
    policy = _policy("""
        [opd]
        namespaces = ["team-a"]
        [webhooks]
        managed = "ops.example.com"
    """, hooks="webhooks")
    admission = {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"]}
    crds = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"]}
    rules = _rules(policy, None)
    assert {**admission, "verbs": ["create"]} in rules
    assert {**admission, "verbs": ["delete", "get", "update"], "resourceNames": ["ops.example.com"]} in rules
    assert {**crds, "verbs": ["get", "patch"], "resourceNames": ["kopfexamples.kopf.dev"]} in rules
    assert not any("mutatingwebhookconfigurations" in r["resources"] for r in rules)  # no mutating handler


# -- risky rules: marked in the YAML, said on stderr (issue #18) -------------------------------------------------------


def _risky(toml: str, **kinds: str) -> tuple[Policy, list[str], str]:
    policy = _policy(toml, **kinds)
    from opd.rbac.yamltext import dump
    return policy, objects.flagged(policy, "opd", "ops"), dump(objects.documents(policy, "opd", "ops"))


def test_a_plugins_everything_rule_is_flagged_not_silent() -> None:
    """Before: `*`/`*`/`*` came out under "allowed exactly what the enabled plugins need", no word said."""
    policy, flagged, text = _risky("""
        [plugins.x]
        namespaces = ["team-a"]
        rules = [{ apiGroups = ["*"], resources = ["*"], verbs = ["*"], clusterwide = true }]
    """, x="handles")
    [line] = flagged
    assert line.startswith('ClusterRole ops:opd: rule {apiGroups [\'*\'], resources [\'*\'], verbs [\'*\']}: ')
    for what in ("wildcard in apiGroups", "wildcard in resources", "wildcard in verbs", "Secrets in every namespace"):
        assert what in line
    assert "(asked by plugin 'x')" in line and "\n" not in line
    assert "allowed exactly what" not in text
    assert "1 rule(s) below are\n#   marked RISK" in text
    cluster = objects.documents(policy, "opd", "ops")[1]
    [rule] = cluster.body["rules"]
    assert any(c.startswith("RISK: wildcard in apiGroups") for c in rule.comment), rule.comment
    assert "# RISK: wildcard in verbs ('*': every verb, escalate, bind and impersonate included) (asked by" in text


@pytest.mark.parametrize(("verb", "what"), [
    ("escalate", "escalate: may create or change roles"), ("bind", "bind: may bind roles"),
    ("impersonate", "impersonate: may act as other users"),
])
def test_escalate_bind_impersonate_are_flagged_in_a_role_too(verb: str, what: str) -> None:
    group, resource = ("", "users") if verb == "impersonate" else ("rbac.authorization.k8s.io", "roles")
    _, flagged, text = _risky(f"""
        [plugins.x]
        namespaces = ["team-a"]
        rules = [{{ apiGroups = ["{group}"], resources = ["{resource}"], verbs = ["{verb}"] }}]
    """, x="handles")
    [line] = flagged
    assert line.startswith(f"Role team-a/opd: rule {{apiGroups ['{group}'], resources ['{resource}'], "
                           f"verbs ['{verb}']}}: {what}")
    assert "(asked by plugin 'x')" in line
    assert f"# RISK: {what}" in text


def test_secrets_in_every_namespace_are_flagged_with_who_asked() -> None:
    # A plugin handling Secrets everywhere: opd's own grants for it (list, watch, patch) are flagged, and
    # named after the plugin; a plugin with Secrets in one namespace, and a named Secret in a Role, are not.
    _, flagged, _ = _risky("""
        [plugins.s]
        [plugins.t]
        namespaces = ["team-a"]
        resources = ["secrets"]
        rules = [{ apiGroups = [""], resources = ["secrets"], verbs = ["get"], resourceNames = ["x"] }]
    """, s="no_hook", t="handles")
    [line] = flagged
    assert "resources ['secrets'], verbs ['list', 'patch', 'watch']" in line
    assert line.endswith("Secrets in every namespace (list, patch, watch) (asked by plugin 's')")
    # A named Secret in every namespace is still every namespace's.
    _, flagged, _ = _risky("""
        [plugins.t]
        rules = [{ apiGroups = [""], resources = ["secrets"], verbs = ["get"], resourceNames = ["x"] }]
    """, t="handles")
    assert [x for x in flagged if "Secrets named 'x' in every namespace (get)" in x]


def test_a_covered_grants_plugin_is_not_blamed_for_the_wildcard() -> None:
    """y's handler grants are folded into x's `*` rule (reasons and all); the risk names x alone."""
    _, flagged, _ = _risky("""
        [plugins.x]
        rules = [{ apiGroups = [""], resources = ["*"], verbs = ["*"] }]
        [plugins.y]
    """, x="handles", y="handles")
    risky = [line for line in flagged if "resources ['*']" in line]
    assert len(risky) == 1 and "plugin 'x'" in risky[0] and "plugin 'y'" not in risky[0], flagged


def test_what_the_example_shapes_need_is_not_flagged() -> None:
    _, flagged, text = _risky("""
        [plugins.x]
        namespaces = ["team-a"]
        rules = "declared"
    """, x="handles")
    assert [line for line in flagged if "Secrets" not in line] == []
    assert flagged == []  # secrets: in team-a only; pods cluster-wide; URLs named
    assert "allowed exactly what the enabled plugins need" in text


def test_url_wildcards_are_flagged() -> None:
    _, flagged, _ = _risky("""
        [plugins.x]
        namespaces = ["team-a"]
        rules = [{ nonResourceURLs = ["/metrics", "/debug/*"], verbs = ["get"] }]
    """, x="handles")
    [line] = flagged
    assert "nonResourceURLs ['/debug/*', '/metrics']" in line and "wildcard in nonResourceURLs ('/debug/*')" in line


class _Odd:
    def __repr__(self) -> str:
        return "line one\nline two"


class _Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("value", [
    [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["x" * 10_000]}],
    [{"apiGroups": [""], "resources": ["secrets"], "verbs": _Odd()}],
    [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "clusterwide": _Broken()}],
    [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "y" * 5000: 1}],
])
def test_what_a_plugin_returns_is_shown_short_on_one_line(value: Any) -> None:
    """Before: the value's repr went into the message whole (10 000 characters; a repr's own line breaks)."""
    with pytest.raises(PolicyError) as caught:
        declared_rules("x", value)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith("plugin 'x': opd_rbac()[0]")
