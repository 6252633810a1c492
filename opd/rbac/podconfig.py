"""The config file as a pod runs it: the user's file, with a few keys changed, and its secrets taken out.

In a pod, the kubelet's probes and Prometheus reach the health server from outside the
container, so ``[opd].listen`` is ``0.0.0.0:<port>``; and the credentials are the pod's service
account, so ``[kubernetes]`` says ``in_cluster = true`` and loses ``kubeconfig`` and ``context``
(paths and contexts of the machine where the file was written). With ``[ha]`` on, the Lease is
named after the deployment and kept in its namespace, unless the file names them.

Secrets (keys named like one, at any depth, and options a plugin declares ``secret``) leave the
file for a second one, the Secret's, which ``opd start`` overlays on the first
(``$OPD_CONFIG_SECRETS``, see ``opd.service.config``). A secret inside an array moves with its
whole array (arrays are not merged). The file is edited line by line, so its comments stay (a
commented-out secret assignment goes too), then read back with the secrets overlaid: it must mean
exactly the user's config with those changes. When the lines cannot be cut so, the ConfigMap's
file is written anew from its values, without comments.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opd.errors import OpdError
from opd.plugin.options import table_key
from opd.service import config as daemon_config
from opd.service.config import DaemonConfig, KubernetesSection, Listen
from opd.service.rendering import secret_name, toml_document

DEFAULT_PORT = 8080
SECRETS_FILE = "secrets.toml"  # the Secret's key, and its file's name beside the config
_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*\]\s*(#.*)?")
_ANY_HEADER = re.compile(r"\s*\[")
_TABLE_LINE = re.compile(r"\s*\[\[?([^\[\]#]+)\]\]?\s*(#.*)?\n?")
_KEY_LINE = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
                       r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'))*)\s*=")
_MAX_VALUE_LINES = 200
_COMMENTED_KEY = re.compile(r"\s*#\s*\"?([A-Za-z0-9_.-]+)\"?\s*=")

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class PodConfig:
    """What the pod reads: the ConfigMap's file, the Secret's (None: no secrets), and what they mean."""

    text: str
    secrets: str | None
    moved: tuple[str, ...]  # the keys moved to the Secret, as ``[table].key``
    config: DaemonConfig  # the ConfigMap's file overlaid with the Secret's, as the pod reads them
    rewritten: bool  # the ConfigMap's file was written anew (its comments lost)


def port_of(config: DaemonConfig) -> int:
    return config.opd.listen.port if config.opd.listen is not None else DEFAULT_PORT


def pod_config(config: DaemonConfig, text: str) -> str:
    """``text`` (the file ``config`` was read from) with the pod's listen address and credentials."""
    return for_pod(config, text).text


def for_pod(config: DaemonConfig, text: str, *, declared: Mapping[str, Sequence[str]] | None = None,
            name: str | None = None, namespace: str | None = None, extra_secrets: str | None = None) -> PodConfig:
    """The pod's files for ``config``, read from ``text``: ``declared`` are the options each plugin marks
    secret; ``name``/``namespace``, the deployment's (for the Lease, when the file names none);
    ``extra_secrets``, the text of the secrets file ``config`` was overlaid with, if any."""
    where = str(config.path) if config.path else "the config"
    document = tomllib.loads(text)
    public, secret, moved = split(document, declared or {})
    edited, rewritten = cut(text, moved, public, secret)
    listen = Listen("0.0.0.0", port_of(config))
    edited = _set(edited, "opd", {"listen": f'"{listen}"'})
    edited = _set(edited, "kubernetes", {"kubeconfig": None, "context": None, "in_cluster": "true"})
    ha = config.ha
    if ha.mode != "off":
        written = document.get("ha", {})
        lease = {"lease": name, "lease_namespace": namespace}
        wanted_ha = {k: v for k, v in lease.items() if v is not None and k not in written}
        edited = _set(edited, "ha", {k: f'"{v}"' for k, v in wanted_ha.items()})
        ha = dataclasses.replace(ha, lease=wanted_ha.get("lease", ha.lease),
                                 lease_namespace=wanted_ha.get("lease_namespace", ha.lease_namespace))
    if extra_secrets:
        daemon_config.overlay(secret, tomllib.loads(extra_secrets))
    secrets_text = toml_document(secret) if secret else None
    try:
        back = daemon_config.parse(edited, path=config.path, secrets=(
            (secrets_text, Path(SECRETS_FILE)) if secrets_text is not None else None))
    except daemon_config.ConfigFileError as exc:
        raise OpdError(f"{where}: cannot set [opd].listen and [kubernetes] for the pod: {exc.problems[0]} (write "
                       "them as keys of [opd] and [kubernetes] tables)") from None
    wanted = dataclasses.replace(config, opd=dataclasses.replace(config.opd, listen=listen),
                                 kubernetes=KubernetesSection(in_cluster=True), ha=ha)
    if back != wanted:
        raise OpdError(f"{where}: cannot set [opd].listen and [kubernetes] for the pod by editing the file (write "
                       "them as keys of [opd] and [kubernetes] tables, one per line)")
    return PodConfig(text=edited, secrets=secrets_text, moved=tuple(_name(p) for p in moved), config=back,
                     rewritten=rewritten)


