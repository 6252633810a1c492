"""What opd needs to be allowed, derived from the enabled plugins, their handlers and the config.

For each resource a plugin's handlers serve (resolved by the API server's discovery: the rules
name API groups and plurals, and whether a resource has a status subresource or is cluster-scoped
is the server's to say), opd:

- lists and watches it, and patches it (its markers, finalizer and label, the handlers' patches);
- patches ``<resource>/status`` when it has a status subresource (results, ``patch.status``,
  markers);
- gets it when a label selector is sent to the server (an object that leaves the selector is read
  afresh: ``ResourceProcessor._read``);
- creates Events in the object's namespace (``default`` for a cluster-scoped object), unless the
  plugin turned posting off.

A plugin limited to namespaces by name gets those in Roles; one serving every namespace, or
namespaces by pattern (then it also lists and watches namespaces), gets them cluster-wide: a Role
names one namespace, and those yet to come cannot be named. A cluster-scoped resource is always
cluster-wide. Then each plugin's own rules (``opd_rbac``), and the Leases of ``[ha]``.

API discovery needs nothing here: ``/api`` and ``/apis`` are readable by every authenticated user
(the ClusterRole ``system:discovery``, bound to ``system:authenticated`` by the API server itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opd.engine import namespaces as ns_patterns
from opd.errors import OpdError
from opd.ha.shards import lease_names as ha_lease_names
from opd.plugin.manager import plugin_config
from opd.rbac.policy import DeclaredRule, Grant, Grants, Place, PolicyError, declared_rules
from opd.registry import Reason
from opd.resources import Resource, ResourceRef, select
from opd.service.config import DaemonConfig, HaSection, PluginConfig
from opd.service.plugins import Plugin, describe_error

# The reasons next to the rules, explained once in the output's head.
LEGEND = (
    "handlers: opd lists and watches the objects the plugin's handlers serve, and patches them (its markers,",
    "  finalizer and label, the handlers' patches)",
    "results: handler results, patch.status and markers go through the status subresource",
    "re-reads: with a label selector sent to the server, opd reads afresh an object that leaves it",
    "events: opd posts Events about the objects (handler outcomes, opd.info/warn)",
    "namespace patterns: opd follows the namespaces that match the plugin's patterns",
    "opd_rbac: the plugin's own calls, as it declares them",
    "[ha]: the Leases that coordinate replicas",
    "webhooks: the webhook configurations and CRD conversion stanzas opd keeps pointing at its server",
)


@dataclass
class Policy:
    """The grants, and why a ClusterRole is needed (empty: Roles do)."""

    grants: Grants = field(default_factory=Grants)
    clusterwide_because: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    def because(self, why: str) -> None:
        if why not in self.clusterwide_because:
            self.clusterwide_because.append(why)


def plugin_places(config: PluginConfig) -> tuple[str, ...] | None:
    """The namespaces a plugin is limited to by name; None when it needs cluster-wide rules."""
    if config.clusterwide or not config.namespaces or not ns_patterns.is_static(config.namespaces):
        return None
    return tuple(dict.fromkeys(config.namespaces))


def resolve(plugin: str, ref: ResourceRef, served: Sequence[Resource]) -> Resource:
    """The served resource a handler names, as the engine resolves it; OpdError when none or several."""
    found = select(ref, served)
    if len(found) > 1:
        names = ", ".join(str(r) for r in found)
        raise OpdError(f"plugin {plugin!r}: resource {ref!s} is ambiguous: {names}; name the group too")
    if not found:
        raise OpdError(f"plugin {plugin!r}: resource {ref!s} is not served by the API server (is its CRD "
                       "installed? the rules name what the server serves)")
    return found[0]


def derive(config: DaemonConfig, plugins: Sequence[Plugin], served: Sequence[Resource]) -> Policy:
    """Every grant the loaded ``plugins`` and the config's ``[ha]`` need."""
    policy = Policy()
    for plugin in plugins:
        policy.plugins.append(plugin.name)
        _plugin(policy, plugin, served)
    _leases(policy, config.ha)
    _webhooks(policy, config, plugins, served)
    return policy


