"""The operators from the wild, and for each a scenario written from what its README (or its
package description and handlers' docstrings, where it has no README) says it does.

Copies live beside this file with their LICENSE (test-only; never part of opd); packages are
installed pinned by ``tox -e kopf``. Every name a scenario creates carries ``stage.uid``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from wild_harness import HERE, Operator, Stage
from wild_kube import Kube

WEBAPP = ("demo.example.com/v1", "webapps")
CLUSTERSECRET = ("clustersecret.io/v1", "clustersecrets")
DEVSERVER = "devserver.io/v1"
DASK = "kubernetes.dask.org/v1"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def open_crd(group: str, kind: str, plural: str, *, scope: str = "Namespaced",
             status: bool = False, version_name: str = "v1") -> dict[str, Any]:
    """A CRD that keeps any field (for operators that ship none, or ship one for another API version)."""
    version: dict[str, Any] = {
        "name": version_name, "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    if status:
        version["subresources"] = {"status": {}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope, "versions": [version],
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower()}}}


def _data(obj: Any) -> dict[str, str]:
    return dict((obj or {}).get("data") or {})


# --- synator: Secrets and ConfigMaps labelled synator/sync=yes copied to other namespaces -------------

def synator(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    src, dst1, dst2, dst3 = f"src-{u}", f"dst1-{u}", f"dst2-{u}", f"dst3-{u}"
    for ns in (src, dst1, dst2):
        k.namespace(ns)
    meta = {"labels": {"synator/sync": "yes"},
            "annotations": {"synator/include-namespaces": f"{dst1},{dst2},{dst3}"}}
    k.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cfg-{u}", "namespace": src, **meta},
              "data": {"a": "1"}})
    k.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"sec-{u}", "namespace": src, **meta},
              "data": {"k": b64("v1")}})
    for ns in (dst1, dst2):
        stage.expect(f"ConfigMap cfg-{u} copied to {ns}",
                     lambda ns=ns: _data(k.get("v1", "configmaps", ns, f"cfg-{u}")) == {"a": "1"})
        stage.expect(f"Secret sec-{u} copied to {ns}",
                     lambda ns=ns: _data(k.get("v1", "secrets", ns, f"sec-{u}")) == {"k": b64("v1")})
    k.patch("v1", "configmaps", src, f"cfg-{u}", {"data": {"a": "2"}})
    stage.expect(f"the update of cfg-{u} synced to {dst1}",
                 lambda: _data(k.get("v1", "configmaps", dst1, f"cfg-{u}")) == {"a": "2"})
    k.patch("v1", "secrets", src, f"sec-{u}", {"data": {"k": b64("v2")}})
    stage.expect(f"the update of sec-{u} synced to {dst1}",
                 lambda: _data(k.get("v1", "secrets", dst1, f"sec-{u}")) == {"k": b64("v2")})
    k.namespace(dst3)
    stage.expect(f"a namespace created later ({dst3}) gets the copies",
                 lambda: k.get("v1", "configmaps", dst3, f"cfg-{u}") and k.get("v1", "secrets", dst3, f"sec-{u}"))
    copy = k.get("v1", "configmaps", dst2, f"cfg-{u}")
    if "synator/sync" in (copy["metadata"].get("labels") or {}):
        raise AssertionError("the copy kept the synator/sync label")


# --- ClusterSecret: one Secret in every namespace matching matchNamespace, less avoidNamespaces ---------

def clustersecret(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    for n in (1, 2, 3):
        k.namespace(f"cs{n}-{u}")
    name = f"cs-{u}"
    k.create({"apiVersion": CLUSTERSECRET[0], "kind": "ClusterSecret", "metadata": {"name": name},
              "matchNamespace": [f"cs[0-9]-{u}"], "avoidNamespaces": [f"cs3-{u}"],
              "data": {"tls.crt": b64("one")}})
    for n in (1, 2):
        stage.expect(f"Secret {name} in cs{n}-{u}",
                     lambda n=n: _data(k.get("v1", "secrets", f"cs{n}-{u}", name)) == {"tls.crt": b64("one")})
    if k.get("v1", "secrets", f"cs3-{u}", name):
        raise AssertionError(f"a Secret in cs3-{u}, which avoidNamespaces excludes")
    k.patch(*CLUSTERSECRET, None, name, {"data": {"tls.crt": b64("two")}})
    for n in (1, 2):
        stage.expect(f"the new data in cs{n}-{u}",
                     lambda n=n: _data(k.get("v1", "secrets", f"cs{n}-{u}", name)) == {"tls.crt": b64("two")})
    k.delete(*CLUSTERSECRET, None, name)
    for n in (1, 2):
        stage.expect(f"Secret {name} deleted from cs{n}-{u} with the ClusterSecret",
                     lambda n=n: k.get("v1", "secrets", f"cs{n}-{u}", name) is None)


# --- WebApp (k8s-operator-kopf): a Deployment and a Service per WebApp, kept in sync, cleaned up -------

def webapp(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns, name = stage.process.operator.env["WILD_NAMESPACE"], f"app-{u}"
    k.create({"apiVersion": WEBAPP[0], "kind": "WebApp", "metadata": {"name": name, "namespace": ns},
              "spec": {"image": "nginx:1.24", "replicas": 1, "port": 80}})
    deployment = stage.expect(f"Deployment {name}", lambda: k.get("apps/v1", "deployments", ns, name))
    owners = [o["kind"] for o in deployment["metadata"].get("ownerReferences", [])]  # type: ignore[index]
    if owners != ["WebApp"]:
        raise AssertionError(f"the Deployment's owners are {owners}, not the WebApp")
    stage.expect(f"Service {name}", lambda: k.get("v1", "services", ns, name))
    stage.expect("status.message Provisioned",
                 lambda: k.get(*WEBAPP, ns, name)["status"]["message"] == "Provisioned")
    k.patch(*WEBAPP, ns, name, {"spec": {"image": "nginx:1.25", "replicas": 2}})
    stage.expect("the Deployment follows the new replicas and image",
                 lambda: (d := k.get("apps/v1", "deployments", ns, name))["spec"]["replicas"] == 2
                 and d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25")
    stage.expect("status.message Updated", lambda: k.get(*WEBAPP, ns, name)["status"]["message"] == "Updated")
    k.delete(*WEBAPP, ns, name)
    stage.expect("Deployment and Service deleted with the WebApp",
                 lambda: k.get("apps/v1", "deployments", ns, name) is None
                 and k.get("v1", "services", ns, name) is None)
    stage.expect("the WebApp itself gone (its finalizer released)", lambda: k.get(*WEBAPP, ns, name) is None)


# --- devserver-operator: a DevServerUser gets a namespace with its ServiceAccount, Role and RoleBinding -
# (A DevServer itself reads resources/startup.sh, which the 0.0.1 wheel does not ship: it fails under any
# framework with FileNotFoundError, so the scenario leaves it out.)

def devserver_crds(k: Kube) -> None:
    k.crd(open_crd("devserver.io", "DevServer", "devservers"))
    k.crd(open_crd("devserver.io", "DevServerFlavor", "devserverflavors", scope="Cluster"))
    k.crd(open_crd("devserver.io", "DevServerUser", "devserverusers", scope="Cluster"))


def devserver(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    user = f"u{u}"
    k.create({"apiVersion": DEVSERVER, "kind": "DevServerUser", "metadata": {"name": user},
              "spec": {"username": user}})
    ns = f"dev-{user}"
    stage.expect(f"the user's namespace {ns}",
                 lambda: k.get("v1", "namespaces", None, ns)["metadata"]["labels"]["devserver.io/user"] == user)
    stage.expect(f"ServiceAccount {user}-sa in it", lambda: k.get("v1", "serviceaccounts", ns, f"{user}-sa"))
    stage.expect("a Role and a RoleBinding in it",
                 lambda: k.list("rbac.authorization.k8s.io/v1", "roles", ns)
                 and k.list("rbac.authorization.k8s.io/v1", "rolebindings", ns))
    stage.expect("the DevServerUser Ready, naming its namespace",
                 lambda: k.get(DEVSERVER, "devserverusers", None, user)["status"]["namespace"] == ns)
    k.delete(DEVSERVER, "devserverusers", None, user)
    stage.expect("its ServiceAccount removed when the DevServerUser is deleted",
                 lambda: k.get("v1", "serviceaccounts", ns, f"{user}-sa") is None)


# --- dask-kubernetes: a DaskCluster becomes a scheduler, its Service and a worker group of N workers ---

def _dask_crds() -> list[dict[str, Any]]:
    spec = importlib.util.find_spec("dask_kubernetes")
    assert spec and spec.origin
    folder = Path(spec.origin).parent / "operator/deployment/helm/dask-kubernetes-operator/crds"
    return [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]


def _dask_cluster(name: str, ns: str) -> dict[str, Any]:
    container = {"image": "ghcr.io/dask/dask:latest", "imagePullPolicy": "IfNotPresent"}
    return {"apiVersion": DASK, "kind": "DaskCluster", "metadata": {"name": name, "namespace": ns},
            "spec": {"worker": {"replicas": 2, "spec": {"containers": [
                         {"name": "worker", **container, "args": ["dask-worker", "--name", "$(DASK_WORKER_NAME)"]}]}},
                     "scheduler": {"spec": {"containers": [
                         {"name": "scheduler", **container, "args": ["dask-scheduler"],
                          "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"}]}]},
                         "service": {"type": "ClusterIP", "selector": {
                             "dask.org/cluster-name": name, "dask.org/component": "scheduler"},
                             "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786,
                                        "targetPort": "tcp-comm"}]}}}}


def dask_crds(k: Kube) -> None:
    for crd in _dask_crds():
        k.crd(crd)


def dask(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns, name = stage.process.operator.env["WILD_NAMESPACE"], f"dc-{u}"
    k.create(_dask_cluster(name, ns))
    phase = lambda: k.get(DASK, "daskclusters", ns, name)["status"]["phase"]  # noqa: E731
    stage.expect("status.phase written by its create handler", lambda: phase() in ("Created", "Pending", "Running"))
    stage.expect("the phase moved on from Created (its on.field status.phase handler ran)",
                 lambda: phase() in ("Pending", "Running"))
    stage.expect("the scheduler Deployment", lambda: k.get("apps/v1", "deployments", ns, f"{name}-scheduler"))
    stage.expect("the scheduler Service", lambda: k.get("v1", "services", ns, f"{name}-scheduler"))
    stage.expect("the default DaskWorkerGroup",
                 lambda: k.get(DASK, "daskworkergroups", ns, f"{name}-default"))
    stage.expect("2 worker Deployments for the group",
                 lambda: len(k.list("apps/v1", "deployments", ns, f"dask.org/workergroup-name={name}-default")) == 2)
    k.patch(DASK, "daskworkergroups", ns, f"{name}-default", {"spec": {"worker": {"replicas": 3}}})
    stage.expect("scaled to 3 worker Deployments",
                 lambda: len(k.list("apps/v1", "deployments", ns, f"dask.org/workergroup-name={name}-default")) == 3)


# --- object-cloner: a ClusterObject clones its namesake source object to the matching namespaces ----------

CLUSTEROBJECT = ("object-cloner.ideamix.es/v1", "clusterobjects")


def objectcloner(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    src, name = f"oc-src-{u}", f"oc-{u}"
    for ns in (src, f"oc1-{u}", f"oc2-{u}", f"other-{u}"):
        k.namespace(ns)
    k.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": src},
              "data": {"token": b64("one")}})
    k.create({"apiVersion": CLUSTEROBJECT[0], "kind": "ClusterObject", "metadata": {"name": name, "namespace": src},
              "spec": {"sourceObject": {"group": "", "version": "v1", "kind": "Secret"},
                       "namespacesToInclude": [f"oc[0-9]-{u}"], "cleanupEvents": "OnClusterObjectDelete"}})
    for n in (1, 2):
        stage.expect(f"Secret {name} cloned to oc{n}-{u}",
                     lambda n=n: _data(k.get("v1", "secrets", f"oc{n}-{u}", name)) == {"token": b64("one")})
    if k.get("v1", "secrets", f"other-{u}", name):
        raise AssertionError(f"a clone in other-{u}, which namespacesToInclude does not match")
    stage.expect("status.syncedNamespaces names both",
                 lambda: {s["name"] for s in (k.get(*CLUSTEROBJECT, src, name).get("status") or {}).get(
                     "syncedNamespaces") or ()} == {f"oc1-{u}", f"oc2-{u}"})
    k.patch("v1", "secrets", src, name, {"data": {"token": b64("two")}})
    stage.expect(f"the source's change synced to oc1-{u}",
                 lambda: _data(k.get("v1", "secrets", f"oc1-{u}", name)) == {"token": b64("two")})
    k.namespace(f"oc3-{u}")
    stage.expect(f"a namespace created later (oc3-{u}) gets the clone",
                 lambda: _data(k.get("v1", "secrets", f"oc3-{u}", name)) == {"token": b64("two")})
    k.delete(*CLUSTEROBJECT, src, name)
    stage.expect("the clones deleted with the ClusterObject (cleanupEvents: OnClusterObjectDelete)",
                 lambda: all(k.get("v1", "secrets", f"oc{n}-{u}", name) is None for n in (1, 2)))


# --- qdrant-operator: a QdrantAccessKey becomes a Secret with a JWT signed by its cluster's API key --------
# (A QdrantCluster itself is a helm release, which needs helm and a cluster that runs pods: left out; the
# access key needs only the QdrantCluster object and the Secret with its API key.)

QDRANT = "qdrant.io/v1alpha1"


def qdrant_crds(k: Kube) -> None:
    k.crd(open_crd("qdrant.io", "QdrantCluster", "qdrantclusters", status=True, version_name="v1alpha1"))
    k.crd(open_crd("qdrant.io", "QdrantAccessKey", "qdrantaccesskeys", status=True, version_name="v1alpha1"))


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def qdrant(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns = stage.process.operator.env["WILD_NAMESPACE"]
    cluster, key, secret = f"qc-{u}", f"ak-{u}", f"tok-{u}"
    k.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"qk-{u}", "namespace": ns},
              "data": {"api-key": b64("the-api-key")}})
    k.create({"apiVersion": QDRANT, "kind": "QdrantCluster", "metadata": {"name": cluster, "namespace": ns},
              "spec": {"version": "v1.13.0", "apiKey": {"secretRef": {"name": f"qk-{u}", "key": "api-key"},
                                                        "jwtRbac": True}}})
    k.create({"apiVersion": QDRANT, "kind": "QdrantAccessKey", "metadata": {"name": key, "namespace": ns},
              "spec": {"clusterRef": {"name": cluster}, "access": "r", "secretName": secret}})
    issued = stage.expect(f"Secret {secret} with a token and the cluster's URL",
                          lambda: _data(k.get("v1", "secrets", ns, secret)).get("token"))
    got = k.get("v1", "secrets", ns, secret)
    url = base64.b64decode(got["data"]["url"]).decode()
    if url != f"http://qdrant-{cluster}.{ns}.svc.cluster.local:6333":
        raise AssertionError(f"the Secret's url is {url!r}")
    if _jwt_claims(base64.b64decode(str(issued)).decode()).get("access") != "r":
        raise AssertionError("the token does not grant access 'r'")
    if [o["kind"] for o in got["metadata"].get("ownerReferences", [])] != ["QdrantAccessKey"]:
        raise AssertionError("the Secret is not owned by the QdrantAccessKey")
    stage.expect("status.phase Ready", lambda: (k.get(QDRANT, "qdrantaccesskeys", ns, key).get("status") or {}).get(
        "phase") == "Ready")
    k.patch(QDRANT, "qdrantaccesskeys", ns, key, {"spec": {"access": "rw"}})
    stage.expect("a spec change re-issues the token (access 'rw')",
                 lambda: _jwt_claims(base64.b64decode(_data(k.get("v1", "secrets", ns, secret))["token"]).decode()
                                     ).get("access") == "rw")


# --- citadel namespace-infra: a NamespaceInfrastructure becomes Cilium policies, a quota and limits -------

CITADEL = ("citadel.dev/v1alpha1", "namespaceinfrastructures")


def citadel_crds(k: Kube) -> None:
    spec = importlib.util.find_spec("citadel_operator")
    assert spec and spec.origin
    k.crd(yaml.safe_load((Path(spec.origin).parent / "crds" / "namespaceinfrastructure.yaml").read_text()))
    k.crd(open_crd("cilium.io", "CiliumNetworkPolicy", "ciliumnetworkpolicies", version_name="v2"))


def citadel(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns, target, name = stage.process.operator.env["WILD_NAMESPACE"], f"t-{u}", f"nsi-{u}"
    k.namespace(target)
    k.create({"apiVersion": CITADEL[0], "kind": "NamespaceInfrastructure", "metadata": {"name": name, "namespace": ns},
              "spec": {"targetNamespace": target, "resourceQuota": {"cpu": "2", "pods": "10"},
                       "limitRange": {"defaultCpu": "250m"}}})
    stage.expect(f"ResourceQuota {target}-quota (limits.cpu 2, pods 10)",
                 lambda: (k.get("v1", "resourcequotas", target, f"{target}-quota") or {}).get("spec", {}).get(
                     "hard") == {"limits.cpu": "2", "pods": "10"})
    stage.expect(f"LimitRange {target}-limits", lambda: k.get("v1", "limitranges", target, f"{target}-limits"))
    for policy in ("default-deny", "tenant-allow"):
        stage.expect(f"CiliumNetworkPolicy {target}-{policy}",
                     lambda policy=policy: k.get("cilium.io/v2", "ciliumnetworkpolicies", target, f"{target}-{policy}"))
    stage.expect("status.phase Active",
                 lambda: (k.get(*CITADEL, ns, name).get("status") or {}).get("phase") == "Active")
    k.patch(*CITADEL, ns, name, {"spec": {"resourceQuota": {"pods": "20"}}})
    stage.expect("the quota follows a spec change (pods 20)",
                 lambda: k.get("v1", "resourcequotas", target, f"{target}-quota")["spec"]["hard"].get("pods") == "20")
    k.delete(*CITADEL, ns, name)
    stage.expect("the quota and the limits deleted with it",
                 lambda: k.get("v1", "resourcequotas", target, f"{target}-quota") is None
                 and k.get("v1", "limitranges", target, f"{target}-limits") is None)


# --- config-server-operator: KeyValuePairs combined into one ConfigMap, served by a Deployment and Service ---
# (A KeyValuePair's deletion is not asked: its handler pops the key and sends the rest as a strategic merge
# patch, which keeps the key on the server; under Kopf too.)

CONFIGSERVER = "datalab.tuwien.ac.at/v1"


def configserver_crds(k: Kube) -> None:
    for crd in yaml.safe_load_all((HERE / "configserver" / "crd.yaml").read_text()):
        k.crd(crd)


def configserver(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns, name = stage.process.operator.env["WILD_NAMESPACE"], f"cfg-{u}"

    def pair(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": CONFIGSERVER, "kind": "KeyValuePair",
                "metadata": {"name": f"{key}-{u}", "namespace": ns},
                "spec": {"config": name, "key": key, "value": value}}

    values = lambda: _data(k.get("v1", "configmaps", ns, f"{name}-values"))  # noqa: E731
    k.create(pair("first", {"level": 1}))
    k.create({"apiVersion": CONFIGSERVER, "kind": "ConfigServer", "metadata": {"name": name, "namespace": ns},
              "spec": {"image": "config-server:latest", "imagePullPolicy": "IfNotPresent", "containerPort": 8080,
                       "configMountPath": "/config"}})
    stage.expect(f"ConfigMap {name}-values holding the pair made before the server",
                 lambda: {key: json.loads(v) for key, v in values().items()} == {"first": {"level": 1}})
    stage.expect(f"Deployment {name} mounting it, and Service {name}",
                 lambda: (d := k.get("apps/v1", "deployments", ns, name))
                 and d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == f"{name}-values"
                 and k.get("v1", "services", ns, name))
    k.create(pair("second", {"on": True}))
    stage.expect("a pair made later joins the ConfigMap",
                 lambda: json.loads(values().get("second", "null")) == {"on": True})
    k.patch(CONFIGSERVER, "keyvaluepairs", ns, f"first-{u}", {"spec": {"value": {"level": 2}}})
    stage.expect("a pair's new value follows", lambda: json.loads(values().get("first", "null")) == {"level": 2})
    k.delete(CONFIGSERVER, "configservers", ns, name)
    stage.expect("the Deployment, Service and ConfigMap deleted with the ConfigServer",
                 lambda: k.get("apps/v1", "deployments", ns, name) is None and k.get("v1", "services", ns, name)
                 is None and k.get("v1", "configmaps", ns, f"{name}-values") is None)
    stage.expect("the ConfigServer itself gone (its finalizer released)",
                 lambda: k.get(CONFIGSERVER, "configservers", ns, name) is None)


# --- chaostoolkit kubernetes-crd: a ChaosToolkitExperiment becomes a namespace, RBAC and a chaos Pod ----------
# (The controller copied is the create-only one at its commit: the README's later features, deletion with the
# experiment, labels forwarded and schedules, are not in it, so the scenario asks none of them. No kubelet
# here: the Pod is judged as the object the controller creates, not run.)

CHAOS = ("chaostoolkit.org/v1", "chaosexperiments")


def chaostoolkit_setup(k: Kube) -> None:
    k.crd(yaml.safe_load((HERE / "chaostoolkit" / "crd.yaml").read_text()))
    templates = yaml.safe_load((HERE / "chaostoolkit" / "configmap.yaml").read_text())
    templates["metadata"]["namespace"] = "wild"  # where the experiments are submitted (the operator's -n)
    if k.get("v1", "configmaps", "wild", templates["metadata"]["name"]) is None:
        k.create(templates)


def _chaos_pods(k: Kube, ns: str) -> list[dict[str, Any]]:
    return k.list("v1", "pods", ns, "app=chaostoolkit")


def chaostoolkit(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    crd_ns, run_ns = stage.process.operator.env["WILD_NAMESPACE"], f"ctk-{u}"
    k.create({"apiVersion": CHAOS[0], "kind": "ChaosToolkitExperiment",
              "metadata": {"name": f"exp1-{u}", "namespace": crd_ns},
              "spec": {"namespace": run_ns, "pod": {
                  "experiment": {"configMapName": f"experiment-{u}"},
                  "settings": {"enabled": True, "secretName": f"settings-{u}"},
                  "chaosArgs": ["--verbose", "run", "--dry", "$(EXPERIMENT_PATH)"]}}})
    stage.expect(f"the namespace {run_ns} (spec.namespace) created", lambda: k.get("v1", "namespaces", None, run_ns))
    pods = stage.expect("a chaostoolkit Pod in it", lambda: _chaos_pods(k, run_ns))
    pod = pods[0]  # type: ignore[index]
    container = pod["spec"]["containers"][0]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    if volumes["chaostoolkit-experiment"]["configMap"]["name"] != f"experiment-{u}":
        raise AssertionError(f"the experiment volume is {volumes['chaostoolkit-experiment']}")
    if volumes["chaostoolkit-settings"]["secret"]["secretName"] != f"settings-{u}":
        raise AssertionError(f"the settings volume is {volumes['chaostoolkit-settings']}")
    if container["args"][-1] != "/usr/local/bin/chaos --verbose run --dry $(EXPERIMENT_PATH) && exit $?":
        raise AssertionError(f"the chaos arguments are {container['args']}")
    account = pod["spec"]["serviceAccountName"]
    stage.expect(f"its ServiceAccount {account}", lambda: k.get("v1", "serviceaccounts", run_ns, account))
    rbac = "rbac.authorization.k8s.io/v1"
    bindings = stage.expect("a RoleBinding of that ServiceAccount", lambda: [
        b for b in k.list(rbac, "rolebindings", run_ns) if b["subjects"][0]["name"] == account])
    role = bindings[0]["roleRef"]["name"]  # type: ignore[index]
    stage.expect(f"the Role {role} it binds", lambda: k.get(rbac, "roles", run_ns, role))
    stage.expect("the default chaostoolkit-env ConfigMap",
                 lambda: k.get("v1", "configmaps", run_ns, "chaostoolkit-env"))
    k.create({"apiVersion": CHAOS[0], "kind": "ChaosToolkitExperiment",
              "metadata": {"name": f"exp2-{u}", "namespace": crd_ns},
              "spec": {"namespace": run_ns, "pod": {"experiment": {"asFile": False}}}})
    stage.expect("a second experiment in the existing namespace: a second Pod",
                 lambda: len(_chaos_pods(k, run_ns)) == 2)
    url_pod = next(p for p in _chaos_pods(k, run_ns) if p["spec"]["serviceAccountName"] != account)
    env = [e["name"] for e in url_pod["spec"]["containers"][0].get("env", [])]
    names = [v["name"] for v in url_pod["spec"].get("volumes", [])]
    if "EXPERIMENT_PATH" in env or "chaostoolkit-experiment" in names:
        raise AssertionError(f"asFile: false kept the experiment file (env {env}, volumes {names})")


# --- Typesense-Kubernetes-Operator: a TypesenseOperator becomes a namespace with a Typesense StatefulSet ------
# (Objects only: no kubelet runs its pods. Without ``config`` the API key stays the template's default, as the
# README says; the copied code reads ``config`` as the name of a Secret, which the scenario leaves out.)

TYPESENSE = ("typesenseproject.org/v1", "typesenseoperators")


def _typesense_nodes(ns: str, replicas: int) -> str:
    return ",".join(f"typesense-{n}.ts.{ns}.svc.cluster.local:8107:8108" for n in range(replicas))


def typesense(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns, target, name = stage.process.operator.env["WILD_NAMESPACE"], f"ts-{u}", f"tyop-{u}"
    k.create({"apiVersion": TYPESENSE[0], "kind": "TypesenseOperator", "metadata": {"name": name, "namespace": ns},
              "spec": {"replicas": 1, "namespace": target, "image": "typesense/typesense:0.24.1"}})
    stage.expect(f"the namespace {target} (spec.namespace)", lambda: k.get("v1", "namespaces", None, target))
    nodes = lambda: _data(k.get("v1", "configmaps", target, "nodeslist")).get("nodes")  # noqa: E731
    stage.expect("ConfigMap nodeslist naming the one replica's peer address",
                 lambda: nodes() == _typesense_nodes(target, 1))
    stage.expect("Service typesense-svc", lambda: k.get("v1", "services", target, "typesense-svc"))
    stage.expect("the headless Service ts",
                 lambda: k.get("v1", "services", target, "ts")["spec"]["clusterIP"] == "None")
    stage.expect("StatefulSet typesense: 1 replica of the image asked",
                 lambda: (s := k.get("apps/v1", "statefulsets", target, "typesense"))["spec"]["replicas"] == 1
                 and s["spec"]["template"]["spec"]["containers"][0]["image"] == "typesense/typesense:0.24.1")
    k.patch(*TYPESENSE, ns, name, {"spec": {"replicas": 3}})
    stage.expect("3 replicas: the StatefulSet scaled",
                 lambda: k.get("apps/v1", "statefulsets", target, "typesense")["spec"]["replicas"] == 3)
    stage.expect("3 replicas: nodeslist names the 3 peers",
                 lambda: nodes() == _typesense_nodes(target, 3))
    k.delete(*TYPESENSE, ns, name)
    stage.expect("the StatefulSet, both Services and nodeslist deleted with it",
                 lambda: all(k.get(av, plural, target, obj) is None for av, plural, obj in (
                     ("apps/v1", "statefulsets", "typesense"), ("v1", "services", "typesense-svc"),
                     ("v1", "services", "ts"), ("v1", "configmaps", "nodeslist"))))
    stage.expect("the TypesenseOperator itself gone (its finalizer released)",
                 lambda: k.get(*TYPESENSE, ns, name) is None)


# --- tunnel-operator: a Service annotated open-tunnel becomes an SSH-tunnel Deployment in the tunnel namespace ----
# (Objects only: the Deployment's ssh client never runs here, so no remote host is needed.)

TUNNEL_ANNOTATION = "tunnel-operator.wurbanski.me"


def tunnel_setup(k: Kube) -> None:
    if k.get("v1", "namespaces", None, "tunnel") is None:  # its manifests/namespace.yaml
        k.namespace("tunnel")


def _tunnel_env(k: Kube, service: str, ns: str) -> dict[str, str]:
    deployment = k.get("apps/v1", "deployments", "tunnel", f"tunnel-{service}-{ns}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", [])}


def tunnel(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns = f"tun-{u}"
    k.namespace(ns)

    def service(name: str, port: int, annotations: dict[str, str]) -> None:
        k.create({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": name, "namespace": ns, "annotations": annotations},
                  "spec": {"ports": [{"port": port}], "selector": {"app": name}}})

    opened = {f"{TUNNEL_ANNOTATION}/open-tunnel": "yes"}
    service(f"plain-{u}", 80, {})
    service(f"web-{u}", 8080, opened)
    service(f"db-{u}", 5432, {**opened, f"{TUNNEL_ANNOTATION}/forward-port": "5433",
                              f"{TUNNEL_ANNOTATION}/remote-port": "2222"})
    stage.expect(f"Deployment tunnel-web-{u}-{ns} in tunnel, 1 replica, tunnelling port 8080 to 8080",
                 lambda: k.get("apps/v1", "deployments", "tunnel", f"tunnel-web-{u}-{ns}")["spec"]["replicas"] == 1
                 and _tunnel_env(k, f"web-{u}", ns) == {"svc": f"web-{u}.{ns}", "remote_port": "8080",
                                                         "forward_port": "8080"})
    stage.expect("the forward-port and remote-port annotations honoured (5433 to remote 2222)",
                 lambda: _tunnel_env(k, f"db-{u}", ns) == {"svc": f"db-{u}.{ns}", "remote_port": "2222",
                                                           "forward_port": "5433"})
    if k.get("apps/v1", "deployments", "tunnel", f"tunnel-plain-{u}-{ns}"):
        raise AssertionError("a tunnel for a Service without the open-tunnel annotation")
    k.patch("v1", "services", ns, f"db-{u}",
            {"metadata": {"annotations": {f"{TUNNEL_ANNOTATION}/remote-port": "2223"}}})
    stage.expect("a changed remote-port annotation follows to the tunnel (2223)",
                 lambda: _tunnel_env(k, f"db-{u}", ns).get("remote_port") == "2223")


# --- ODA Canvas component operator: a Component becomes ExposedAPI and DependentAPI children ------------------
# (Its CRDs are ours, open schemas: the canvas chart's are large and versioned; the operator reads only what the
# scenario sets. No API gateway operator runs, so no API becomes ready: the summary stays In-Progress-CompCon.)

ODA = "oda.tmforum.org"
COMPONENT = (f"{ODA}/v1beta4", "components")
EXPOSEDAPI = (f"{ODA}/v1beta4", "exposedapis")
DEPENDENTAPI = (f"{ODA}/v1beta3", "dependentapis")


def odacomponent_crds(k: Kube) -> None:
    for kind, plural, version in (("Component", "components", "v1beta4"), ("ExposedAPI", "exposedapis", "v1beta4"),
                                  ("DependentAPI", "dependentapis", "v1beta3"),
                                  ("SecretsManagement", "secretsmanagements", "v1beta3"),
                                  ("PublishedNotification", "publishednotifications", "v1beta4"),
                                  ("SubscribedNotification", "subscribednotifications", "v1beta4")):
        k.crd(open_crd(ODA, kind, plural, status=True, version_name=version))


def _oda_api(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "apiType": "openapi", "port": port, "path": f"/{name}/v4",
            "specification": [{"url": f"https://example.com/{name}.json"}], "implementation": f"{name}-svc"}


def _owned_by(obj: Any, uid: str) -> bool:
    return any(o.get("uid") == uid and o.get("kind") == "Component" for o in obj["metadata"].get("ownerReferences", []))


def odacomponent(stage: Stage) -> None:
    k, u = stage.kube, stage.uid
    ns, comp = stage.process.operator.env["WILD_NAMESPACE"], f"comp-{u}"
    core = [_oda_api("productcatalogmanagement", 8080), _oda_api("promotionmanagement", 8081)]
    management, security = [_oda_api("metrics", 4000)], [_oda_api("partyrole", 8082)]
    dependent = {"name": "party", "apiType": "openapi", "specification": [{"url": "https://example.com/party.json"}]}
    created = k.create({"apiVersion": COMPONENT[0], "kind": "Component",
                        "metadata": {"name": comp, "namespace": ns, "labels": {f"{ODA}/componentName": comp}},
                        "spec": {"coreFunction": {"exposedAPIs": core, "dependentAPIs": [dependent]},
                                 "managementFunction": {"exposedAPIs": management},
                                 "securityFunction": {"exposedAPIs": security, "canvasSystemRole": "Admin"}}})
    uid = created["metadata"]["uid"]
    for api in core + management + security:
        stage.expect(f"ExposedAPI {comp}-{api['name']} with that API as its spec, owned by the Component",
                     lambda api=api: (o := k.get(*EXPOSEDAPI, ns, f"{comp}-{api['name']}")) is not None
                     and o["spec"] == api and _owned_by(o, uid))
    stage.expect(f"DependentAPI {comp}-party with its spec, owned by the Component",
                 lambda: (o := k.get(*DEPENDENTAPI, ns, f"{comp}-party")) is not None
                 and o["spec"] == dependent and _owned_by(o, uid))

    def status() -> dict[str, Any]:
        return dict(k.get(*COMPONENT, ns, comp).get("status") or {})

    def names(key: str) -> list[str]:
        return sorted(entry.get("name", "") for entry in status().get(key) or [])

    stage.expect("status.coreAPIs, managementAPIs, securityAPIs and coreDependentAPIs name the children",
                 lambda: names("coreAPIs") == [f"{comp}-productcatalogmanagement", f"{comp}-promotionmanagement"]
                 and names("managementAPIs") == [f"{comp}-metrics"] and names("securityAPIs") == [f"{comp}-partyrole"]
                 and names("coreDependentAPIs") == [f"{comp}-party"])
    stage.expect("the status summary: deployment_status In-Progress-CompCon (no API is ready yet)",
                 lambda: (status().get("summary/status") or {}).get("deployment_status") == "In-Progress-CompCon")
    k.create({"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": f"{comp}-pcm", "namespace": ns, "labels": {f"{ODA}/componentName": comp}},
              "spec": {"selector": {"matchLabels": {"app": f"pcm-{u}"}}, "template": {
                  "metadata": {"labels": {"app": f"pcm-{u}"}},
                  "spec": {"containers": [{"name": "pcm", "image": "example/pcm:1"}]}}}})
    stage.expect("a Deployment labelled with the component's name adopted: the Component is its owner",
                 lambda: _owned_by(k.get("apps/v1", "deployments", ns, f"{comp}-pcm"), uid))
    kept = k.get(*EXPOSEDAPI, ns, f"{comp}-productcatalogmanagement")["metadata"]["uid"]
    k.patch(*COMPONENT, ns, comp, {"spec": {"coreFunction": {"exposedAPIs": core[:1]}}})
    stage.expect(f"promotionmanagement removed from coreFunction: ExposedAPI {comp}-promotionmanagement deleted",
                 lambda: k.get(*EXPOSEDAPI, ns, f"{comp}-promotionmanagement") is None)
    stage.expect("status.coreAPIs names the one left",
                 lambda: names("coreAPIs") == [f"{comp}-productcatalogmanagement"])
    if k.get(*EXPOSEDAPI, ns, f"{comp}-productcatalogmanagement")["metadata"]["uid"] != kept:
        raise AssertionError("the ExposedAPI left in the spec was replaced, not kept")


def all_operators(namespace: str) -> list[Operator]:
    """Every operator, in the table's order; ``namespace`` is served by the namespaced ones."""
    env = {"WILD_NAMESPACE": namespace}
    return [
        Operator("synator", "github.com/TheYkk/synator handlers.py @1a9d9d79", "MIT",
                 ["-A", "handlers.py"], synator, folder=HERE / "synator", needs=("kubernetes", "prodict")),
        Operator("clustersecret", "github.com/zakkg3/ClusterSecret src/handlers.py @01530ea9", "MIT",
                 ["-A", "handlers.py"], clustersecret, folder=HERE / "clustersecret", needs=("kubernetes",),
                 setup=lambda k: k.crd(open_crd("clustersecret.io", "ClusterSecret", "clustersecrets",
                                                scope="Cluster"))),
        Operator("webapp", "github.com/Emmerson-Miranda/k8s-operator-kopf my_operator/ @1ce9e1f5", "MIT",
                 ["-n", namespace, "-m", "my_operator.operator"], webapp, folder=HERE / "webapp",
                 needs=("kubernetes",), env=env,
                 setup=lambda k: k.crd(yaml.safe_load((HERE / "webapp" / "crd.yaml").read_text()))),
        Operator("devserver", "PyPI devserver-operator==0.0.1 (devserver.operator)", "Apache-2.0",
                 ["-A", "-m", "devserver.operator"], devserver, needs=("devserver", "kubernetes"),
                 setup=devserver_crds),
        Operator("dask", "PyPI dask-kubernetes==2026.3.0 (dask_kubernetes.operator.controller)", "BSD-3-Clause",
                 ["-n", namespace, "-m", "dask_kubernetes.operator.controller"], dask,
                 needs=("dask_kubernetes", "kr8s"), env=env, setup=dask_crds),
        Operator("objectcloner", "github.com/ideamixes/object-cloner src/objectcloner @ca9fc258 (handlers.py "
                 "@09a353e2)", "MIT", ["-A", "-m", "objectcloner"], objectcloner, folder=HERE / "objectcloner",
                 needs=("pykube", "dictdiffer", "mergedeep"), env={"OBJECT_CLONER_ALLOWED_OBJECT_KINDS": ",v1,secrets"},
                 setup=lambda k: k.crd(open_crd("object-cloner.ideamix.es", "ClusterObject", "clusterobjects",
                                                status=True))),
        Operator("qdrant", "PyPI qdrant-operator==0.3.2 (qdrant_operator.handlers), copied from its wheel", "MIT",
                 ["-n", namespace, "-m", "qdrant_operator.handlers"], qdrant, folder=HERE / "qdrant",
                 needs=("kubernetes_asyncio", "aioboto3", "croniter", "jwt", "httpx"), env=env, setup=qdrant_crds),
        Operator("citadel", "PyPI jaymd96-citadel-operator==0.2.0 (citadel_operator.k3s.namespace_infra_operator)",
                 "MIT", ["-n", namespace, "-m", "citadel_operator.k3s.namespace_infra_operator"], citadel,
                 needs=("citadel_operator", "kubernetes"), env=env, setup=citadel_crds),
        Operator("configserver", "github.com/TU-Wien-dataLAB/config-server-operator operator/operator.py @65e1fb4c",
                 "BSD-3-Clause", ["-n", namespace, "operator/operator.py"], configserver, folder=HERE / "configserver",
                 needs=("kubernetes",), env=env,
                 setup=configserver_crds),
        Operator("chaostoolkit", "github.com/chaostoolkit-incubator/kubernetes-crd controller.py @5c0f8b70",
                 "Apache-2.0", ["-n", namespace, "controller.py"], chaostoolkit, folder=HERE / "chaostoolkit",
                 needs=("kubernetes",), env=env, setup=chaostoolkit_setup),
        Operator("typesense", "github.com/sai3010/Typesense-Kubernetes-Operator handler.py @ff45d7e6 "
                 "(deployment_utils.py @009f7f4c)", "Apache-2.0", ["-A", "handler.py"], typesense,
                 folder=HERE / "typesense", needs=("kubernetes",), env=env,
                 setup=lambda k: k.crd(yaml.safe_load((HERE / "typesense" / "crd.yaml").read_text()))),
        Operator("tunnel", "github.com/wurbanski/tunnel-operator operator/ @b04398d2", "MIT",
                 ["-A", "operator/ssh-tunnel-operator.py"], tunnel, folder=HERE / "tunnel", needs=("kubernetes",),
                 setup=tunnel_setup),
        Operator("odacomponent", "github.com/tmforum-oda/oda-canvas source/operators/component-management/"
                 "componentOperator.py @0261f0f3", "Apache-2.0", ["-n", namespace, "componentOperator.py"],
                 odacomponent, folder=HERE / "odacomponent", needs=("kubernetes",), env=env,
                 setup=odacomponent_crds),
    ]
