"""opd-nsdefaults: gives every new namespace a set of default objects.

The objects are manifests from the plugin's config (by default one ConfigMap ``defaults``), created
once in each namespace that opd sees for the first time. An object that already exists is left
as it is (a 409 is success): the plugin never overwrites what a namespace's owners changed.
The options (``[plugins.nsdefaults]``) are declared in ``opd_options``: opd checks the table.
"""

from __future__ import annotations

import fnmatch
import json
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import opd
from kubernetes_asyncio import client
from opd import rest

__all__ = ["DEFAULT_OBJECTS", "Config", "opd_configure", "opd_options", "opd_rbac", "opd_register"]

MEMO_KEY = "opd_nsdefaults"  # one memo may serve several plugins: keep ours under one key
LABEL = "opd.dev/nsdefaults"  # on every object the plugin creates, to find them: -l opd.dev/nsdefaults
DEFAULT_OBJECTS: tuple[dict[str, Any], ...] = (
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "defaults"}, "data": {"namespace": "${namespace}"}},
)


@dataclass(frozen=True)
class Config:
    """The plugin's table ``[plugins.nsdefaults]`` as opd hands it over: checked, defaults filled in."""

    objects: tuple[dict[str, Any], ...]  # manifests, without metadata.namespace
    include: tuple[str, ...]  # namespace globs that get the objects...
    exclude: tuple[str, ...]  # ...unless they match one of these

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Config:
        return cls(objects=tuple(config["objects"]), include=tuple(config["include"]),
                   exclude=tuple(config["exclude"]))

    def selects(self, namespace: str) -> bool:
        def matches(globs: tuple[str, ...]) -> bool:
            return any(fnmatch.fnmatchcase(namespace, g) for g in globs)

        return matches(self.include) and not matches(self.exclude)


def _globs(globs: list[str]) -> str | None:
    return None if all(globs) else "expected namespace globs, got an empty string"