def _plugin(policy: Policy, plugin: Plugin, served: Sequence[Resource]) -> None:
    name, grants = plugin.name, policy.grants
    places = plugin_places(plugin.config)
    scope: list[Place] = [None] if places is None else list(places)
    if plugin.config.clusterwide or not plugin.config.namespaces:
        policy.because(f"plugin {name!r} serves every namespace")
    elif places is None:
        patterns = ", ".join(plugin.config.namespaces)
        policy.because(f"plugin {name!r} serves namespaces by pattern ({patterns}): a Role names one namespace, "
                       "and namespaces yet to come cannot be named")
        grants.add_all((Grant(None, "", "namespaces", verb) for verb in ("list", "watch")),
                       f"{name}: namespace patterns")
    stubs: list[dict[str, list[str]]] = []
    for ref in plugin.registry.resources():
        resource = resolve(name, ref, served)
        stub = {"apiGroups": [resource.group], "resources": [resource.plural]}
        if stub not in stubs:
            stubs.append(stub)
        where: list[Place] = scope if resource.namespaced else [None]
        if not resource.namespaced and places is not None:
            policy.because(f"plugin {name!r} handles {resource.plural}, a cluster-scoped resource")
        for place in where:
            for verb in ("list", "watch", "patch"):
                grants.add(Grant(place, resource.group, resource.plural, verb), f"{name}: handlers")
            if plugin.registry.label_selector(ref) is not None:
                grants.add(Grant(place, resource.group, resource.plural, "get"), f"{name}: re-reads")
            if "status" in resource.subresources:
                grants.add(Grant(place, resource.group, f"{resource.plural}/status", "patch"), f"{name}: results")
        if plugin.settings.posting.enabled:
            # An Event goes to its object's namespace; a cluster-scoped object's to "default".
            for place in (where if resource.namespaced else ["default"]):
                grants.add(Grant(place, "", "events", "create"), f"{name}: events")
    for rule in _declared(plugin, stubs, served):
        _add_declared(policy, name, rule, scope, served)


def _declared(plugin: Plugin, stubs: list[dict[str, list[str]]], served: Sequence[Resource]) -> list[DeclaredRule]:
    if plugin.manager is None or "opd_rbac" not in plugin.manager.implemented:
        return []
    config = plugin_config(plugin.name, plugin.config.options, plugin.options)

    def lookup(api_version: str, kind: str) -> dict[str, list[str]] | None:
        group, _, version = api_version.rpartition("/")
        for resource in served:
            if (resource.group, resource.version, resource.kind) == (group, version, kind):
                return {"apiGroups": [resource.group], "resources": [resource.plural]}
        return None

    try:
        value = plugin.manager.rbac(config, [dict(s) for s in stubs], lookup)
    except Exception as exc:  # the plugin's code: said in one line, with where in it
        roots = [plugin.entry_point.module.split(".")[0]] if plugin.entry_point is not None else []
        raise PolicyError(f"plugin {plugin.name!r}: opd_rbac failed: {describe_error(exc, roots)}") from None
    return declared_rules(plugin.name, value)


def _add_declared(policy: Policy, plugin: str, rule: DeclaredRule, scope: list[Place],
                  served: Sequence[Resource]) -> None:
    reason = f"{plugin}: opd_rbac"
    if rule.urls or rule.clusterwide:
        policy.because(f"plugin {plugin!r} asks for cluster-wide rules (opd_rbac)")
        policy.grants.add_all(rule.grants(None), reason)
        return
    places: list[Place] = list(rule.namespaces) if rule.namespaces is not None else scope
    for grant in rule.grants(None):
        main = grant.resource.split("/")[0]
        cluster_scoped = any(r.group == grant.group and r.plural == main and not r.namespaced for r in served)
        if cluster_scoped:
            if places != [None]:
                policy.because(f"plugin {plugin!r} asks for {main}, a cluster-scoped resource (opd_rbac)")
            policy.grants.add(grant, reason)
            continue
        for place in places:
            policy.grants.add(Grant(place, grant.group, grant.resource, grant.verb, grant.name), reason)


