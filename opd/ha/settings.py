"""How replicas coordinate: the mode, the Leases' names, this replica's identity, the timings.

The timings are client-go's (and controller-runtime's) defaults and mean what they mean there:
a holder renews every ``retry_period``; one that has not renewed within ``renew_deadline`` of its
last renewal's start stops acting; another replica takes a lease over once it has seen it
unchanged for ``lease_duration``.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field

from opd.errors import ConfigError

MODES = ("leader", "shards")
MAX_SHARDS = 1024
# Names derived from the lease's: "<lease>-<shard>" and "<lease>-member-<10 hex digits>".
_LONGEST_SUFFIX = len("-member-") + 10
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def default_identity() -> str:
    """``<hostname>-<pid>``: unique per process, also for two replicas on one host."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class HaSettings:
    mode: str = "leader"  # leader: one replica runs handlers; shards: the objects are split
    lease: str = "opd"  # the Lease's name; shards: <lease>-0 .. <lease>-<shards-1>
    namespace: str = "default"
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    shards: int = 1

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for each problem; empty when the settings can be used."""
        found: list[tuple[str, str]] = []
        if self.mode not in MODES:
            found.append(("mode", f"expected one of {', '.join(MODES)}, got {self.mode!r}"))
        for name, value in (("lease", self.lease), ("namespace", self.namespace)):
            if not _DNS_NAME.fullmatch(value) or len(value) > 253 - (_LONGEST_SUFFIX if name == "lease" else 0):
                longest = 253 - _LONGEST_SUFFIX if name == "lease" else 253
                found.append((name, f"expected a DNS name of at most {longest} characters (lowercase letters, "
                                    f"digits, '-', '.'), got {value!r}"))
        if not self.identity.strip():
            found.append(("identity", "empty"))
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            found.append(("lease_duration", f"expected lease_duration > renew_deadline > retry_period > 0, got "
                                            f"{self.lease_duration:g} > {self.renew_deadline:g} > "
                                            f"{self.retry_period:g}"))
        if not 1 <= self.shards <= MAX_SHARDS:
            found.append(("shards", f"expected a whole number from 1 to {MAX_SHARDS}, got {self.shards!r}"))
        return found

    def check(self, names: dict[str, str] | None = None) -> HaSettings:
        """These settings, or a ConfigError naming the first problem (by ``names[field]``, e.g. a flag)."""
        problems = self.problems()
        if problems:
            key, text = problems[0]
            raise ConfigError(f"{(names or {}).get(key, key)}: {text}")
        return self
