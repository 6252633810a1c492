"""The plugin's table ``[plugins.mirror]``: its options as opd checks them, and as the plugin reads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import opd

from opd_mirror import patterns

TABLE = "[plugins.mirror]"


def _seconds(value: float) -> str | None:
    return None if value >= 0 else f"expected seconds >= 0, got {value!r}"


OPTIONS = [
    opd.Option("allowed_targets", list, items=str, default=[], check=patterns.problem,
               help="namespaces (names, globs, !exclusions) where copies may be written; default: none"),
    opd.Option("targets", list, items=str, default=[], check=patterns.problem,
               help="namespaces (names or globs) for sources without the annotation opd.dev/mirror-to"),
    opd.Option("resync", float, default=60.0, check=_seconds,
               help="seconds between re-checks of each source's copies; 0: never"),
]


@dataclass(frozen=True)
class Config:
    # Where copies may be written at all: opd's identity can write where a source's author cannot,
    # so nothing is allowed unless the daemon's admin says so.
    allowed_targets: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    resync: float = 60.0

    def allows(self, namespace: str) -> bool:
        return patterns.matches(namespace, self.allowed_targets)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Config:
        """From the table as opd hands it over: checked against ``OPTIONS``, defaults filled in."""
        cfg = cls(allowed_targets=tuple(config["allowed_targets"]), targets=tuple(config["targets"]),
                  resync=float(config["resync"]))
        # A default target that can never be written is a mistake in the file, not at every source.
        refused = [t for t in cfg.targets if patterns.is_name(t) and not cfg.allows(t)]
        if refused:
            allowed = f"[{', '.join(map(repr, cfg.allowed_targets))}]" if cfg.allowed_targets else "none (the default)"
            raise opd.ConfigError(f"{TABLE}.targets: {refused[0]!r} is not in allowed_targets, which allows {allowed}")
        return cfg
