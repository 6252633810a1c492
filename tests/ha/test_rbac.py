"""The Role ``opd rbac`` derives for ``[ha]`` is enough for replicas and names every Lease (issue
#18): replicas running as a ServiceAccount with only that Role lead (leader mode) or share shards
(shards mode: members kept in one named Lease), each Lease watched by its name (a watch by
``fieldSelector=metadata.name``, which the API server's authorizer holds to resourceNames); they
cannot list or watch the namespace's Leases without a name, nor read or write another component's
Lease: asked of the cluster itself (``kubectl auth can-i`` with the ServiceAccount's token)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable
from pathlib import Path

import pytest
from helpers.operators import eventually
from kubernetes_asyncio import client

from opd.ha import HaSettings, Replica
from opd.kube import credentials
from opd.kube.api import APIError, KubeClient
from opd.localcluster import LocalControlPlane
from opd.rbac.derive import derive
from opd.service import config
from opd.settings import NetworkingSettings


async def _as_service_account(api: client.ApiClient, control_plane: LocalControlPlane, namespace: str,
                              rules: list[dict[str, object]]) -> client.Configuration:
    """A ServiceAccount bound to a Role with ``rules``; a Configuration with a token of it."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "replica"}})
    await rbac.create_namespaced_role(namespace, {"metadata": {"name": "replica"}, "rules": rules})
    await rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "replica"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "replica"},
        "subjects": [{"kind": "ServiceAccount", "name": "replica", "namespace": namespace}]})
    answer = await core.create_namespaced_service_account_token(
        "replica", namespace, {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}})
    configuration = client.Configuration(host=control_plane.server)
    configuration.ssl_ca_cert = str(control_plane.ca_file)
    configuration.api_key = {"BearerToken": answer.status.token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return configuration


def _rules(mode: str, namespace: str) -> list[dict[str, object]]:
    shards = "shards = 2\n" if mode == "shards" else ""
    cfg = config.parse(f'[ha]\nmode = "{mode}"\nlease = "grp"\nlease_namespace = "{namespace}"\n{shards}')
    return [rule.to_dict() for rule in derive(cfg, [], []).grants.rules(namespace)]


async def _status(kube: KubeClient, method: str, path: str, **query: str) -> int:
    try:
        await kube.request(method, path, query=query or None,
                           body={"metadata": {"name": "other"}} if method == "PUT" else None)
    except APIError as exc:
        return exc.status
    return 200


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def _token_kubeconfig(kubeconfig: Path, login: client.Configuration, path: Path) -> Path:
    """The admin kubeconfig with its user swapped for the ServiceAccount's token."""
    answer = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "config", "view", "--raw", "-o", "json"],
                            capture_output=True, text=True, timeout=60, check=True)
    view = json.loads(answer.stdout)
    view["users"] = [{"name": "replica", "user": {"token": login.api_key["BearerToken"]}}]
    for context in view["contexts"]:
        context["context"]["user"] = "replica"
    path.write_text(json.dumps(view))
    return path


async def _can_i(kubeconfig: Path, namespace: str, verb: str, what: str) -> bool:
    """``kubectl auth can-i`` (a SelfSubjectAccessReview: the cluster's authorizer answers): 0 yes, 1 no."""
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), "auth", "can-i", verb, what, "-n", namespace,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, 1), err.decode()
    assert out.decode().split()[:1] == (["yes"] if proc.returncode == 0 else ["no"]), out.decode()
    return proc.returncode == 0


async def _lease_watches(kubeconfig: Path) -> int:
    """Watches of Leases by namespace open on the API server now (its ``apiserver_longrunning_gauge``)."""
    proc = await asyncio.create_subprocess_exec("kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics",
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in out.decode().splitlines()
               if line.startswith("apiserver_longrunning_gauge{") and 'resource="leases"' in line
               and 'scope="namespace"' in line and 'verb="WATCH"' in line)


