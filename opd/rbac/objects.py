"""The RBAC objects of a policy: a ServiceAccount, a ClusterRole and Roles with their bindings."""

from __future__ import annotations

import textwrap
from typing import Any

from opd.rbac.derive import LEGEND, Policy
from opd.rbac.policy import Rule
from opd.rbac.yamltext import Commented, Document

RBAC_API = "rbac.authorization.k8s.io"


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "opd", "app.kubernetes.io/instance": name}


def cluster_name(name: str, namespace: str) -> str:
    """The ClusterRole's (and its binding's) name: cluster-wide, so it carries the account's namespace
    too; two installations named alike in two namespaces never share (and overwrite) one."""
    return f"{namespace}:{name}"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 110, subsequent_indent="  ", break_on_hyphens=False) or [""]


def _why(reasons: tuple[str, ...]) -> str:
    """``"mirror: handlers", "mirror: re-reads"`` as ``"mirror: handlers, re-reads"``."""
    by_source: dict[str, list[str]] = {}
    for reason in reasons:
        source, _, what = reason.partition(": ")
        by_source.setdefault(source, [])
        if what and what not in by_source[source]:
            by_source[source].append(what)
    return "; ".join(f"{source}: {', '.join(whats)}" if whats else source for source, whats in by_source.items())


def _rules(rules: list[Rule]) -> list[Commented]:
    return [Commented(rule.to_dict(), (*_wrap(_why(rule.reasons)), *(line for risk in rule.risks
                                                                       for line in _wrap(f"RISK: {risk}"))))
            for rule in rules]


def _brief(rule: Rule) -> str:
    """A rule on one line, as the YAML has it."""
    if rule.urls:
        return f"nonResourceURLs {list(rule.urls)}, verbs {list(rule.verbs)}"
    named = f", resourceNames {list(rule.names)}" if rule.names else ""
    return f"apiGroups {list(rule.groups)}, resources {list(rule.resources)}, verbs {list(rule.verbs)}{named}"


def flagged(policy: Policy, name: str, namespace: str) -> list[str]:
    """One line per risky rule: where it is (ClusterRole or Role), the rule, what is risky and who asked."""
    lines = []
    for place in policy.grants.places():
        role = f"ClusterRole {cluster_name(name, namespace)}" if place is None else f"Role {place}/{name}"
        for rule in policy.grants.rules(place):
            if rule.risks:
                lines.append(f"{role}: rule {{{_brief(rule)}}}: {'; '.join(str(r) for r in rule.risks)}")
    return lines


def documents(policy: Policy, name: str, namespace: str) -> list[Document]:
    """The ServiceAccount ``namespace/name``; a ClusterRole when anything must be cluster-wide; a Role per
    namespace for the rest; a binding of each to the account."""
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    grants = policy.grants
    places = grants.places()
    plugins = ", ".join(policy.plugins) if policy.plugins else "none"
    risky = len(flagged(policy, name, namespace))
    if risky:
        allowed = (f"allowed what the enabled plugins ask for (plugins: {plugins}); {risky} rule(s) below are "
                   "marked RISK (wildcards, escalate, bind, impersonate or Secrets in every namespace): read them "
                   "before applying ('opd rbac --strict' refuses them).")
    else:
        allowed = f"allowed exactly what the enabled plugins need (plugins: {plugins})."
    head = [f"opd's ServiceAccount {namespace}/{name}, {allowed}",
            "Each rule says why above it:", *(f"  {line}" for line in LEGEND),
            "API discovery (/api, /apis) needs no rule here: the API server grants it to every authenticated "
            "user (ClusterRole system:discovery).",
            "Roles go into namespaces that must exist."]
    docs = [Document({"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": {"name": name, "namespace": namespace, "labels": labels(name)}},
                     tuple(line for text in head for line in _wrap(text)))]
    if None in places:
        why = ["A ClusterRole, because:", *(f"- {reason}" for reason in policy.clusterwide_because)]
        if not policy.clusterwide_because:
            why = ["A ClusterRole."]
        cluster = cluster_name(name, namespace)
        docs.append(Document({"apiVersion": f"{RBAC_API}/v1", "kind": "ClusterRole",
                              "metadata": {"name": cluster, "labels": labels(name)},
                              "rules": _rules(grants.rules(None))},
                             tuple(line for text in why for line in _wrap(text))))
        docs.append(Document(_binding("ClusterRoleBinding", "ClusterRole", cluster, None, name, subject)))
    for place in places:
        if place is None:
            continue
        comment = f"A Role: what is needed in namespace {place} only (and not granted cluster-wide above)."
        docs.append(Document({"apiVersion": f"{RBAC_API}/v1", "kind": "Role",
                              "metadata": {"name": name, "namespace": place, "labels": labels(name)},
                              "rules": _rules(grants.rules(place))}, tuple(_wrap(comment))))
        docs.append(Document(_binding("RoleBinding", "Role", name, place, name, subject)))
    return docs


def _binding(kind: str, role_kind: str, role: str, place: str | None, name: str,
             subjects: list[dict[str, str]]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": role}
    if place is not None:
        meta["namespace"] = place
    meta["labels"] = labels(name)
    return {"apiVersion": f"{RBAC_API}/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": RBAC_API, "kind": role_kind, "name": role}, "subjects": subjects}
