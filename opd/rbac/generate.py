"""``opd rbac`` and ``opd manifests``: the YAML for a config file, its enabled plugins and a cluster.

A cluster is required: the rules name what the API server serves (API groups, plurals, status
subresources, which resources are cluster-scoped), and only its discovery knows that for the
names handlers use (``'kex'``, ``'jobs.batch'``, a CRD's kind). Guessing from the names as
written would produce rules that look right and allow the wrong thing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from opd.daemon import plugins as daemon_plugins
from opd.daemon.config import DaemonConfig
from opd.daemon.rendering import secret_name
from opd.engine.execution import brief
from opd.errors import OpdError
from opd.kube import credentials
from opd.kube.api import REQUEST_ERRORS, APIError
from opd.kube.credentials import Login
from opd.kube.discovery import Discovery as ApiDiscovery
from opd.plugin.options import table_key
from opd.rbac import deployment, objects
from opd.rbac.derive import Policy, derive
from opd.rbac.podconfig import pod_config, port_of
from opd.rbac.yamltext import Document, dump
from opd.resources import Resource
from opd.settings import NetworkingSettings

# A person waits for the answer: fail within seconds when the API server is not there.
_NETWORKING = NetworkingSettings(request_timeout=20.0, read_timeout=10.0, connect_timeout=5.0)


async def served_resources(login: Login) -> tuple[list[Resource], str]:
    """Every resource the API server serves (by discovery), and where it is (for the output's head)."""
    client = await credentials.connect(login, _NETWORKING)
    try:
        return await ApiDiscovery(client).resources(), f"{client.host} ({client.source})"
    except APIError as exc:
        raise OpdError(f"API discovery at {client.host} ({client.source}) refused: {exc.status} {exc.reason}: "
                       f"{brief(exc.message, 200)}") from None
    except REQUEST_ERRORS as exc:
        raise OpdError(f"cannot reach the API server at {client.host} ({client.source}): "
                       f"{brief(exc, 200) or type(exc).__name__}") from None
    finally:
        await client.close()


def policy(config: DaemonConfig, found: daemon_plugins.Discovery, served: Sequence[Resource]) -> Policy:
    """What the enabled plugins need; OpdError when one of them cannot load (its needs are unknown)."""
    failed = found.failed()
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more: {', '.join(p.name for p in failed[1:])})" if len(failed) > 1 else ""
        raise OpdError(f"plugin {first.name!r} cannot load: {first.error}{more}; its permissions cannot be "
                       "derived (fix it, or disable it in [plugins])")
    return derive(config, found.loaded(), served)


def _head(docs: list[Document], lines: Sequence[str]) -> list[Document]:
    first = docs[0]
    return [dataclasses.replace(first, comment=(*lines, *first.comment)), *docs[1:]]


def rbac(config: DaemonConfig, found: daemon_plugins.Discovery, login: Login, *, name: str,
         namespace: str) -> str:
    """The YAML of ``opd rbac``."""
    served, where = asyncio.run(served_resources(login))
    docs = objects.documents(policy(config, found, served), name, namespace)
    source = str(config.path) if config.path else "no config file (defaults)"
    return dump(_head(docs, [f"opd rbac: for {source}, resolved against {where}", ""]))


def manifests(config: DaemonConfig, found: daemon_plugins.Discovery, login: Login, *, name: str, namespace: str,
              image: str) -> tuple[str, list[str]]:
    """The YAML of ``opd manifests``, and warnings for the person running it."""
    try:
        text = config.path.read_text() if config.path else ""
    except OSError as exc:
        raise OpdError(f"{config.path}: cannot read: {exc.strerror or exc}") from None
    pod_text = pod_config(config, text)  # before the cluster: a file it cannot edit fails fast
    served, where = asyncio.run(served_resources(login))
    docs = objects.documents(policy(config, found, served), name, namespace)
    source = str(config.path) if config.path else "no config file (defaults)"
    docs.append(deployment.config_map(name, namespace, pod_text, source, port_of(config)))
    docs.append(deployment.deployment(config, name, namespace, image, pod_text))
    head = [f"opd manifests: for {source}, resolved against {where}",
            f"Apply with: kubectl apply -f - (the namespace {namespace} must exist).", ""]
    return dump(_head(docs, head)), _secret_warnings(config, found, namespace) + webhook_warnings(found)


def webhook_warnings(found: daemon_plugins.Discovery) -> list[str]:
    """Plugins with admission handlers or converters: the manifests run them, but give the API server
    no way to reach their webhook server (no Service; each pod makes its own certificate)."""
    owners = [p.name for p in found.loaded() if p.enabled and p.registry.webhooks()]
    if not owners:
        return []
    return [f"plugin(s) {', '.join(owners)} serve webhooks, which these manifests do not expose to the API server "
            f"(no Service, a certificate per pod): add a Service for [webhooks] listen, set [webhooks] service and "
            f"a cert_dir shared by the pods (a Secret), or run those plugins outside the cluster"]


def _secret_warnings(config: DaemonConfig, found: daemon_plugins.Discovery, namespace: str) -> list[str]:
    """Keys of the config that look like secrets: a ConfigMap is no place for them."""
    declared = {p.name: {o.name for o in p.options or () if o.secret} for p in found.plugins}
    warnings = []
    for plugin, table in config.plugins.tables.items():
        for key in table.options:
            if secret_name(key) or key in declared.get(plugin, set()):
                warnings.append(f"[plugins.{table_key(plugin)}].{table_key(key)} looks like a secret: the ConfigMap "
                                f"holds the config file as it is, readable by whoever may read ConfigMaps in "
                                f"{namespace}")
    return warnings
