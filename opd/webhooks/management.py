"""The cluster objects that send the API server to opd's webhooks, kept by opd.

- ``ValidatingWebhookConfiguration``/``MutatingWebhookConfiguration`` named by
  ``settings.admission.managed``: one webhook per admission handler, named
  ``<handler id>.<scope>``. Several owners may share one configuration (the daemon's plugins, each
  with its own scope ``<plugin>.<managed>``): each replaces only the webhooks named with its own
  scope, with the object's resourceVersion as precondition, so no owner's write loses another's.
- A CRD's ``spec.conversion``: strategy Webhook, opd's URL and CA, ConversionReview v1.

Label filters of a handler (values, PRESENT, ABSENT; not callables) become its webhook's
``objectSelector``, so the API server does not even call for objects the handler ignores.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opd.errors import ConfigError
from opd.kube.api import MERGE_PATCH, ConflictError, KubeClient, NotFoundError
from opd.registry import ABSENT, PRESENT, Reason, WebhookHandler
from opd.resources import Resource
from opd.webhooks.server import ClientConfig, with_path

ADMISSION_API = "/apis/admissionregistration.k8s.io/v1"
CRD_API = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
PLURALS = {Reason.VALIDATE: "validatingwebhookconfigurations", Reason.MUTATE: "mutatingwebhookconfigurations"}
KINDS = {Reason.VALIDATE: "ValidatingWebhookConfiguration", Reason.MUTATE: "MutatingWebhookConfiguration"}
MANAGED_BY = {"app.kubernetes.io/managed-by": "opd"}
DEFAULT_TIMEOUT = 10  # seconds: Kubernetes' own default for a webhook
ATTEMPTS = 5  # writes retried after a conflict with another owner's
NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace's own name, set by the API server (1.21+)
OWN_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")  # in a pod
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_name(managed: str, where: str = "settings.admission.managed") -> str:
    """The managed configuration's name, checked: webhook names ``<id>.<name>`` need three segments."""
    if len(managed) > 200 or not _DNS_SUBDOMAIN.fullmatch(managed):
        raise ConfigError(f"{where} {managed!r}: expected a DNS name (lowercase letters, digits, '-', '.')")
    if managed.count(".") < 1:
        raise ConfigError(f"{where} {managed!r}: the API server wants webhook names of three segments at least "
                          f"(opd names them <handler>.{managed}): use a name with a dot, e.g. '{managed}.example.com'")
    return managed


