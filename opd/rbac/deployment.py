"""opd in a cluster: the config file as a ConfigMap, and a Deployment that runs ``opd start`` with it.

The pod is locked down as far as opd allows: a non-root user (the Containerfile's, uid 10001), a
read-only root filesystem (a small emptyDir for /tmp), no privilege escalation, no capabilities,
the runtime's default seccomp profile. The kubelet probes ``/healthz`` (liveness) and ``/readyz``
(readiness) of the health server, which also serves ``/metrics``.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from typing import Any

from opd.errors import OpdError
from opd.rbac.derive import lease_names
from opd.rbac.objects import labels
from opd.rbac.podconfig import SECRETS_FILE, port_of
from opd.rbac.yamltext import Document
from opd.service.config import SECRETS_ENV_VAR, DaemonConfig

CONFIG_DIR = "/etc/opd"
CONFIG_FILE = "opd.toml"
USER_ID = 10001  # the Containerfile's user: runAsNonRoot can check a number, not a name
MAX_DEFAULT_REPLICAS = 3
# What opd's HA takes as its identity when [ha] sets none: the pod's name (unique among the live pods).
IDENTITY_ENV_VAR = "OPD_HA_IDENTITY"


def replicas(config: DaemonConfig) -> int:
    """1 without ``[ha]``; a leader and one standby; for shards, one replica per shard up to 3."""
    if config.ha.mode == "leader":
        return 2
    if config.ha.mode == "shards":
        return min(config.ha.shards, MAX_DEFAULT_REPLICAS)
    return 1


def check_identity(config: DaemonConfig) -> None:
    """A fixed ``[ha] identity`` with more than one replica: every pod would hold the Lease as the same
    holder (split brain). Refused, in one line."""
    count = replicas(config)
    if config.ha.identity is not None and count > 1:
        where = str(config.path) if config.path else "the config"
        raise OpdError(f"{where}: [ha].identity = {config.ha.identity!r} with {count} replicas: every pod would "
                       f"hold the Lease as the same holder; remove it (each pod is named by its pod's name, "
                       f"${IDENTITY_ENV_VAR})")


def secret(name: str, namespace: str, text: str, moved: tuple[str, ...]) -> Document:
    comment = (f"The config's secrets ({', '.join(moved)}), out of the ConfigMap: mounted beside it as "
               f"{CONFIG_DIR}/{SECRETS_FILE}, which opd start overlays on {CONFIG_FILE} (${SECRETS_ENV_VAR}). "
               "After changing it, restart the pods (kubectl rollout restart deployment): its digest is not on "
               "the pod template, where anyone who can read Deployments would see it.")
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
            "stringData": {SECRETS_FILE: text}}
    return Document(body, _lines(comment))


def config_map(name: str, namespace: str, text: str, source: str, port: int, *, moved: tuple[str, ...] = (),
               lease: str = "", rewritten: bool = False) -> Document:
    comment = (f"The config file ({source}) as the pod runs it. Changed for the pod: [opd].listen = "
               f"\"0.0.0.0:{port}\" (the kubelet's probes and Prometheus reach the health server from outside the "
               "container; 127.0.0.1 would refuse them), and [kubernetes] in_cluster = true, without kubeconfig "
               "or context (the pod's ServiceAccount).")
    if lease:
        comment += f" {lease}"
    if moved:
        comment += f" Moved to the Secret {namespace}/{name}: {', '.join(moved)}."
    if rewritten:
        comment += (" Written anew from its values, without its comments: the secrets could not be cut out of "
                    "the file line by line.")
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
            "data": {CONFIG_FILE: text}}
    return Document(body, _lines(comment))


def deployment(config: DaemonConfig, name: str, namespace: str, image: str, text: str, *,
               secrets: bool = False) -> Document:
    """``config`` as the pod reads it (``text``, the ConfigMap's file; ``secrets``, whether a Secret
    goes beside it)."""
    check_identity(config)
    port = port_of(config)
    count = replicas(config)
    leases = lease_names(config.ha)
    if config.ha.mode == "off":
        how = ("1 replica, replaced with Recreate: [ha] mode is \"off\", and two pods at once would both run "
               "every handler.")
        strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        how = (f"{count} replicas: [ha] mode = \"{config.ha.mode}\" coordinates them through the Lease(s) "
               f"{', '.join(leases[:3])}{', ...' if len(leases) > 3 else ''} in {config.ha.lease_namespace}, each "
               f"pod under its own name (${IDENTITY_ENV_VAR}, from the downward API); change replicas as you like.")
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    digest = hashlib.sha256(text.encode()).hexdigest()
    grace = math.ceil(config.opd.shutdown_timeout) + 5  # opd stops within its bound; the kubelet waits longer
    container = {
        "name": "opd",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["opd", "start"],
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                # Two pods never share an identity: each is its pod's name (the downward API).
                {"name": IDENTITY_ENV_VAR, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                *([{"name": SECRETS_ENV_VAR, "value": f"{CONFIG_DIR}/{SECRETS_FILE}"}] if secrets else [])],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Until the first /healthz answers, neither liveness nor readiness is asked.
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2,
                         "failureThreshold": 30, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3, "timeoutSeconds": 5},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "failureThreshold": 3, "timeoutSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "replicas": count,
            "strategy": strategy,
            "selector": {"matchLabels": labels(name)},
            "template": {
                "metadata": {
                    "labels": labels(name),
                    # A new config is a new pod template: the pods are replaced with the config.
                    "annotations": {"opd.dev/config-sha256": digest, "prometheus.io/scrape": "true",
                                    "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                                        "fsGroup": USER_ID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [config_volume(name, secrets), {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    comment = (f"opd start with the ConfigMap's config, as {namespace}/{name}. {how} /healthz (liveness) and "
               f"/readyz (readiness) and /metrics on port {port}. Non-root (uid {USER_ID}), read-only root "
               "filesystem, no privilege escalation, no capabilities, seccomp RuntimeDefault.")
    return Document(body, _lines(comment))


def config_volume(name: str, secrets: bool) -> dict[str, Any]:
    """The ConfigMap at /etc/opd; with secrets, the Secret's file beside it (one projected volume),
    readable by the pod's group only (fsGroup)."""
    if not secrets:
        return {"name": "config", "configMap": {"name": name}}
    return {"name": "config", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": name, "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}]}},
        {"secret": {"name": name, "items": [{"key": SECRETS_FILE, "path": SECRETS_FILE}]}}]}}


def _lines(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, 110, break_on_hyphens=False))