# -- secrets out ------------------------------------------------------------------------------------------------------


def _has_secret(value: Any) -> bool:
    """Whether a value inside an array holds a secret key anywhere (then the whole array moves)."""
    if isinstance(value, Mapping):
        return any(secret_name(k) or _has_secret(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_secret(v) for v in value)


def split(document: Mapping[str, Any], declared: Mapping[str, Sequence[str]]) -> tuple[
        dict[str, Any], dict[str, Any], list[Path_]]:
    """``document`` as two: without its secrets, and the secrets alone (same tables); and the moved keys."""
    public = copy.deepcopy(dict(document))
    secret: dict[str, Any] = {}
    moved: list[Path_] = []

    def walk(table: dict[str, Any], path: Path_) -> None:
        for key in list(table):
            value, here = table[key], (*path, key)
            plugin_option = len(path) == 2 and path[0] == "plugins" and key in declared.get(path[1], ())
            if (secret_name(key) or plugin_option
                    or (isinstance(value, list) and _has_secret(value))):
                moved.append(here)
                target = secret
                for part in path:
                    target = target.setdefault(part, {})
                target[key] = table.pop(key)
            elif isinstance(value, dict):
                walk(value, here)

    walk(public, ())
    return public, secret, moved


def _name(path: Path_) -> str:
    """``("plugins", "x", "token")`` as ``[plugins.x].token``."""
    table = ".".join(table_key(k) for k in path[:-1])
    return f"[{table}].{table_key(path[-1])}" if table else table_key(path[-1])


def _keys(text: str) -> Path_ | None:
    """The dotted key ``a."b c"`` as its parts (TOML reads it: quoting is TOML's)."""
    try:
        value: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(value, dict) and len(value) == 1:
        key, value = next(iter(value.items()))
        parts.append(key)
    return tuple(parts)


def cut(text: str, moved: Sequence[Path_], public: Mapping[str, Any],
        secret: Mapping[str, Any]) -> tuple[str, bool]:
    """``text`` without the lines of the ``moved`` keys, and False; or, when that does not read back as
    ``public`` or still shows a secret string, ``public`` written anew, and True."""
    out: list[str] = []
    table: Path_ = ()
    dropping = False  # in a table (or array of tables) that moved, or a multi-line value that did
    pending: list[str] = []
    for line in text.splitlines(keepends=True):
        if pending:  # the rest of a moved multi-line value
            pending.append(line)
            if len(pending) > _MAX_VALUE_LINES:  # each line parses the value again: long ones are rewritten
                return toml_document(public), True
            if _complete("".join(pending)):
                pending = []
            continue
        header = _TABLE_LINE.fullmatch(line)
        keys = _keys(header.group(1).strip()) if header else None
        if header and keys:
            table = keys
            dropping = any(table[:len(p)] == p for p in moved)
            if not dropping:
                out.append(line)
            continue
        if dropping:
            continue
        key = _KEY_LINE.match(line)
        parts = _keys(key.group(1)) if key else None
        if parts and any((*table, *parts)[:len(p)] == p for p in moved):
            if not _complete(line):
                pending = [line]
            continue
        commented = _COMMENTED_KEY.match(line)
        if commented and any(secret_name(k) for k in commented.group(1).split(".")):
            continue  # a secret commented out is still a secret
        out.append(line)
    edited = "".join(out)
    try:
        same = tomllib.loads(edited) == public
    except tomllib.TOMLDecodeError:
        same = False
    if same and not any(s in edited for s in _strings(secret) if len(s) >= 4):
        return edited, False
    return toml_document(public), True


def _complete(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _strings(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


# -- keys set for the pod -------------------------------------------------------------------------------------------


def _set(text: str, section: str, values: dict[str, str | None]) -> str:
    """Set (a TOML value) or remove (None) keys of ``[section]``; the table is added when missing."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if (m := _HEADER.fullmatch(line)) and m.group(1).strip('"') == section), None)
    if start is None:
        added = [f"{key} = {value}" for key, value in values.items() if value is not None]
        if not added:
            return text
        tail = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{tail}\n[{section}]\n" + "\n".join(added) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
    body = lines[start + 1:end]
    top = 0  # keys added at the table's top, in the order given
    for key, value in values.items():
        pattern = re.compile(rf"\s*(\"?){re.escape(key)}\1\s*=")
        found = [i for i, line in enumerate(body) if pattern.match(line)]
        if value is None:
            body = [line for i, line in enumerate(body) if i not in found]
        elif found:
            body[found[0]] = f"{key} = {value}"
        else:
            body.insert(top, f"{key} = {value}")
            top += 1
    result = "\n".join([*lines[:start + 1], *body, *lines[end:]])
    return result + "\n" if text.endswith("\n") or not text else result
