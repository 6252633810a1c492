"""The plugin's table ``[plugins.mirror]``: its options as opd checks them, and as the plugin reads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import opd

from opd_mirror import rules as rules_
from opd_mirror.rules import Rule

TABLE = "[plugins.mirror]"
# Keys of the first version, which let every served namespace publish into every allowed one.
# Refused in one line rather than translated: a faithful translation would need the namespaces opd
# serves the plugin (which a plugin is not told), and a broad glob translated would keep the hole.
RETIRED = ("allowed_targets", "targets")
_ANY = (str, int, float, bool, list, dict)


def _seconds(value: float) -> str | None:
    return None if value >= 0 else f"expected seconds >= 0, got {value!r}"


def _retired(_: Any) -> str:
    return ('no longer read: write one [[plugins.mirror.rules]] per source namespace, with from = "<namespace>" '
            'and to = ["<namespace>", ...] (see the opd-mirror README)')


OPTIONS = [
    opd.Option("rules", list, items=dict, default=[], check=rules_.problem,
               help='source→target rules: [[plugins.mirror.rules]] from = "<namespace>", to = ["<namespace>", ...], '
                    'names = ["<glob>", ...] (optional); default: none, nothing is copied'),
    opd.Option("resync", float, default=60.0, check=_seconds,
               help="seconds between re-checks of each source's copies; 0: never"),
    *(opd.Option(key, _ANY, default=None, check=_retired, help="retired: see rules") for key in RETIRED),
]


@dataclass(frozen=True)
class Config:
    # Nothing is copied anywhere unless a rule says from where to where: opd's identity can write
    # where a source's author cannot.
    rules: tuple[Rule, ...] = ()
    resync: float = 60.0

    def targets_for(self, namespace: str, name: str) -> set[str]:
        """The namespaces a source ``namespace/name`` may be copied into: the union of its rules' targets."""
        return {t for rule in self.rules if rule.takes(namespace, name) for t in rule.targets
                if t != namespace and not rules_.refused(t)}

    def sources(self) -> set[str]:
        return rules_.sources(self.rules)

    def destinations(self) -> set[str]:
        return rules_.destinations(self.rules)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Config:
        """From the table as opd hands it over: checked against ``OPTIONS``, defaults filled in."""
        for key in RETIRED:
            if config.get(key) is not None:
                raise opd.ConfigError(f"{TABLE}.{key}: {_retired(None)}")
        try:
            parsed = rules_.parse(config["rules"])
        except rules_.RulesError as exc:
            raise opd.ConfigError(f"{TABLE}.rules: {exc}") from None
        return cls(rules=parsed, resync=float(config["resync"]))