def _manifests(objects: list[dict[str, Any]]) -> str | None:
    for index, manifest in enumerate(objects):
        problem = _manifest_problem(manifest)
        if problem:
            return f"item {index}: {problem}"
    names = [(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in objects]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f"{twice[0][1]} {twice[0][2]!r} is listed twice"
    return None


@opd.hookimpl
def opd_options() -> list[opd.Option]:
    return [
        opd.Option("include", list, items=str, default=["*"], check=_globs,
                   help="namespace globs that get the objects..."),
        opd.Option("exclude", list, items=str, default=["kube-*"], check=_globs,
                   help="...unless they match one of these"),
        opd.Option("objects", list, items=dict, default=list(DEFAULT_OBJECTS), check=_manifests,
                   help="the manifests to create, without metadata.namespace; ${namespace} is filled in"),
    ]


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    for key in ("apiVersion", "kind"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            return f"{key}: expected a string, e.g. apiVersion = \"v1\", kind = \"ConfigMap\""
    meta = manifest.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return "metadata.name: expected a string (generateName is not idempotent)"
    if "namespace" in meta:
        return "metadata.namespace: leave it out (each object goes into the new namespace)"
    return None


def render(manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The manifest for one namespace: ``${namespace}`` in any string replaced, and the plugin's label."""
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return string.Template(value).safe_substitute(namespace=namespace)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    body: dict[str, Any] = fill(manifest)
    meta = body["metadata"]
    meta["namespace"] = namespace
    meta["labels"] = {**(meta.get("labels") or {}), LABEL: "true"}
    return body


@opd.hookimpl
def opd_register(registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
    cfg = Config.of(config)  # opd has checked the table against opd_options and filled in the defaults

    @opd.on.startup(registry=registry, id="nsdefaults_connect")
    async def connect(memo: opd.Memo, api: client.ApiClient, **_: Any) -> None:
        # opd's own client: the cluster and credentials the daemon was configured with.
        # The API client, and the resources found for each (apiVersion, kind): (plural, namespaced).
        memo[MEMO_KEY] = {"api": api, "kinds": {}}

    @opd.on.cleanup(registry=registry, id="nsdefaults_disconnect")
    async def disconnect(memo: opd.Memo, **_: Any) -> None:
        memo.pop(MEMO_KEY, None)  # the client is opd's: it closes it

    def selected(name: str, **_: Any) -> bool:
        return cfg.selects(name)

    # "New" is: not yet handled by this plugin. So namespaces that exist when the plugin first
    # runs get the objects too (exclude them by name if they should not).
    @opd.on.create("namespaces", registry=registry, id="defaults", when=selected)
    async def defaults(name: str, body: dict[str, Any], memo: opd.Memo, logger: Any, **_: Any) -> None:
        if body["metadata"].get("deletionTimestamp") or (body.get("status") or {}).get("phase") == "Terminating":
            return
        await _create_all(memo[MEMO_KEY], cfg, name, body, logger)


@opd.hookimpl
def opd_configure(settings: opd.OperatorSettings, config: dict[str, Any]) -> None:
    # Namespaces have a status subresource, but a core type prunes unknown status fields: opd would
    # try its markers there first, notice, and log that it falls back. Say so from the start.
    settings.persistence.storage = "annotations"


@opd.hookimpl
def opd_rbac(config: dict[str, Any], lookup: Callable[[str, str], dict[str, list[str]] | None]
             ) -> list[dict[str, Any]]:
    """create on each configured kind: in the namespaces ``include`` names, or in any (globs)."""
    cfg = Config.of(config)
    if all(_is_name(g) for g in cfg.include):  # names only: a Role in each that is not excluded
        where: dict[str, Any] = {"namespaces": [n for n in cfg.include if cfg.selects(n)]}
        if not where["namespaces"]:
            return []
    else:  # namespaces yet to come, by pattern: only a ClusterRole can allow that
        where = {"clusterwide": True}
    rules = []
    for index, manifest in enumerate(cfg.objects):
        found = lookup(manifest["apiVersion"], manifest["kind"])
        if found is None:
            raise opd.ConfigError(f"[plugins.nsdefaults].objects[{index}]: the API server serves no kind "
                                  f"{manifest['kind']} in {manifest['apiVersion']}")
        rules.append({**found, "verbs": ["create"], **where})
    return rules


def _is_name(glob: str) -> bool:
    return not any(ch in glob for ch in "*?[")


async def _create_all(state: dict[str, Any], cfg: Config, namespace: str, body: Mapping[str, Any],
                      logger: Any) -> None:
    created, problems = [], []
    for manifest in cfg.objects:
        obj = render(manifest, namespace)
        what = f"{obj['kind']} {namespace}/{obj['metadata']['name']}"
        try:
            plural = await _plural(state, obj["apiVersion"], obj["kind"])
            prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
            await rest.request(state["api"], "POST", f"{prefix}/namespaces/{namespace}/{plural}", body=obj)
        except LookupError as exc:  # not served, or not namespaced: a config problem, not worth retrying
            problems.append(f"{what}: {exc}")
            continue
        except client.ApiException as exc:
            if exc.status == 409:  # there already: whoever made it, it stays as it is
                continue
            if rest.being_terminated(exc) or exc.status == 404:  # the namespace went meanwhile
                return
            if exc.status in (400, 403, 422):  # refused as it is: retrying would not change that
                problems.append(f"{what}: {exc.status} {exc.reason}: {_message(exc)}")
                continue
            raise  # 5xx, 429: opd retries the handler, and the 409s make the retry idempotent
        created.append(what)
    if created:
        logger.info(f"nsdefaults: created {', '.join(created)}")
    if problems:
        message = "; ".join(problems)
        opd.warn(body, reason="DefaultsFailed", message=message)
        raise opd.PermanentError(message)


def _message(exc: client.ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")[:200]


async def _plural(state: dict[str, Any], api_version: str, kind: str) -> str:
    """The resource name of a namespaced kind, by API discovery (remembered: kinds rarely change)."""
    key = (api_version, kind)
    if key not in state["kinds"]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            found = await rest.request(state["api"], "GET", path)
        except client.ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"the API server serves no {api_version}") from None
            raise
        for resource in found.get("resources", []):
            if resource.get("kind") == kind and "/" not in resource["name"]:  # not a subresource
                state["kinds"][key] = (resource["name"], bool(resource.get("namespaced")))
                break
        else:
            raise LookupError(f"the API server serves no kind {kind} in {api_version}")
    plural, namespaced = state["kinds"][key]
    if not namespaced:
        raise LookupError(f"{kind} is not a namespaced kind")
    return str(plural)
