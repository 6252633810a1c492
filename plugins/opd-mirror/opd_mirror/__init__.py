"""opd-mirror: copies labelled Secrets and ConfigMaps into other namespaces, and keeps the copies in step.

A source is a Secret or ConfigMap labelled ``opd.dev/mirror: "true"`` in a namespace the plugin
serves that a rule (``[[plugins.mirror.rules]]``, ``from``/``to``/``names``) takes. It is copied
into its rules' targets, or into those of them that its annotation ``opd.dev/mirror-to``
(comma-separated names or globs, ``!`` to exclude) names; nothing is copied without a rule, never
into ``kube-*``, and no service-account or bootstrap token. Each copy has the source's name, data
(and Secret type), the annotation ``opd.dev/mirrored-from: <namespace>/<name>`` and the label
``opd.dev/mirror-source: <source uid>``.
"""

from __future__ import annotations

from typing import Any

import opd
from kubernetes_asyncio import client

from opd_mirror.config import OPTIONS, Config
from opd_mirror.mirroring import COPIED_FIELDS, LABEL, State, enabled, forget, prune, reconcile, selects

__all__ = ["Config", "opd_namespaces", "opd_options", "opd_rbac", "opd_register"]

MEMO_KEY = "opd_mirror"  # one memo may serve several plugins: keep ours under one key


@opd.hookimpl
def opd_options() -> list[opd.Option]:
    return list(OPTIONS)


@opd.hookimpl
def opd_register(registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
    cfg = Config.of(config)

    @opd.on.startup(registry=registry, id="mirror_connect")
    async def connect(memo: opd.Memo, api: client.ApiClient, logger: Any, **_: Any) -> None:
        # opd's own client: the cluster and credentials the daemon was configured with.
        memo[MEMO_KEY] = State(api=api, cfg=cfg)
        if not cfg.rules:
            logger.warning("mirror: no [[plugins.mirror.rules]]: nothing is watched and no copies are made")

    @opd.on.cleanup(registry=registry, id="mirror_disconnect")
    async def disconnect(memo: opd.Memo, **_: Any) -> None:
        memo.pop(MEMO_KEY, None)  # the client is opd's: it closes it

    if not cfg.rules:
        return  # no handlers: opd watches no Secret nor ConfigMap for this plugin, and asks no rights for it
    for plural in COPIED_FIELDS:
        _register_resource(registry, plural, cfg)


@opd.hookimpl
def opd_namespaces(config: dict[str, Any]) -> list[str] | None:
    # Sources are only in the rules' from namespaces: opd watches (and grants list and watch of)
    # Secrets and ConfigMaps there for this plugin, and nowhere else, whatever [opd] serves.
    cfg = Config.of(config)
    return sorted(cfg.sources()) if cfg.rules else None


@opd.hookimpl
def opd_rbac(config: dict[str, Any]) -> list[dict[str, Any]]:
    # The plugin's own calls, each in the namespaces the rules name (a Role in each): nothing
    # cluster-wide. (opd grants list, watch, get and patch of the sources where it runs the plugin.)
    cfg = Config.of(config)
    if not cfg.rules:
        return []
    copied = {"apiGroups": [""], "resources": sorted(COPIED_FIELDS)}
    return [
        # _copy(), _delete() and prune(): a source's copies, found by their label, in each rule's targets.
        {**copied, "verbs": ["create", "delete", "get", "list", "patch"], "namespaces": sorted(cfg.destinations())},
        # _record_refused(): the refused targets, in an annotation of the source.
        {**copied, "verbs": ["patch"], "namespaces": sorted(cfg.sources())},
    ]


def _register_resource(registry: opd.OperatorRegistry, plural: str, cfg: Config) -> None:
    # The label is required to be PRESENT (a server-side selector: opd lists only sources), and
    # "true" by `when`: a source set to "false" is still seen, so opd can release its finalizer.
    # Sources come only from the namespaces opd serves this plugin (its watch is limited to them),
    # and of those only what a rule takes (by namespace and name): opd touches nothing else.
    def taken(labels: dict[str, str], body: dict[str, Any], **_: Any) -> bool:
        return enabled(labels) and selects(cfg, body)

    selector: dict[str, Any] = {"labels": {LABEL: opd.PRESENT}, "when": taken}

    @opd.on.create(plural, registry=registry, id="mirror", **selector)
    @opd.on.update(plural, registry=registry, id="mirror", **selector)
    @opd.on.resume(plural, registry=registry, id="mirror", **selector)
    async def mirror(body: dict[str, Any], memo: opd.Memo, logger: Any, **_: Any) -> None:
        await reconcile(memo[MEMO_KEY], plural, body, logger)

    @opd.on.delete(plural, registry=registry, id="unmirror", **selector)
    async def unmirror(body: dict[str, Any], memo: opd.Memo, logger: Any, **_: Any) -> None:
        state = memo[MEMO_KEY]
        await prune(state, plural, body, keep=set(), logger=logger)
        forget(state, body)

    if cfg.resync > 0:
        # Repairs copies edited or deleted by hand, and gives new namespaces that match a glob their copy.
        @opd.on.timer(plural, registry=registry, id="resync", interval=cfg.resync, initial_delay=cfg.resync,
                      **selector)
        async def resync(body: dict[str, Any], labels: dict[str, str], memo: opd.Memo, logger: Any,
                         **_: Any) -> None:
            if enabled(labels) and selects(cfg, body) and MEMO_KEY in memo:  # a timer outlives a label set to "false"
                await reconcile(memo[MEMO_KEY], plural, body, logger)
