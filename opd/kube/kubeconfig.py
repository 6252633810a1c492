"""Reading kubeconfig files as kubectl does, without a client library's models.

Several files (``$KUBECONFIG``, separated by ``os.pathsep``) merge as kubectl merges them: the
first file that names a cluster, user or context wins it, and the first non-empty
``current-context`` wins. Paths inside a file are relative to that file. Every value is checked
for its type before use; a malformed file costs one line naming the file and the key (never the
value: it may be a token).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opd.errors import ConfigError

# A kubeconfig is a few KiB; a big one with hundreds of contexts stays well under this.
MAX_FILE_BYTES = 4 * 1024 * 1024


class KubeconfigError(ConfigError):
    """A kubeconfig that cannot be used: missing, malformed, or naming what it does not hold."""


def _yaml() -> Any:
    return importlib.import_module("yaml")  # typed stubs are not a dependency


def one_line_yaml(exc: BaseException) -> str:
    """A YAML error as where and what, never the text it quotes (a token, maybe)."""
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", "") or type(exc).__name__)
    problem = " ".join(re.sub(r"'[^']*'|\"[^\"]*\"", "...", problem).split())[:120]
    if mark is None:
        return f"malformed YAML: {problem}"
    return f"malformed YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_file(path: Path) -> Mapping[str, Any]:
    """One kubeconfig file as a mapping (empty for an empty file)."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise KubeconfigError(f"kubeconfig {path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    yaml = _yaml()
    loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    try:
        doc = yaml.load(raw, Loader=loader)  # a safe loader, chosen above
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path}: {one_line_yaml(exc)}") from None
    except (RecursionError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise KubeconfigError(f"kubeconfig {path}: malformed ({type(exc).__name__})") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise KubeconfigError(f"kubeconfig {path}: expected a mapping at the top, got {_kind(doc)}")
    return doc


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Entry:
    """One named cluster, user or context: its body and the file it came from (its paths' base)."""

    name: str
    body: Mapping[str, Any]
    path: Path
    where: str  # e.g. users[name=admin].user, for messages

    def fail(self, key: str, problem: str) -> KubeconfigError:
        return KubeconfigError(f"kubeconfig {self.path}: {self.where}.{key}: {problem}")

    def string(self, key: str) -> str | None:
        value = self.body.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)}")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.body.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def section(self, key: str) -> Entry | None:
        value = self.body.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        return Entry(self.name, value, self.path, f"{self.where}.{key}")

    def file(self, key: str) -> Path | None:
        """A path, relative to the file that holds it (as kubectl reads it)."""
        value = self.string(key)
        if value is None:
            return None
        return self.path.parent / os.path.expanduser(value)

    def data(self, key: str) -> bytes | None:
        """Base64 data (``certificate-authority-data`` and the like), decoded."""
        value = self.string(key)
        if value is None:
            return None
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise self.fail(key, "not base64") from None


@dataclass(frozen=True)
class Kubeconfig:
    """One or more kubeconfig files, merged."""

    paths: tuple[Path, ...]
    current_context: str | None
    current_context_path: Path | None
    clusters: Mapping[str, Entry]
    users: Mapping[str, Entry]
    contexts: Mapping[str, Entry]


_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


def read(paths: str) -> Kubeconfig:
    """The files of ``paths`` (``os.pathsep``-separated; those that do not exist are skipped, as
    kubectl skips them), merged. At least one must exist."""
    existing = [Path(p).expanduser() for p in paths.split(os.pathsep) if p]
    existing = [p for p in existing if p.exists()]
    if not existing:
        raise KubeconfigError(f"kubeconfig {paths.split(os.pathsep)[0]}: no such file")
    merged: dict[str, dict[str, Entry]] = {plural: {} for plural, _ in _SECTIONS}
    current: str | None = None
    current_path: Path | None = None
    for path in dict.fromkeys(existing):  # a file named twice is read once
        doc = load_file(path)
        for plural, singular in _SECTIONS:
            items = doc.get(plural)
            if items is None:
                continue
            if not isinstance(items, list):
                raise KubeconfigError(f"kubeconfig {path}: {plural}: expected a list, got {_kind(items)}")
            for index, item in enumerate(items):
                if not isinstance(item, Mapping):
                    raise KubeconfigError(f"kubeconfig {path}: {plural}[{index}]: expected a mapping, "
                                          f"got {_kind(item)}")
                name = item.get("name")
                if not isinstance(name, str) or not name:
                    raise KubeconfigError(f"kubeconfig {path}: {plural}[{index}].name: expected a name, "
                                          f"got {_kind(name)}")
                body = item.get(singular)
                if body is None:
                    body = {}
                if not isinstance(body, Mapping):
                    raise KubeconfigError(f"kubeconfig {path}: {plural}[name={name}].{singular}: "
                                          f"expected a mapping, got {_kind(body)}")
                merged[plural].setdefault(name, Entry(name, body, path, f"{plural}[name={name}].{singular}"))
        context = doc.get("current-context")
        if context is not None and not isinstance(context, str):
            raise KubeconfigError(f"kubeconfig {path}: current-context: expected a string, got {_kind(context)}")
        if context and current is None:
            current, current_path = context, path
    return Kubeconfig(tuple(dict.fromkeys(existing)), current, current_path,
                      merged["clusters"], merged["users"], merged["contexts"])


@dataclass(frozen=True)
class Selected:
    """One context of a kubeconfig: its cluster and its user (None: no user, anonymous)."""

    context: Entry
    cluster: Entry
    user: Entry | None


def select(config: Kubeconfig, context: str | None = None) -> Selected:
    """The context named ``context`` (None: the current one), its cluster and user."""
    first = config.paths[0]
    name = context or config.current_context
    if not name:
        raise KubeconfigError(f"kubeconfig {first}: no current-context (and no context chosen)")
    chosen = config.contexts.get(name)
    if chosen is None:
        raise KubeconfigError(f"kubeconfig {config.current_context_path or first}: "
                              f"no context named {name!r:.80}")
    cluster_name = chosen.string("cluster")
    if cluster_name is None:
        raise chosen.fail("cluster", "missing")
    cluster = config.clusters.get(cluster_name)
    if cluster is None:
        raise chosen.fail("cluster", f"no cluster named {cluster_name!r:.80}")
    user_name = chosen.string("user")
    user = None
    if user_name is not None:
        user = config.users.get(user_name)
        if user is None:
            raise chosen.fail("user", f"no user named {user_name!r:.80}")
    return Selected(chosen, cluster, user)
