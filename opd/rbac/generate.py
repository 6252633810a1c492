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
from dataclasses import dataclass
from pathlib import Path

from opd.engine.execution import brief
from opd.errors import OpdError
from opd.kube import credentials
from opd.kube.api import REQUEST_ERRORS, APIError
from opd.kube.credentials import Login
from opd.kube.discovery import Discovery as ApiDiscovery
from opd.rbac import deployment, objects
from opd.rbac.derive import Policy, derive
from opd.rbac.podconfig import for_pod, port_of
from opd.rbac.yamltext import Document, dump
from opd.resources import Resource
from opd.service import config as daemon_config
from opd.service import plugins as daemon_plugins
from opd.service.config import DaemonConfig
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


@dataclass(frozen=True)
class Output:
    """What ``opd rbac`` or ``opd manifests`` prints, what it says on stderr, and the risky rules."""

    text: str
    warnings: list[str]
    flagged: list[str]  # one line per risky rule: where, the rule, what and who asked

    def refuse_if_strict(self, strict: bool) -> None:
        """--strict: a risky rule is an error (one line), after the warnings that name each."""
        if strict and self.flagged:
            raise OpdError(f"--strict: {len(self.flagged)} rule(s) with wildcards, escalate, bind, impersonate or "
                           "Secrets in every namespace (each said above); nothing printed")


def rbac(config: DaemonConfig, found: daemon_plugins.Discovery, login: Login, *, name: str,
         namespace: str) -> Output:
    """The YAML of ``opd rbac``."""
    served, where = asyncio.run(served_resources(login))
    derived = policy(config, found, served)
    docs = objects.documents(derived, name, namespace)
    source = str(config.path) if config.path else "no config file (defaults)"
    return Output(dump(_head(docs, [f"opd rbac: for {source}, resolved against {where}", ""])), [],
                  objects.flagged(derived, name, namespace))


def manifests(config: DaemonConfig, found: daemon_plugins.Discovery, login: Login, *, name: str, namespace: str,
              image: str) -> Output:
    """The YAML of ``opd manifests``, and warnings for the person running it."""
    text = _read(config.path) if config.path else ""
    secrets_path = daemon_config.secrets_path()
    extra = _read(secrets_path) if secrets_path is not None else None
    declared = {p.name: [o.name for o in p.options or () if o.secret] for p in found.plugins}
    # Before the cluster: a file it cannot edit, or replicas that would share one identity, fail fast.
    pod = for_pod(config, text, declared=declared, name=name, namespace=namespace, extra_secrets=extra)
    deployment.check_identity(pod.config)
    served, where = asyncio.run(served_resources(login))
    derived = policy(pod.config, found, served)  # the pod's [ha]: its Leases where the pod keeps them
    docs = objects.documents(derived, name, namespace)
    source = str(config.path) if config.path else "no config file (defaults)"
    lease = ""
    if config.ha != pod.config.ha:
        lease = (f"[ha] lease = \"{pod.config.ha.lease}\", lease_namespace = \"{pod.config.ha.lease_namespace}\": "
                 "the deployment's own Lease(s), in its namespace (set them in the file to choose others).")
    docs.append(deployment.config_map(name, namespace, pod.text, source, port_of(config), moved=pod.moved,
                                      lease=lease, rewritten=pod.rewritten))
    if pod.secrets is not None:
        docs.append(deployment.secret(name, namespace, pod.secrets, pod.moved))
    docs.append(deployment.deployment(pod.config, name, namespace, image, pod.text, secrets=pod.secrets is not None))
    head = [f"opd manifests: for {source}, resolved against {where}",
            f"Apply with: kubectl apply -f - (the namespace {namespace} must exist).", ""]
    return Output(dump(_head(docs, head)), webhook_warnings(found), objects.flagged(derived, name, namespace))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise OpdError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def webhook_warnings(found: daemon_plugins.Discovery) -> list[str]:
    """Plugins with admission handlers or converters: the manifests run them, but give the API server
    no way to reach their webhook server (no Service; each pod makes its own certificate)."""
    owners = [p.name for p in found.loaded() if p.enabled and p.registry.webhooks()]
    if not owners:
        return []
    return [f"plugin(s) {', '.join(owners)} serve webhooks, which these manifests do not expose to the API server "
            f"(no Service, a certificate per pod): add a Service for [webhooks] listen, set [webhooks] service and "
            f"a cert_dir shared by the pods (a Secret), or run those plugins outside the cluster"]
