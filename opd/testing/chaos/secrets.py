"""No token or key may appear in any log: the secrets of a kubeconfig, and a search for them."""

from __future__ import annotations

import base64
import contextlib
import importlib
import re
from collections.abc import Iterable
from pathlib import Path

_PEM_LINE = re.compile(r"^[A-Za-z0-9+/=]{24,}$")


def _pem_needles(pem: str) -> list[str]:
    # Every base64 line of a key: a leak of part of it counts.
    return [line.strip() for line in pem.splitlines() if _PEM_LINE.match(line.strip())]


def secrets_of(kubeconfig: Path | None = None, *, key_files: Iterable[Path] = (),
               extra: Iterable[str] = ()) -> list[str]:
    """Strings that must never show in a log: the kubeconfig's tokens, passwords and client keys,
    and the base64 lines of ``key_files`` (e.g. a local control plane's ``pki/*.key``)."""
    yaml = importlib.import_module("yaml")  # kubernetes_asyncio's dependency; typed stubs are not

    needles = [s for s in extra if s]
    if kubeconfig is not None:
        config = yaml.safe_load(Path(kubeconfig).read_text()) or {}
        for user in config.get("users") or []:
            data = (user or {}).get("user") or {}
            for key in ("token", "password"):
                if data.get(key):
                    needles.append(str(data[key]))
            if data.get("client-key-data"):
                needles.append(str(data["client-key-data"]))
                pem = base64.b64decode(data["client-key-data"]).decode(errors="replace")
                needles += _pem_needles(pem)
            if data.get("client-key"):
                key_files = [*key_files, Path(data["client-key"])]
            if data.get("tokenFile"):
                with contextlib.suppress(OSError):
                    needles.append(Path(data["tokenFile"]).read_text().strip())
    for path in key_files:
        with contextlib.suppress(OSError):
            needles += _pem_needles(Path(path).read_text())
    return sorted(set(needles))


def find_secrets(paths: Iterable[Path], secrets: Iterable[str]) -> list[tuple[Path, int]]:
    """Every (file, line number) where one of ``secrets`` appears."""
    needles = [s.encode() for s in secrets if s]
    found = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        for number, line in enumerate(data.splitlines(), 1):
            if any(needle in line for needle in needles):
                found.append((Path(path), number))
    return found