def lease_names(ha: HaSection) -> list[str]:
    """Every Lease of ``[ha]``, all known by name, as the replicas name and watch them
    (``opd.ha.shards.lease_names``); none when ``[ha]`` is off."""
    return ha_lease_names(ha.mode, ha.lease, ha.shards) if ha.mode in ("leader", "shards") else []


def _leases(policy: Policy, ha: HaSection) -> None:
    """What ``opd.ha`` asks of its Leases' namespace (its requests are in ``opd.ha.leases``): every
    verb by ``resourceNames`` but create. Each Lease is watched by its name (``opd.ha.replica``), so
    list and watch name them too: no grant reaches another component's Lease."""
    names = lease_names(ha)
    if not names:
        return
    place, group, grants = ha.lease_namespace, "coordination.k8s.io", policy.grants
    reason = f'[ha] mode = "{ha.mode}"'
    # The name of an object to create is in the request's body, not its URL: the authorizer cannot
    # hold create to resourceNames, so it is granted on every Lease of that namespace.
    grants.add(Grant(place, group, "leases", "create"),
               f"{reason}: creates its Leases when missing (create cannot be limited to resourceNames: the name is "
               "in the request's body)")
    # A list or watch with fieldSelector=metadata.name=<name> is authorized as a request on that name.
    if ha.mode == "leader":
        grants.add_all((Grant(place, group, "leases", verb, names[0])
                        for verb in ("get", "list", "watch", "update")),
                       f"{reason}: holds and renews its Lease, and watches it by name")
        return
    shards, members = names[:-1], names[-1]
    grants.add_all((Grant(place, group, "leases", verb, name)
                    for name in shards for verb in ("get", "list", "watch", "update")),
                   f"{reason}: holds and renews its shards' Leases {shards[0]}...{shards[-1]}, and watches each by "
                   "name")
    grants.add_all((Grant(place, group, "leases", verb, members) for verb in ("list", "patch", "watch")),
                   f"{reason}: keeps this replica's entry in {members} (an annotation per replica), removes long "
                   "expired ones, and watches it by name")


def _webhooks(policy: Policy, config: DaemonConfig, plugins: Sequence[Plugin], served: Sequence[Resource]) -> None:
    """What ``opd.webhooks.management`` asks: the managed Validating/MutatingWebhookConfiguration (by
    its name; create cannot be limited to one), and get/patch on the CRDs that have converters."""
    group = "admissionregistration.k8s.io"
    managed = config.webhooks.managed
    for plural, reason in (("validatingwebhookconfigurations", Reason.VALIDATE),
                           ("mutatingwebhookconfigurations", Reason.MUTATE)):
        owners = [p.name for p in plugins if p.registry.webhooks(reason)]
        if not owners or not managed:
            continue
        why = f"webhooks: {', '.join(owners)} ({reason} handlers), configuration {managed!r}"
        policy.because(f"plugin {owners[0]!r} has {reason} handlers: webhook configurations are cluster-scoped")
        policy.grants.add(Grant(None, group, plural, "create"), why + " (create: not limited to a name)")
        policy.grants.add_all((Grant(None, group, plural, verb, managed) for verb in ("get", "update", "delete")),
                              why)
    for plugin in plugins:
        for handler in plugin.registry.webhooks(Reason.CONVERT):
            assert handler.resource is not None
            crd = resolve(plugin.name, handler.resource, served)
            name = f"{crd.plural}.{crd.group}"
            policy.because(f"plugin {plugin.name!r} converts {name}: CRDs are cluster-scoped")
            policy.grants.add_all((Grant(None, "apiextensions.k8s.io", "customresourcedefinitions", verb, name)
                                   for verb in ("get", "patch")), f"webhooks: {plugin.name} converts {name}")
