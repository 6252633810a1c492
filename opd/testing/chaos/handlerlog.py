"""The handler log: one line per handler run, appended atomically, counted exactly."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_fds: dict[str, int] = {}
_fds_lock = threading.Lock()


def record(log: str | os.PathLike[str], kind: str, uid: str, name: str = "") -> None:
    """Append one line ``time pid kind uid name`` to the handler log.

    One write(2) on an O_APPEND descriptor: lines of concurrent threads and processes never
    interleave, and a line written before a SIGKILL is in the file (the kernel has it; no fsync
    is needed unless the machine itself crashes).
    """
    path = os.fspath(log)
    with _fds_lock:
        fd = _fds.get(path)
        if fd is None:
            fd = _fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{time.time():.6f}\t{os.getpid()}\t{kind}\t{uid}\t{name}\n".encode())


@dataclass(frozen=True)
class Entry:
    at: float  # wall-clock time.time() of the write
    pid: int
    kind: str
    uid: str
    name: str


class HandlerLog:
    """The lines ``record()`` wrote: who ran what, for which object, when."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self, kind: str | None = None) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != 5 or (kind is not None and parts[2] != kind):
                continue
            found.append(Entry(float(parts[0]), int(parts[1]), parts[2], parts[3], parts[4]))
        return found

    def counts(self, kind: str) -> collections.Counter[str]:
        """Runs per uid."""
        return collections.Counter(e.uid for e in self.entries(kind))

    def uids(self, kind: str) -> set[str]:
        return {e.uid for e in self.entries(kind)}

    def first(self, kind: str) -> dict[str, Entry]:
        """The first run of ``kind`` per uid."""
        seen: dict[str, Entry] = {}
        for entry in self.entries(kind):
            seen.setdefault(entry.uid, entry)
        return seen


@dataclass(frozen=True)
class Tally:
    """How the handlings of a kind compare with what was expected."""

    expected: int
    handled: int  # expected objects handled at least once
    lost: frozenset[str]  # expected uids never handled
    duplicated: int  # extra runs on expected objects (a handler that ran 3 times counts 2)
    unexpected: int = 0  # uids handled that were not expected at all

    def __str__(self) -> str:
        return f"{len(self.lost)} lost / {self.duplicated} duplicated of {self.expected}"


def tally(expected: Iterable[str], counts: Mapping[str, int]) -> Tally:
    wanted = set(expected)
    handled = {uid for uid in wanted if counts.get(uid, 0) > 0}
    duplicated = sum(max(0, counts.get(uid, 0) - 1) for uid in wanted)
    return Tally(expected=len(wanted), handled=len(handled), lost=frozenset(wanted - handled),
                 duplicated=duplicated, unexpected=len(set(counts) - wanted))
