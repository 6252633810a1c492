"""Bringing a source's copies in step: copy to its rules' targets, refuse the others, prune the stale ones.

Every write goes through ``_write``, which refuses a namespace that no rule names for the source
(and every ``kube-*`` namespace): the rules bound what opd's identity does on behalf of a source's
author (creates, updates and deletes alike), whatever the source asks for. Secrets that are
credentials of the cluster itself (service-account tokens, bootstrap tokens) are never copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import opd
from kubernetes_asyncio import client
from opd import rest

from opd_mirror import patterns, rules
from opd_mirror.config import TABLE, Config

LABEL = "opd.dev/mirror"
TARGETS = "opd.dev/mirror-to"
MIRRORED_FROM = "opd.dev/mirrored-from"
SOURCE_UID = "opd.dev/mirror-source"
# The source's record of the targets it asked for and was refused. In the plugin's own domain,
# which opd's change detection leaves out: writing it fires no update of the source.
REFUSED = "mirror.opd.dev/refused-targets"
# What a copy takes from its source, per resource: everything else is the copy's own.
COPIED_FIELDS = {"secrets": ("data",), "configmaps": ("data", "binaryData")}
# Secret types that are the cluster's own credentials: a copy would hand a token to another namespace.
REFUSED_TYPES = ("kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token")
_LISTED = 20  # namespaces named in one Event or annotation; more are counted


@dataclass
class State:
    """Per operator, in its memo: the API client, the config, and the problems already reported."""

    api: client.ApiClient
    cfg: Config
    # (source uid, namespace, problem): a refused or missing target, a foreign object, a copy left
    # behind, is reported once, not at every resync; again only after it was fixed and came back.
    reported: set[tuple[str, str, str]] = field(default_factory=set)


def enabled(labels: Mapping[str, str], **_: Any) -> bool:
    return labels.get(LABEL) == "true"


def selects(cfg: Config, body: Mapping[str, Any]) -> bool:
    """A source some rule takes (by its namespace and name): any other object opd leaves untouched."""
    meta = body.get("metadata") or {}
    return bool(cfg.targets_for(str(meta.get("namespace") or ""), str(meta.get("name") or "")))


async def reconcile(state: State, plural: str, body: Mapping[str, Any], logger: Any) -> None:
    annotations = body["metadata"].get("annotations") or {}
    if MIRRORED_FROM in annotations:
        # A copy labelled as a source by hand: mirroring it could copy copies around in circles.
        _report(state, body, "", "copy", "MirrorIgnored",
                f"not mirroring: this is a copy of {annotations[MIRRORED_FROM]} ({MIRRORED_FROM}), never a source",
                logger)
        return
    if plural == "secrets" and body.get("type") in REFUSED_TYPES:
        _report(state, body, "", "type", "MirrorRefused",
                f"not mirroring: a Secret of type {body['type']} is a credential of the cluster itself, never copied",
                logger)
        return
    allowed = _allowed(state, body)
    wanted, refused = _wanted(state, body, allowed, logger)
    _report_refused(state, body, refused, logger)
    for namespace in sorted(wanted):
        await _copy(state, plural, body, namespace, logger)
    await prune(state, plural, body, keep=wanted, logger=logger)
    await _record_refused(state, plural, body, refused)


def _allowed(state: State, body: Mapping[str, Any]) -> set[str]:
    """Where the rules let this source be copied (never its own namespace, never kube-*)."""
    return state.cfg.targets_for(body["metadata"]["namespace"], body["metadata"]["name"])


def _wanted(state: State, body: Mapping[str, Any], allowed: set[str], logger: Any) -> tuple[set[str], set[str]]:
    """The targets the source gets (its rules' targets, narrowed by its annotation when it has one),
    and the names its annotation asks for that no rule gives it (refused)."""
    annotations = body["metadata"].get("annotations") or {}
    if TARGETS not in annotations:
        return set(allowed), set()
    asked = patterns.split(str(annotations[TARGETS])[:_ANNOTATION])
    bad = [p for p in asked if not patterns.PATTERN.fullmatch(p)]
    if bad:
        _report(state, body, "", f"bad:{','.join(bad[:_LISTED])}", "MirrorTargets",
                f"{TARGETS}: ignoring what is not a namespace name or glob: {_listing([repr(b[:70]) for b in bad])}",
                logger)
        asked = [p for p in asked if p not in bad]
    # Globs match among the rules' targets only: a source never reaches a namespace no rule names.
    wanted = {ns for ns in allowed if patterns.matches(ns, asked)}
    named = {p for p in asked if patterns.is_name(p) and patterns.matches(p, asked)}
    return wanted, named - allowed - {body["metadata"]["namespace"]}


_ANNOTATION = 4096  # characters of opd.dev/mirror-to read: 100 names fit; the rest is not parsed


def source_id(body: Mapping[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _desired(plural: str, body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    meta = body["metadata"]
    copy: dict[str, Any] = {
        "apiVersion": "v1", "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": namespace,
                     "labels": {SOURCE_UID: meta["uid"]},
                     "annotations": {MIRRORED_FROM: source_id(body)}},
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


async def _copy(state: State, plural: str, body: Mapping[str, Any], namespace: str, logger: Any) -> None:
    name, uid = body["metadata"]["name"], body["metadata"]["uid"]
    desired = _desired(plural, body, namespace)
    path = f"/api/v1/namespaces/{namespace}/{plural}/{name}"
    try:
        existing = await rest.request(state.api, "GET", path)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        existing = None
    if existing is not None:
        owner = (existing["metadata"].get("annotations") or {}).get(MIRRORED_FROM)
        if owner != source_id(body):
            # Never clobber an object the source does not own: a person's, or another source's copy.
            what = f"copied from {owner}" if owner else "not a copy"
            _report(state, body, namespace, "conflict", "MirrorConflict",
                    f"not copying to {namespace}/{name}: it exists and is {what}", logger)
            return
        if plural == "secrets" and existing.get("type") != desired["type"]:
            # A Secret's type is immutable: replace the copy.
            await _delete(state, body, namespace, path, existing["metadata"]["uid"])
            existing = None
    if existing is None:
        try:
            await _write(state, body, namespace, "POST", f"/api/v1/namespaces/{namespace}/{plural}", desired)
        except client.ApiException as exc:
            if exc.status == 404 or rest.being_terminated(exc):
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
        await _write(state, body, namespace, "PATCH", path, patch)
        logger.info(f"mirror: updated {namespace}/{name}")
    state.reported -= {(uid, namespace, p) for p in ("conflict", "namespace")}


async def prune(state: State, plural: str, body: Mapping[str, Any], *, keep: set[str], logger: Any) -> None:
    """Delete the source's copies outside ``keep``, found by their uid label in the rules' targets (opd
    lists nowhere else); a copy in a namespace no rule gives this source any longer is left, said once."""
    uid = body["metadata"]["uid"]
    allowed = _allowed(state, body)
    left: set[str] = set()
    for where in sorted(state.cfg.destinations()):
        found = await rest.request(state.api, "GET", f"/api/v1/namespaces/{where}/{plural}",
                                    query={"labelSelector": f"{SOURCE_UID}={uid}"})
        for item in found.get("items", []):
            meta = item["metadata"]
            namespace = meta["namespace"]
            if namespace in keep or (meta.get("annotations") or {}).get(MIRRORED_FROM) != source_id(body):
                continue
            if namespace not in allowed:
                left.add(namespace)
                _report(state, body, namespace, "left", "MirrorCopyLeft",
                        f"left the copy {namespace}/{meta['name']} as it is, no longer updated: no rule of {TABLE} "
                        f"copies this source to {namespace} now (delete it by hand if it is not wanted)", logger)
                continue
            await _delete(state, body, namespace, f"/api/v1/namespaces/{namespace}/{plural}/{meta['name']}",
                          meta["uid"])
            logger.info(f"mirror: deleted the copy {namespace}/{meta['name']}")
    _forget(state, uid, "left", keep=left)


async def _delete(state: State, source: Mapping[str, Any], namespace: str, path: str, uid: str) -> None:
    # The uid precondition: never delete a newer object that took the name meanwhile.
    try:
        await _write(state, source, namespace, "DELETE", path, {"preconditions": {"uid": uid}})
    except client.ApiException as exc:
        if exc.status not in (404, 409):
            raise


async def _write(state: State, source: Mapping[str, Any], namespace: str, method: str, path: str,
                 body: Mapping[str, Any]) -> None:
    """The only place that writes copies: only in a namespace a rule names for ``source``, never kube-*."""
    if rules.refused(namespace) or namespace not in _allowed(state, source):
        raise opd.PermanentError(f"mirror: refusing to write in {namespace}: no rule of {TABLE} copies "
                                 f"{source_id(source)} there")
    if source.get("type") in REFUSED_TYPES:
        raise opd.PermanentError(f"mirror: refusing to copy a Secret of type {source['type']}")
    if method == "PATCH":
        await rest.request(state.api, method, path, body=body, content_type=rest.MERGE_PATCH)
    else:
        await rest.request(state.api, method, path, body=body)


def _report_refused(state: State, body: Mapping[str, Any], refused: set[str], logger: Any) -> None:
    """One log line and one Warning Event for the targets refused since the last report (each once)."""
    uid = body["metadata"]["uid"]
    new = sorted(ns for ns in refused if (uid, ns, "refused") not in state.reported)
    _forget(state, uid, "refused", keep=refused)
    if not new:
        return
    state.reported |= {(uid, ns, "refused") for ns in new}
    message = f"not copying to {_listing(new)}: no rule of {TABLE} copies this source there"
    logger.warning(f"mirror: {message}")
    opd.warn(body, reason="MirrorRefused", message=message)


async def _record_refused(state: State, plural: str, body: Mapping[str, Any], refused: set[str]) -> None:
    """The source's annotation ``mirror.opd.dev/refused-targets``: what it asked for and did not get.
    (Secrets and ConfigMaps have no status: a handler's result would be dropped by the apiserver.)"""
    meta = body["metadata"]
    want = _listing(sorted(refused)) if refused else None
    if (meta.get("annotations") or {}).get(REFUSED) == want or meta.get("deletionTimestamp"):
        return
    patch = {"metadata": {"annotations": {REFUSED: want}}}
    path = f"/api/v1/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
    try:
        await rest.request(state.api, "PATCH", path, body=patch, content_type=rest.MERGE_PATCH)
    except client.ApiException as exc:
        if exc.status != 404:  # deleted meanwhile: nothing to record on
            raise


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


def forget(state: State, body: Mapping[str, Any]) -> None:
    """A source is gone: nothing of it to remember."""
    uid = body["metadata"]["uid"]
    state.reported -= {r for r in state.reported if r[0] == uid}


def _forget(state: State, uid: str, problem: str, *, keep: Iterable[str]) -> None:
    """Drop the reports of ``problem`` for namespaces where it is gone: if it comes back, it is said again."""
    keep = set(keep)
    state.reported -= {r for r in state.reported if r[0] == uid and r[2] == problem and r[1] not in keep}


def _report(state: State, body: Mapping[str, Any], namespace: str, problem: str, reason: str, message: str,
            logger: Any) -> None:
    key = (body["metadata"]["uid"], namespace, problem)
    if key in state.reported:
        return
    state.reported.add(key)
    logger.warning(f"mirror: {message}")
    opd.warn(body, reason=reason, message=message)