@pytest.mark.parametrize("mode", ["leader", "shards"])
async def test_replicas_run_with_the_derived_role_and_nothing_more(
        mode: str, api: client.ApiClient, control_plane: LocalControlPlane, kubeconfig: Path, namespace: str,
        tmp_path: Path) -> None:
    rules = _rules(mode, namespace)
    assert all(rule.get("resourceNames") for rule in rules if rule["verbs"] != ["create"])
    await client.CoordinationV1Api(api).create_namespaced_lease(namespace, {
        "metadata": {"name": "other"}, "spec": {"holderIdentity": "kube-scheduler-ish"}})
    login = await _as_service_account(api, control_plane, namespace, rules)
    replicas = [Replica(HaSettings(mode=mode, lease="grp", namespace=namespace, identity=name,
                                   shards=2 if mode == "shards" else 1,
                                   lease_duration=4, renew_deadline=3, retry_period=1), login=login)
                for name in ("r1", "r2")]
    kube = await credentials.connect(login, NetworkingSettings())
    watches_before = await _lease_watches(kubeconfig)
    try:
        for replica in replicas:
            await replica.start()

        def settled() -> bool:
            held = [sorted(r.coordinator.granted()) for r in replicas if r.coordinator is not None]
            return sorted(held) == ([[], [0]] if mode == "leader" else [[0], [1]])

        await eventually(lambda: settled(), timeout=40)
        names = ["grp"] if mode == "leader" else ["grp-0", "grp-1", "grp-labeller", "grp-members"]
        for replica in replicas:  # one watch per Lease, by name, each listed and healthy under the Role
            assert [w.name for w in replica.watchers] == names
            assert all(w.listed.is_set() and w.last_error is None for w in replica.watchers)
        if mode == "shards":
            found = {lease.metadata.name for lease in
                     (await client.CoordinationV1Api(api).list_namespaced_lease(namespace)).items}
            assert found == {"grp-0", "grp-1", "grp-labeller", "grp-members", "other"}  # none named after an identity
        # The API server's count: one watch stream per Lease and replica (leader 1, shards S + 2), no more.
        await eventually(lambda: _equals(_lease_watches(kubeconfig), watches_before + 2 * len(names)), timeout=20)

        # What the cluster's authorizer says of this ServiceAccount (not opd's view of it).
        limited = _token_kubeconfig(kubeconfig, login, tmp_path / "replica.kubeconfig")
        for verb in ("get", "list", "watch", "update"):
            assert await _can_i(limited, namespace, verb, f"leases/{names[0]}")  # the test can say yes
        for verb, what in (("list", "leases"), ("watch", "leases"), ("get", "leases/other"),
                           ("list", "leases/other"), ("watch", "leases/other"), ("update", "leases/other"),
                           ("patch", "leases/other"), ("delete", "leases/other"), ("delete", f"leases/{names[0]}")):
            assert not await _can_i(limited, namespace, verb, what), f"can {verb} {what}"
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        assert await _status(kube, "GET", f"{leases}/other") == 403
        assert await _status(kube, "PUT", f"{leases}/other") == 403
        assert await _status(kube, "DELETE", f"{leases}/other") == 403
        assert await _status(kube, "GET", leases) == 403  # no listing without a name, in either mode
        assert await _status(kube, "GET", leases, fieldSelector="metadata.name=other") == 403
        assert await _status(kube, "GET", leases, fieldSelector=f"metadata.name={names[0]}") == 200

        # The holder of key 0 stops and releases: the other, woken by its watches, takes every key over.
        holder, other = sorted(replicas, key=lambda r: r.coordinator is None or 0 not in r.coordinator.granted())
        await holder.stop()
        taken = [0] if mode == "leader" else [0, 1]
        await eventually(lambda: other.coordinator is not None
                                                and sorted(other.coordinator.granted()) == taken, timeout=40)
        assert all(w.stats["events"] > 0 and w.last_error is None for w in other.watchers)
    finally:
        for replica in replicas:
            await replica.stop()
        await kube.close()
