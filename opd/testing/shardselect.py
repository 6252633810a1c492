"""KEP-5866's sharded LIST/WATCH as the fault proxy emulates it (``FaultProxy(shards=...)``): the
``shardSelector`` grammar (``shardRange(object.metadata.uid|namespace, '0x<start>', '0x<end>')``
joined by ``||``), the 64-bit FNV-1a hash the API server applies, and what the emulation counts.
Written apart from ``opd.ha.shards`` on purpose: a test that checks opd against it checks more."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from typing import Any

_SPACE = 1 << 64
_FIELDS = ("object.metadata.uid", "object.metadata.namespace")
_RANGE = re.compile(r"\s*shardRange\(\s*(object\.metadata\.[a-z]+)\s*,\s*'0x([0-9a-fA-F]{1,17})'\s*,"
                    r"\s*'0x([0-9a-fA-F]{1,17})'\s*\)\s*")
_MAX_SELECTOR = 65536  # characters of a selector parsed at most


def fnv1a_64(text: str) -> int:
    """64-bit FNV-1a over the UTF-8 bytes (offset basis 14695981039346656037, prime 1099511628211)."""
    value = 14695981039346656037
    for byte in text.encode("utf-8"):
        value ^= byte
        value = (value * 1099511628211) % _SPACE
    return value


def parse_shard_selector(text: str) -> list[tuple[str, int, int]]:
    """(field, start, end) of each ``shardRange`` of a selector; ValueError when it is not one."""
    if not text or len(text) > _MAX_SELECTOR:
        raise ValueError("empty or too long")
    ranges = []
    for term in text.split("||"):
        found = _RANGE.fullmatch(term)
        if found is None:
            raise ValueError(f"not a shardRange(): {term.strip()[:80]!r}")
        path, start, end = found.group(1), int(found.group(2), 16), int(found.group(3), 16)
        if path not in _FIELDS:
            raise ValueError(f"unsupported field {path!r}")
        if not start < end <= _SPACE:
            raise ValueError(f"empty or out of range: [{start:#x}, {end:#x})")
        ranges.append((path, start, end))
    return ranges


def selected(obj: Any, ranges: list[tuple[str, int, int]]) -> bool:
    """Whether an item or event object falls in one of the ranges (a non-object passes as it came)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return True  # not an object of the collection (a Status): as it came
    for path, start, end in ranges:
        value = meta.get(path.rsplit(".", 1)[1])
        if isinstance(value, str) and start <= fnv1a_64(value) < end:
            return True
    return False


@dataclass(frozen=True)
class ShardEmulation:
    """How the proxy speaks TLS when it emulates KEP-5866: the serving certificate and key the
    clients trust (a local control plane's ``pki/apiserver.crt``, ``.key``), and the CA that
    verifies the target."""

    certfile: str
    keyfile: str
    cafile: str
    honour: bool = True  # False: an older server's part: shardSelector passed on as it came (the target ignores it)


@dataclass
class ShardStats:
    """What the emulation did, by selector asked (read from any thread: counters only)."""

    asked: collections.Counter[str] = field(default_factory=collections.Counter)  # requests, by selector
    listed: int = 0  # LIST items sent on sharded requests
    events: int = 0  # WATCH events (ADDED, MODIFIED, DELETED) sent on sharded requests
    held_back: int = 0  # items and events of other ranges, not sent
    refused: int = 0  # selectors refused (400)
    sent: collections.Counter[str] = field(default_factory=collections.Counter)  # uid -> items and events sent
