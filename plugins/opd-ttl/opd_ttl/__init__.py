"""opd-ttl: deletes objects whose annotation ``opd.dev/ttl`` has expired since their creation.

A TTL is seconds (``"90"``) or a duration (``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"``),
counted from ``metadata.creationTimestamp``. A timer per annotated object checks it every
``interval`` seconds, so an object goes at most ``interval`` seconds after it expired.
The options (``[plugins.ttl]``) are declared in ``opd_options``: opd checks the table.

Whoever may annotate an object of a watched kind can have opd delete it, with opd's rights: so
the plugin acts only in the namespaces ``allowed_namespaces`` allows (by default every one but
``kube-*``), on a Namespace only when its name is allowed, and never on other cluster-scoped objects.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from collections.abc import Mapping
from typing import Any

import opd
from kubernetes_asyncio import client
from opd import rest

__all__ = ["allows", "opd_options", "opd_rbac", "opd_register", "parse_ttl"]

TTL = "opd.dev/ttl"
MEMO_KEY = "opd_ttl"  # one memo may serve several plugins: keep ours under one key
FORMATS = "seconds ('90') or a duration ('30s', '5m', '2h', '1d', '1h30m')"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SECONDS = re.compile(r"\d+(\.\d+)?")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_NAMESPACE_PATTERN = re.compile(r"!?[-a-z0-9*?\[\]]{1,63}")
_MAX_PATTERNS = 100
DEFAULT_NAMESPACES = ["*", "!kube-*"]  # kube-system, kube-public, kube-node-lease: the cluster's own


def parse_ttl(text: str) -> float | None:
    """Seconds, or None when ``text`` is not a TTL."""
    text = text.strip().lower()
    if _SECONDS.fullmatch(text):
        return float(text)
    if _DURATION.fullmatch(text):
        return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(text))
    return None


def _resource_names(names: list[str]) -> str | None:
    if not names:
        return 'expected at least one resource name, e.g. ["configmaps", "secrets"]'
    if not all(name.strip() for name in names):
        return "expected resource names, got an empty string"
    return None


def _namespace_patterns(patterns: list[str]) -> str | None:
    if len(patterns) > _MAX_PATTERNS:
        return f"{len(patterns)} patterns: at most {_MAX_PATTERNS}"
    bad = [p for p in patterns if not _NAMESPACE_PATTERN.fullmatch(p)]
    if bad:
        shown = " ".join(repr(bad[0])[:70].split())
        return f"expected namespace names or globs (!glob excludes), got {shown}"
    if patterns and all(p.startswith("!") for p in patterns):
        return 'only exclusions, which allow nothing: add a glob, e.g. ["*", "!kube-*"]'
    return None


def allows(patterns: list[str], body: Mapping[str, Any]) -> bool:
    """Whether the plugin may act on ``body``: its namespace (a Namespace: its name) is included by a
    pattern and excluded by no ``!pattern``. Other cluster-scoped objects are in no namespace: never."""
    meta = body.get("metadata") or {}
    where = meta.get("namespace") or (meta.get("name") if body.get("kind") == "Namespace" else None)
    if not isinstance(where, str):
        return False
    included = any(fnmatch.fnmatchcase(where, p) for p in patterns if not p.startswith("!"))
    return included and not any(fnmatch.fnmatchcase(where, p[1:]) for p in patterns if p.startswith("!"))


def _positive(seconds: float) -> str | None:
    return None if seconds > 0 else f"expected seconds > 0, got {seconds:g}"


@opd.hookimpl
def opd_options() -> list[opd.Option]:
    return [
        opd.Option("resources", list, items=str, default=["configmaps"], check=_resource_names,
                   help="where to look for the annotation: any resource names opd resolves"),
        opd.Option("interval", float, default=30.0, check=_positive,
                   help="seconds between checks of each annotated object"),
        opd.Option("allowed_namespaces", list, items=str, default=DEFAULT_NAMESPACES, check=_namespace_patterns,
                   help="where objects may be deleted: namespace names or globs, !glob excludes (a Namespace "
                        "counts by its name; other cluster-scoped objects never)"),
    ]


def _valid(value: str, **_: Any) -> bool:
    return parse_ttl(value) is not None


def _invalid(value: str, **_: Any) -> bool:
    return parse_ttl(value) is None


def _object_path(body: Mapping[str, Any], plural: str) -> str:
    api_version, meta = body["apiVersion"], body["metadata"]
    parts = ["/api/v1" if "/" not in api_version else f"/apis/{api_version}"]
    if meta.get("namespace"):
        parts.append(f"namespaces/{meta['namespace']}")
    parts += [plural, meta["name"]]
    return "/".join(parts)


def expires_at(body: Mapping[str, Any], ttl: float) -> datetime.datetime:
    created = datetime.datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    return created + datetime.timedelta(seconds=ttl)


@opd.hookimpl
def opd_register(registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
    # opd has checked the table against opd_options and filled in the defaults.
    interval: float = config["interval"]
    allowed: list[str] = list(config["allowed_namespaces"])

    @opd.on.startup(registry=registry, id="ttl_connect")
    async def connect(memo: opd.Memo, api: client.ApiClient, **_: Any) -> None:
        # opd's own client: the cluster and credentials the daemon was configured with.
        # (uid, value) of invalid TTLs already reported by a timer: each one is said once.
        memo[MEMO_KEY] = {"api": api, "reported": set()}

    @opd.on.cleanup(registry=registry, id="ttl_disconnect")
    async def disconnect(memo: opd.Memo, **_: Any) -> None:
        memo.pop(MEMO_KEY, None)  # the client is opd's: it closes it

    for name in dict.fromkeys(r.strip() for r in config["resources"]):
        _register_resource(registry, name, interval, allowed)


@opd.hookimpl
def opd_rbac(resources: list[dict[str, list[str]]]) -> list[dict[str, Any]]:
    # The plugin's own call: expire() deletes an expired object, of the resources its handlers serve
    # (opd grants list, watch and patch of those itself), where the plugin runs.
    return [{**resource, "verbs": ["delete"]} for resource in resources]


def _register_resource(registry: opd.OperatorRegistry, name: str, interval: float, allowed: list[str]) -> None:
    # Objects outside allowed_namespaces are not selected: opd writes nothing to them (no marker,
    # no finalizer, no Event) and the plugin never deletes them.
    def in_scope(body: dict[str, Any], **_: Any) -> bool:
        return allows(allowed, body)

    # A create handler, not the timer, reports an invalid TTL: its PermanentError is final and
    # recorded on the object, so the report is made once, and no timer (nor finalizer) is kept
    # for an object that will never expire. opd posts its own "Failed" Event too.
    @opd.on.create(name, registry=registry, id="invalid_ttl", annotations={TTL: _invalid}, when=in_scope)
    def invalid_ttl(body: dict[str, Any], annotations: dict[str, str], **_: Any) -> None:
        message = f"{TTL}: {annotations[TTL]!r} is not a TTL: expected {FORMATS}; the object is kept"
        opd.warn(body, reason="InvalidTTL", message=message)
        raise opd.PermanentError(message)

    @opd.on.timer(name, registry=registry, id="expire", interval=interval, annotations={TTL: _valid}, when=in_scope)
    async def expire(body: dict[str, Any], annotations: dict[str, str], resource: Any, memo: opd.Memo,
                     logger: Any, **_: Any) -> None:
        state = memo[MEMO_KEY]
        meta = body["metadata"]
        value = annotations.get(TTL)
        ttl = parse_ttl(value) if value is not None else None
        if ttl is None:
            # A running timer sees every later edit (opd leaves opd.dev/ annotations out of its change
            # detection, so no update handler would): an edit to an invalid value keeps the object.
            if value is not None and (meta["uid"], value) not in state["reported"]:
                state["reported"].add((meta["uid"], value))
                message = f"{TTL}: {value!r} is not a TTL: expected {FORMATS}; the object is kept"
                logger.warning(f"ttl: {message}")
                opd.warn(body, reason="InvalidTTL", message=message)
            return
        if not allows(allowed, body):  # the filter's job; checked again where the delete is sent
            return
        deadline = expires_at(body, ttl)
        if datetime.datetime.now(datetime.UTC) < deadline:
            return
        try:
            # The uid precondition: never delete a newer object that took the name meanwhile.
            await rest.request(state["api"], "DELETE", _object_path(body, resource.plural),
                                body={"preconditions": {"uid": meta["uid"]}})
        except client.ApiException as exc:
            if exc.status in (404, 409):  # gone already, or another object by now
                return
            raise
        logger.info(f"ttl: deleted: {TTL} {value!r} expired at {deadline.isoformat(timespec='seconds')}")
        opd.info(body, reason="Expired", message=f"Deleted: {TTL} {value!r} expired.")
