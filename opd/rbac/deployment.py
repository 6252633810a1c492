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

from opd.daemon.config import DaemonConfig
from opd.rbac.derive import lease_names
from opd.rbac.objects import labels
from opd.rbac.podconfig import port_of
from opd.rbac.yamltext import Document

CONFIG_DIR = "/etc/opd"
CONFIG_FILE = "opd.toml"
USER_ID = 10001  # the Containerfile's user: runAsNonRoot can check a number, not a name
MAX_DEFAULT_REPLICAS = 3


def replicas(config: DaemonConfig) -> int:
    """1 without ``[ha]``; a leader and one standby; for shards, one replica per shard up to 3."""
    if config.ha.mode == "leader":
        return 2
    if config.ha.mode == "shards":
        return min(config.ha.shards, MAX_DEFAULT_REPLICAS)
    return 1


def config_map(name: str, namespace: str, text: str, source: str, port: int) -> Document:
    comment = (f"The config file ({source}) as the pod runs it. Changed for the pod: [opd].listen = "
               f"\"0.0.0.0:{port}\" (the kubelet's probes and Prometheus reach the health server from outside the "
               "container; 127.0.0.1 would refuse them), and [kubernetes] in_cluster = true, without kubeconfig "
               "or context (the pod's ServiceAccount).")
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
            "data": {CONFIG_FILE: text}}
    return Document(body, _lines(comment))


def deployment(config: DaemonConfig, name: str, namespace: str, image: str, text: str) -> Document:
    port = port_of(config)
    count = replicas(config)
    leases = lease_names(config.ha)
    if config.ha.mode == "off":
        how = ("1 replica, replaced with Recreate: [ha] mode is \"off\", and two pods at once would both run "
               "every handler.")
        strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        how = (f"{count} replicas: [ha] mode = \"{config.ha.mode}\" coordinates them through the Lease(s) "
               f"{', '.join(leases[:3])}{', ...' if len(leases) > 3 else ''} in {config.ha.lease_namespace}; "
               "change replicas as you like.")
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    digest = hashlib.sha256(text.encode()).hexdigest()
    grace = math.ceil(config.opd.shutdown_timeout) + 5  # opd stops within its bound; the kubelet waits longer
    container = {
        "name": "opd",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["opd", "start"],
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
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
                    "volumes": [{"name": "config", "configMap": {"name": name}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    comment = (f"opd start with the ConfigMap's config, as {namespace}/{name}. {how} /healthz (liveness) and "
               f"/readyz (readiness) and /metrics on port {port}. Non-root (uid {USER_ID}), read-only root "
               "filesystem, no privilege escalation, no capabilities, seccomp RuntimeDefault.")
    return Document(body, _lines(comment))


def _lines(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, 110, break_on_hyphens=False))
