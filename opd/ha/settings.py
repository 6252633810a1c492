"""How replicas coordinate: the mode, the Leases' names, this replica's identity, the timings.

The timings are client-go's (and controller-runtime's) defaults and mean what they mean there:
a holder renews every ``retry_period``; one that has not renewed within ``renew_deadline`` of its
last renewal's start stops acting; another replica takes a lease over once it has seen it
unchanged for ``lease_duration``. Every replica of a group should run with the same timings: a
record's own ``leaseDurationSeconds`` is honoured only up to ``MAX_HONOURED`` x ``lease_duration``.

The identity names this replica in the Leases and must be unique per process: by default
``$OPD_HA_IDENTITY`` when set (the generated Deployment sets it to the pod's name through the
downward API) and nothing else, otherwise ``<hostname>_<random UUID>`` (as client-go), never a
name two containers could share (equal hostnames and PID 1). A replica that finds its own
identity renewed by another process says so and stops acting (see ``opd.ha.election``).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass, field

from opd.errors import ConfigError

MODES = ("leader", "shards")
# How a replica in shards mode gets only its shards' events: "auto" takes the first the cluster offers
# (the server's KEP-5866 shardSelector where it honours it, else labels), "server" (the server's, else
# client: no label ever written), "labels" (a shard label on each object, by one replica, the
# labeller; each watches its shards' labels), "client" (every event comes; those of other shards are
# dropped).
FILTERINGS = ("auto", "server", "labels", "client")
MAX_SHARDS = 1024
MAX_IDENTITY = 253  # characters: a pod's name fits, as does a hostname and a UUID
IDENTITY_VARIABLE = "OPD_HA_IDENTITY"
# Names derived from the lease's: "<lease>-<shard>" (up to "-1023"), "<lease>-members", "<lease>-labeller".
_LONGEST_SUFFIX = len("-labeller")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def default_identity(environ: dict[str, str] | None = None) -> str:
    """``$OPD_HA_IDENTITY`` when set (the pod's name, from the downward API), else
    ``<hostname>_<random UUID>``: unique per process, also for containers with one hostname and PID 1."""
    given = (os.environ if environ is None else environ).get(IDENTITY_VARIABLE, "").strip()
    return given or f"{socket.gethostname()}_{uuid.uuid4()}"


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
    filtering: str = "auto"  # shards mode: one of FILTERINGS

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
        elif len(self.identity) > MAX_IDENTITY or not self.identity.isprintable():
            found.append(("identity", f"expected at most {MAX_IDENTITY} printable characters, got "
                                      f"{len(self.identity)} characters"))
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            found.append(("lease_duration", f"expected lease_duration > renew_deadline > retry_period > 0, got "
                                            f"{self.lease_duration:g} > {self.renew_deadline:g} > "
                                            f"{self.retry_period:g}"))
        if self.filtering not in FILTERINGS:
            found.append(("filtering", f"expected one of {', '.join(FILTERINGS)}, got {self.filtering!r}"))
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
