"""opd-mirror: copies labelled Secrets and ConfigMaps into other namespaces, and keeps the copies in step.

A source is a Secret or ConfigMap labelled ``opd.dev/mirror: "true"``. Its targets are the namespaces
in its annotation ``opd.dev/mirror-to`` (comma-separated names or globs, ``!`` to exclude), else the
plugin's config ``targets``. Each copy has the source's name, data (and Secret type), the annotation
``opd.dev/mirrored-from: <namespace>/<name>`` and the label ``opd.dev/mirror-source: <source uid>``.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import opd
from kubernetes_asyncio import client
from opd.kube import plain

__all__ = ["Config", "opd_register"]

LABEL = "opd.dev/mirror"
TARGETS = "opd.dev/mirror-to"
MIRRORED_FROM = "opd.dev/mirrored-from"
SOURCE_UID = "opd.dev/mirror-source"
# What a copy takes from its source, per resource: everything else is the copy's own.
COPIED_FIELDS = {"secrets": ("data",), "configmaps": ("data", "binaryData")}
MEMO_KEY = "opd_mirror"  # one memo may serve several plugins: keep ours under one key

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PATTERN = re.compile(r"!?[-a-z0-9*?\[\]]{1,63}")


@dataclass(frozen=True)
class Config:
    """The plugin's table ``[plugins.mirror]`` in opd.toml."""

    targets: tuple[str, ...] = ()  # namespaces (names or globs) for sources without the annotation
    resync: float = 60.0  # seconds between re-checks of each source's copies; 0: never

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> Config:
        known = {"targets", "resync"}
        for key in config:
            if key not in known:
                guess = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
                raise opd.ConfigError(f"[plugins.mirror]: unknown key {key!r}{hint}; known: {', '.join(sorted(known))}")
        targets = config.get("targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise opd.ConfigError(f"[plugins.mirror].targets: expected a list of namespace names, got {targets!r}")
        bad = [t for t in targets if not _PATTERN.fullmatch(t)]
        if bad:
            raise opd.ConfigError(f"[plugins.mirror].targets: not a namespace name or glob: {bad[0]!r}")
        resync = config.get("resync", cls.resync)
        if isinstance(resync, bool) or not isinstance(resync, int | float) or resync < 0:
            raise opd.ConfigError(f"[plugins.mirror].resync: expected seconds >= 0, got {resync!r}")
        return cls(targets=tuple(targets), resync=float(resync))


@dataclass
class _State:
    """Per operator, in its memo: the API client, and the problems already reported."""

    api: client.ApiClient
    # (source uid, namespace, problem): a missing namespace or a foreign object is reported once,
    # not at every resync, and again only after it was fixed and came back.
    reported: set[tuple[str, str, str]] = field(default_factory=set)


def _enabled(labels: Mapping[str, str], **_: Any) -> bool:
    return labels.get(LABEL) == "true"


def _patterns(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """Included by any positive pattern and excluded by no ``!pattern``."""
    patterns = list(patterns)
    included = any(fnmatch.fnmatchcase(name, p) for p in patterns if not p.startswith("!"))
    return included and not any(fnmatch.fnmatchcase(name, p[1:]) for p in patterns if p.startswith("!"))


@opd.hookimpl
def opd_register(registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
    cfg = Config.parse(config)

    @opd.on.startup(registry=registry, id="mirror_connect")
    async def connect(memo: opd.Memo, api: client.ApiClient, **_: Any) -> None:
        # opd's own client: the cluster and credentials the daemon was configured with.
        memo[MEMO_KEY] = _State(api=api)

    @opd.on.cleanup(registry=registry, id="mirror_disconnect")
    async def disconnect(memo: opd.Memo, **_: Any) -> None:
        memo.pop(MEMO_KEY, None)  # the client is opd's: it closes it

    for plural in COPIED_FIELDS:
        _register_resource(registry, plural, cfg)


def _register_resource(registry: opd.OperatorRegistry, plural: str, cfg: Config) -> None:
    # The label is required to be PRESENT (a server-side selector: opd lists only sources), and
    # "true" by `when`: a source set to "false" is still seen, so opd can release its finalizer.
    selector: dict[str, Any] = {"labels": {LABEL: opd.PRESENT}, "when": _enabled}

    @opd.on.create(plural, registry=registry, id="mirror", **selector)
    @opd.on.update(plural, registry=registry, id="mirror", **selector)
    @opd.on.resume(plural, registry=registry, id="mirror", **selector)
    async def mirror(body: dict[str, Any], memo: opd.Memo, logger: Any, **_: Any) -> None:
        await _reconcile(memo[MEMO_KEY], cfg, plural, body, logger)

    @opd.on.delete(plural, registry=registry, id="unmirror", **selector)
    async def unmirror(body: dict[str, Any], memo: opd.Memo, logger: Any, **_: Any) -> None:
        await _prune(memo[MEMO_KEY], plural, body, keep=set(), logger=logger)

    if cfg.resync > 0:
        # opd leaves annotations in the opd.dev/ domain out of its change detection, so an edit of
        # opd.dev/mirror-to alone fires no update: the resync catches it, and repairs edited copies.
        @opd.on.timer(plural, registry=registry, id="resync", interval=cfg.resync, initial_delay=cfg.resync,
                      **selector)
        async def resync(body: dict[str, Any], labels: dict[str, str], memo: opd.Memo, logger: Any,
                         **_: Any) -> None:
            if _enabled(labels) and MEMO_KEY in memo:  # a timer outlives a label set to "false"
                await _reconcile(memo[MEMO_KEY], cfg, plural, body, logger)


async def _targets(state: _State, cfg: Config, body: Mapping[str, Any], logger: Any) -> set[str]:
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    patterns = _patterns(annotations[TARGETS]) if TARGETS in annotations else list(cfg.targets)
    bad = [p for p in patterns if not _PATTERN.fullmatch(p)]
    if bad:
        _report(state, body, "", f"bad:{','.join(bad)}", "MirrorTargets",
                f"{TARGETS}: ignoring what is not a namespace name or glob: {', '.join(map(repr, bad))}", logger)
        patterns = [p for p in patterns if p not in bad]
    names = {p for p in patterns if not p.startswith("!") and _NAME.fullmatch(p)}
    if any(not _NAME.fullmatch(p.removeprefix("!")) for p in patterns):
        # Globs need the namespaces that exist now; new ones get their copy at the next resync.
        found = await plain.request(state.api, "GET", "/api/v1/namespaces")
        names |= {ns["metadata"]["name"] for ns in found.get("items", [])
                  if (ns.get("status") or {}).get("phase") != "Terminating"}
    return {n for n in names if _matches(n, patterns)} - {meta["namespace"]}


async def _reconcile(state: _State, cfg: Config, plural: str, body: Mapping[str, Any], logger: Any) -> None:
    targets = await _targets(state, cfg, body, logger)
    for namespace in sorted(targets):
        await _copy(state, plural, body, namespace, logger)
    await _prune(state, plural, body, keep=targets, logger=logger)


def _source_id(body: Mapping[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _desired(plural: str, body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    meta = body["metadata"]
    copy: dict[str, Any] = {
        "apiVersion": "v1", "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": namespace,
                     "labels": {SOURCE_UID: meta["uid"]},
                     "annotations": {MIRRORED_FROM: _source_id(body)}},
    }
    if plural == "secrets":
        copy["type"] = body.get("type") or "Opaque"
    for name in COPIED_FIELDS[plural]:
        if body.get(name):
            copy[name] = body[name]
    return copy


def _changes(plural: str, existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge-patch from ``existing`` to ``desired``: keys gone from the source are nulled."""
    patch: dict[str, Any] = {}
    for name in COPIED_FIELDS[plural]:
        have, want = existing.get(name) or {}, desired.get(name) or {}
        if have != want:
            patch[name] = {**{key: None for key in have if key not in want}, **want}
    uid = desired["metadata"]["labels"][SOURCE_UID]
    if (existing["metadata"].get("labels") or {}).get(SOURCE_UID) != uid:  # a recreated source adopts its copies
        patch["metadata"] = {"labels": {SOURCE_UID: uid}}
    return patch


async def _copy(state: _State, plural: str, body: Mapping[str, Any], namespace: str, logger: Any) -> None:
    name, uid = body["metadata"]["name"], body["metadata"]["uid"]
    desired = _desired(plural, body, namespace)
    collection = f"/api/v1/namespaces/{namespace}/{plural}"
    try:
        existing = await plain.request(state.api, "GET", f"{collection}/{name}")
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        existing = None
    if existing is not None:
        owner = (existing["metadata"].get("annotations") or {}).get(MIRRORED_FROM)
        if owner != _source_id(body):
            # Never clobber an object the source does not own: a person's, or another source's copy.
            what = f"copied from {owner}" if owner else "not a copy"
            _report(state, body, namespace, "conflict", "MirrorConflict",
                    f"not copying to {namespace}/{name}: it exists and is {what}", logger)
            return
        if plural == "secrets" and existing.get("type") != desired["type"]:
            # A Secret's type is immutable: replace the copy.
            await _delete(state, f"{collection}/{name}", existing["metadata"]["uid"])
            existing = None
    if existing is None:
        try:
            await plain.request(state.api, "POST", collection, body=desired)
        except client.ApiException as exc:
            if exc.status == 404 or plain.being_terminated(exc):
                _report(state, body, namespace, "namespace", "MirrorTargetMissing",
                        f"not copying to {namespace}: no such namespace (or it is being deleted)", logger)
                return
            if exc.status == 409:  # a concurrent run (resync and update) made it first: look again soon
                raise opd.TemporaryError(f"{namespace}/{name} appeared meanwhile", delay=1.0) from None
            raise
        logger.info(f"mirror: copied to {namespace}/{name}")
    else:
        patch = _changes(plural, existing, desired)
        if not patch:
            return
        await plain.request(state.api, "PATCH", f"{collection}/{name}", body=patch, content_type=plain.MERGE_PATCH)
        logger.info(f"mirror: updated {namespace}/{name}")
    state.reported -= {(uid, namespace, p) for p in ("conflict", "namespace")}


async def _prune(state: _State, plural: str, body: Mapping[str, Any], *, keep: set[str], logger: Any) -> None:
    """Delete the source's copies outside ``keep``: found by the uid label, anywhere in the cluster."""
    uid = body["metadata"]["uid"]
    found = await plain.request(state.api, "GET", f"/api/v1/{plural}", query={"labelSelector": f"{SOURCE_UID}={uid}"})
    for item in found.get("items", []):
        meta = item["metadata"]
        if meta["namespace"] in keep or (meta.get("annotations") or {}).get(MIRRORED_FROM) != _source_id(body):
            continue
        await _delete(state, f"/api/v1/namespaces/{meta['namespace']}/{plural}/{meta['name']}", meta["uid"])
        logger.info(f"mirror: deleted the copy {meta['namespace']}/{meta['name']}")


async def _delete(state: _State, path: str, uid: str) -> None:
    # The uid precondition: never delete a newer object that took the name meanwhile.
    try:
        await plain.request(state.api, "DELETE", path, body={"preconditions": {"uid": uid}})
    except client.ApiException as exc:
        if exc.status not in (404, 409):
            raise


def _report(state: _State, body: Mapping[str, Any], namespace: str, problem: str, reason: str, message: str,
            logger: Any) -> None:
    key = (body["metadata"]["uid"], namespace, problem)
    if key in state.reported:
        return
    state.reported.add(key)
    logger.warning(f"mirror: {message}")
    opd.warn(body, reason=reason, message=message)
