"""The hooks an operator plugin may implement (each optional; an implementation may take fewer arguments).

opd calls them in this order, once per load of the plugin: ``opd_options`` (to check the
plugin's table and fill in its defaults), ``opd_register``, ``opd_configure``, ``opd_namespaces``.
``opd_rbac`` is called only by ``opd rbac`` and ``opd manifests``, after those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opd.plugin import hookspec
from opd.plugin.options import Option
from opd.registry import OperatorRegistry
from opd.settings import OperatorSettings


@hookspec
def opd_options() -> list[Option]:  # type: ignore[empty-body]
    """The keys the plugin reads from its table ``[plugins.<name>]``: names, types, defaults, help.

    With it, ``opd config check`` reports unknown keys, wrong types and missing required
    keys in the table as it does for opd's own, and ``config`` has every default filled in.
    Without it, the table is handed over unchecked.
    """


@hookspec
def opd_register(registry: OperatorRegistry, config: dict[str, Any]) -> None:
    """Register the plugin's handlers into ``registry``, its own (never shared with other plugins).

    ``config`` is the plugin's table ``[plugins.<name>]`` from opd.toml, without the keys opd
    itself reads there (``namespaces``, ``clusterwide``, ``isolation``), with the defaults of
    ``opd_options`` filled in; empty when absent and undeclared. A copy: changes stay the plugin's.
    """


@hookspec
def opd_configure(settings: OperatorSettings, config: dict[str, Any]) -> None:
    """Tune the plugin's own ``settings``; called after ``opd_register``, with the same ``config``.

    opd has already given the plugin its own persistence names (annotation prefix and
    finalizer ``<name>.opd.dev``, markers in ``.status.opd-<name>``, handler results in
    ``.status.<name>``), so that no two plugins ever touch each other's data on a shared
    object; change them only knowingly (a clash fails the later plugin).
    """


@hookspec
def opd_namespaces(config: dict[str, Any]) -> list[str] | None:
    """The namespaces (names) the plugin's handlers need, or None: wherever opd serves it.

    opd then serves the plugin only those of them that its table (or ``[opd]``) serves: a plugin
    narrows where opd watches for it, and what ``opd rbac`` grants its handlers (Roles in those
    namespaces), never widens it. A needed namespace that is not served is said once at load; none
    served fails the plugin in one line. ``config`` is the plugin's table, as ``opd_register`` gets it.
    """


@hookspec
def opd_rbac(  # type: ignore[empty-body]
    config: dict[str, Any], resources: list[dict[str, list[str]]],
    lookup: Callable[[str, str], dict[str, list[str]] | None],
) -> list[dict[str, Any]]:
    """The Kubernetes permissions the plugin needs for its own API calls (through the ``api`` kwarg).

    ``opd rbac`` grants what opd itself does for the plugin's handlers (list, watch, patch of their
    resources, their status, Events); this hook adds the rest, as PolicyRules: dicts with
    ``apiGroups``, ``resources``, ``verbs`` and optionally ``resourceNames``, or ``nonResourceURLs``
    and ``verbs``. Each rule applies where the plugin runs (its namespaces, or cluster-wide) unless
    it says otherwise with one of two keys of opd's: ``namespaces`` (a list of namespace names: a
    Role in each) or ``clusterwide = True`` (the ClusterRole). A rule on a cluster-scoped resource
    always goes to the ClusterRole.

    ``config`` is the plugin's table, as ``opd_register`` gets it. ``resources`` has one
    ``{"apiGroups": [group], "resources": [plural]}`` per resource its handlers serve, resolved by
    API discovery (add ``verbs`` to make a rule of one). ``lookup(api_version, kind)`` gives the same
    for any kind the API server serves (``lookup("v1", "ConfigMap")``), None for one it does not.
    """
