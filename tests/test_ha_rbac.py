"""The Role ``opd rbac`` derives for ``[ha]`` is enough for replicas and names every Lease (issue
#18): replicas running as a ServiceAccount with only that Role lead (leader mode: the watch names
its Lease, which RBAC holds to resourceNames) or share shards (members kept in one named Lease),
and cannot read or write another component's Lease by name."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from operators import eventually

from opd.daemon import config
from opd.ha import HaSettings, Replica
from opd.kube import credentials
from opd.kube.api import APIError, KubeClient
from opd.localcluster import LocalControlPlane
from opd.rbac.derive import derive
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


@pytest.mark.parametrize("mode", ["leader", "shards"])
async def test_replicas_run_with_the_derived_role_and_nothing_more(
        mode: str, api: client.ApiClient, control_plane: LocalControlPlane, namespace: str, tmp_path: Path) -> None:
    rules = _rules(mode, namespace)
    assert all(rule.get("resourceNames") for rule in rules if set(rule["verbs"]) - {"create", "list", "watch"})
    await client.CoordinationV1Api(api).create_namespaced_lease(namespace, {
        "metadata": {"name": "other"}, "spec": {"holderIdentity": "kube-scheduler-ish"}})
    login = await _as_service_account(api, control_plane, namespace, rules)
    replicas = [Replica(HaSettings(mode=mode, lease="grp", namespace=namespace, identity=name,
                                   shards=2 if mode == "shards" else 1,
                                   lease_duration=4, renew_deadline=3, retry_period=1), login=login)
                for name in ("r1", "r2")]
    kube = await credentials.connect(login, NetworkingSettings())
    try:
        for replica in replicas:
            await replica.start()

        def settled() -> bool:
            held = [sorted(r.coordinator.granted()) for r in replicas if r.coordinator is not None]
            return sorted(held) == ([[], [0]] if mode == "leader" else [[0], [1]])

        await eventually(lambda: asyncio.sleep(0, settled()), timeout=40)
        assert all(r.watcher is not None and r.watcher.last_error is None for r in replicas)
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        assert await _status(kube, "GET", f"{leases}/other") == 403
        assert await _status(kube, "PUT", f"{leases}/other") == 403
        assert await _status(kube, "DELETE", f"{leases}/other") == 403
        listing = await _status(kube, "GET", leases)
        assert listing == (403 if mode == "leader" else 200)  # shards: list/watch over the namespace (said)
        if mode == "shards":
            names = {lease.metadata.name for lease in
                     (await client.CoordinationV1Api(api).list_namespaced_lease(namespace)).items}
            assert names == {"grp-0", "grp-1", "grp-members", "other"}  # no Lease named after an identity
    finally:
        for replica in replicas:
            await replica.stop()
        await kube.close()