def dns_label(text: str) -> str:
    """``text`` as one DNS label; a short digest of the original keeps names unique when it changed."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50] or "x"
    if label != text:
        label = f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    return label


def owned(name: str, scope: str) -> bool:
    """A webhook named by this owner: ``<one label>.<scope>``."""
    head, dot, tail = name.partition(".")
    return bool(dot) and tail == scope and bool(head)


def object_selector(labels: Mapping[str, Any] | None) -> dict[str, Any]:
    exprs: list[dict[str, Any]] = []
    for key, want in (labels or {}).items():
        if want is PRESENT:
            exprs.append({"key": key, "operator": "Exists"})
        elif want is ABSENT:
            exprs.append({"key": key, "operator": "DoesNotExist"})
        elif isinstance(want, str):
            exprs.append({"key": key, "operator": "In", "values": [want]})
    return {"matchExpressions": exprs} if exprs else {}


def own_namespace(path: Path | None = None) -> str | None:
    """The namespace of the pod opd runs in (its service account's), or None outside a pod."""
    try:
        text = (path or OWN_NAMESPACE_FILE).read_text(encoding="utf-8", errors="replace")[:256].strip()
    except OSError:
        return None
    return text or None


def namespace_selector(excluded: Sequence[str]) -> dict[str, Any]:
    """Every namespace but ``excluded`` (by the label the API server puts on each with its name)."""
    names = sorted({n for n in excluded if n})
    return {"matchExpressions": [{"key": NAME_LABEL, "operator": "NotIn", "values": names}]} if names else {}


def webhook_path(handler: WebhookHandler) -> str:
    """Where a handler's reviews come in, under its operator's mount: ``validate/<id>``."""
    return f"{handler.reason}/{handler.id}"


def entries(handlers: Sequence[tuple[WebhookHandler, Resource]], *, scope: str, client_config: ClientConfig,
            persistent_only: bool = False, excluded: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The ``webhooks`` of one configuration for these handlers (with their served resources),
    none of them covering the namespaces ``excluded``."""
    out: list[dict[str, Any]] = []
    taken: set[str] = set()
    for handler, resource in handlers:
        if persistent_only and not handler.persistent:
            continue
        name, more = f"{dns_label(handler.id)}.{scope}", 1
        while name in taken:  # one id for two resources
            more += 1
            name = f"{dns_label(f'{handler.id}-{more}')}.{scope}"
        taken.add(name)
        plural = resource.plural if handler.subresource is None else f"{resource.plural}/{handler.subresource}"
        out.append({
            "name": name,
            "clientConfig": with_path(client_config, webhook_path(handler)),
            "rules": [{"apiGroups": [resource.group], "apiVersions": [resource.version], "resources": [plural],
                       "operations": sorted(handler.operations) if handler.operations else ["*"], "scope": "*"}],
            "objectSelector": object_selector(handler.labels),
            "namespaceSelector": namespace_selector(excluded),
            "sideEffects": "NoneOnDryRun" if handler.side_effects else "None",
            "failurePolicy": "Ignore" if handler.ignore_failures else "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": int(handler.timeout or DEFAULT_TIMEOUT),
            "admissionReviewVersions": ["v1", "v1beta1"],
        })
    return out


def _same(current: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the server's webhooks say what we want (it adds defaults: only our keys count)."""
    if len(current) != len(wanted):
        return False
    by_name = {w.get("name"): w for w in current}
    return all(w["name"] in by_name and all(by_name[w["name"]].get(k) == v for k, v in w.items()) for w in wanted)


async def apply(client: KubeClient, reason: Reason, name: str, scope: str, wanted: list[dict[str, Any]]) -> str:
    """Make this owner's webhooks in the configuration ``name`` be ``wanted``, the others' untouched.
    Returns what was done: created, updated, deleted (nothing left in it), unchanged, or absent."""
    plural, kind = PLURALS[reason], KINDS[reason]
    path = f"{ADMISSION_API}/{plural}/{name}"
    for _ in range(ATTEMPTS):
        try:
            current = await client.get(path)
        except NotFoundError:
            if not wanted:
                return "absent"
            body = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                    "metadata": {"name": name, "labels": MANAGED_BY}, "webhooks": wanted}
            try:
                await client.request("POST", f"{ADMISSION_API}/{plural}", body=body)
            except ConflictError:  # made by another owner meanwhile
                continue
            return "created"
        webhooks = current.get("webhooks") or []
        others = [w for w in webhooks if not owned(str(w.get("name", "")), scope)]
        if _same([w for w in webhooks if owned(str(w.get("name", "")), scope)], wanted):
            return "unchanged"
        meta = current.get("metadata") or {}
        try:
            if not others and not wanted and (meta.get("labels") or {}).items() >= MANAGED_BY.items():
                await client.request("DELETE", path, body={"preconditions": {"resourceVersion": meta.get(
                    "resourceVersion")}})
                return "deleted"
            await client.request("PUT", path, body={**current, "webhooks": [*others, *wanted]})
        except ConflictError:  # another owner wrote meanwhile: read again
            continue
        except NotFoundError:
            return "deleted" if not wanted else "absent"
        return "updated"
    raise ConflictError(409, "Conflict", f"{kind} {name}: still conflicting after {ATTEMPTS} tries", path=path)


def conversion_stanza(client_config: ClientConfig, crd: str) -> dict[str, Any]:
    config = with_path(client_config, f"{Reason.CONVERT}/{crd}")
    # Absent keys as nulls: a merge-patch replacing a service by a URL must remove the service.
    config = {"url": config.get("url"), "service": config.get("service"), "caBundle": config.get("caBundle")}
    return {"strategy": "Webhook", "webhook": {"clientConfig": config, "conversionReviewVersions": ["v1"]}}


async def apply_conversion(client: KubeClient, crd: str, client_config: ClientConfig) -> str:
    """Point the CRD's ``spec.conversion`` at opd: updated, or unchanged."""
    path = f"{CRD_API}/{crd}"
    wanted = conversion_stanza(client_config, crd)
    current = ((await client.get(path)).get("spec") or {}).get("conversion") or {}
    config = (current.get("webhook") or {}).get("clientConfig") or {}
    if (current.get("strategy") == "Webhook"
            and all(config.get(k) == v for k, v in wanted["webhook"]["clientConfig"].items())
            and (current.get("webhook") or {}).get("conversionReviewVersions") == ["v1"]):
        return "unchanged"
    await client.request("PATCH", path, body={"spec": {"conversion": wanted}}, content_type=MERGE_PATCH)
    return "updated"


def crd_name(resource: Resource) -> str:
    return f"{resource.plural}.{resource.group}"


def check_webhooks(handlers: Sequence[WebhookHandler]) -> None:
    """What the API server would refuse, said before anything is written."""
    for handler in handlers:
        if handler.reason == Reason.CONVERT:
            continue
        if handler.subresource is not None and not re.fullmatch(r"\*|[a-z0-9-]+", handler.subresource):
            raise ConfigError(f"{handler.reason} handler {handler.id!r}: subresource {handler.subresource!r} "
                              "is not a subresource's name (e.g. 'status', 'scale', '*')")
