"""Bringing a source's copies in step: copy to its allowed targets, refuse the others, prune the stale ones.

Every write goes through ``_write``, which refuses a namespace outside ``allowed_targets``: the
allow-list bounds what opd's identity does on behalf of a source's author (creates, updates and
deletes alike), whatever the source asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import opd
from kubernetes_asyncio import client
from opd.kube import plain

from opd_mirror import patterns
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


async def reconcile(state: State, plural: str, body: Mapping[str, Any], logger: Any) -> None:
    annotations = body["metadata"].get("annotations") or {}
    if MIRRORED_FROM in annotations:
        # A copy labelled as a source by hand: mirroring it could copy copies around in circles.
        _report(state, body, "", "copy", "MirrorIgnored",
                f"not mirroring: this is a copy of {annotations[MIRRORED_FROM]} ({MIRRORED_FROM}), never a source",
                logger)
        return
    wanted = await _wanted(state, body, logger)
    allowed = {ns for ns in wanted if state.cfg.allows(ns)}
    refused = wanted - allowed
    _report_refused(state, body, refused, logger)
    for namespace in sorted(allowed):
        await _copy(state, plural, body, namespace, logger)
    await prune(state, plural, body, keep=allowed, logger=logger)
    await _record_refused(state, plural, body, refused)


async def _wanted(state: State, body: Mapping[str, Any], logger: Any) -> set[str]:
    """The namespaces the source asks for (its annotation, else the config's targets), never its own."""
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    wanted = patterns.split(annotations[TARGETS]) if TARGETS in annotations else list(state.cfg.targets)
    bad = [p for p in wanted if not patterns.PATTERN.fullmatch(p)]
    if bad:
        _report(state, body, "", f"bad:{','.join(bad)}", "MirrorTargets",
                f"{TARGETS}: ignoring what is not a namespace name or glob: {', '.join(map(repr, bad))}", logger)
        wanted = [p for p in wanted if p not in bad]
    names = {p for p in wanted if patterns.is_name(p)}
    if any(not patterns.is_name(p.removeprefix("!")) for p in wanted):
        # Globs need the namespaces that exist now; new ones get their copy at the next resync.
        found = await plain.request(state.api, "GET", "/api/v1/namespaces")
        names |= {ns["metadata"]["name"] for ns in found.get("items", [])
                  if (ns.get("status") or {}).get("phase") != "Terminating"}
    return {n for n in names if patterns.matches(n, wanted)} - {meta["namespace"]}


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
        existing = await plain.request(state.api, "GET", path)
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
            await _delete(state, namespace, path, existing["metadata"]["uid"])
            existing = None
    if existing is None:
        try:
            await _write(state, namespace, "POST", f"/api/v1/namespaces/{namespace}/{plural}", desired)
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
        await _write(state, namespace, "PATCH", path, patch)
        logger.info(f"mirror: updated {namespace}/{name}")
    state.reported -= {(uid, namespace, p) for p in ("conflict", "namespace")}


async def prune(state: State, plural: str, body: Mapping[str, Any], *, keep: set[str], logger: Any) -> None:
    """Delete the source's copies outside ``keep`` (found by the uid label, anywhere in the cluster);
    a copy in a namespace no longer in ``allowed_targets`` is left as it is, and said so once."""
    uid = body["metadata"]["uid"]
    found = await plain.request(state.api, "GET", f"/api/v1/{plural}", query={"labelSelector": f"{SOURCE_UID}={uid}"})
    left: set[str] = set()
    for item in found.get("items", []):
        meta = item["metadata"]
        namespace = meta["namespace"]
        if namespace in keep or (meta.get("annotations") or {}).get(MIRRORED_FROM) != source_id(body):
            continue
        if not state.cfg.allows(namespace):
            left.add(namespace)
            _report(state, body, namespace, "left", "MirrorCopyLeft",
                    f"left the copy {namespace}/{meta['name']} as it is, no longer updated: {namespace} is not in "
                    f"{TABLE}.allowed_targets, where opd writes nothing (delete it by hand if it is not wanted)",
                    logger)
            continue
        await _delete(state, namespace, f"/api/v1/namespaces/{namespace}/{plural}/{meta['name']}", meta["uid"])
        logger.info(f"mirror: deleted the copy {namespace}/{meta['name']}")
    _forget(state, uid, "left", keep=left)


async def _delete(state: State, namespace: str, path: str, uid: str) -> None:
    # The uid precondition: never delete a newer object that took the name meanwhile.
    try:
        await _write(state, namespace, "DELETE", path, {"preconditions": {"uid": uid}})
    except client.ApiException as exc:
        if exc.status not in (404, 409):
            raise


async def _write(state: State, namespace: str, method: str, path: str, body: Mapping[str, Any]) -> None:
    """The only place that writes copies: never in a namespace outside ``allowed_targets``."""
    if not state.cfg.allows(namespace):
        raise opd.PermanentError(f"mirror: refusing to write in {namespace}: not in {TABLE}.allowed_targets")
    if method == "PATCH":
        await plain.request(state.api, method, path, body=body, content_type=plain.MERGE_PATCH)
    else:
        await plain.request(state.api, method, path, body=body)


def _report_refused(state: State, body: Mapping[str, Any], refused: set[str], logger: Any) -> None:
    """One log line and one Warning Event for the targets refused since the last report (each once)."""
    uid = body["metadata"]["uid"]
    new = sorted(ns for ns in refused if (uid, ns, "refused") not in state.reported)
    _forget(state, uid, "refused", keep=refused)
    if not new:
        return
    state.reported |= {(uid, ns, "refused") for ns in new}
    message = f"not copying to {_listing(new)}: not in {TABLE}.allowed_targets"
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
        await plain.request(state.api, "PATCH", path, body=patch, content_type=plain.MERGE_PATCH)
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
