"""The config file as a pod runs it: the user's file, with three keys changed and nothing else.

In a pod, the kubelet's probes and Prometheus reach the health server from outside the
container, so ``[opd].listen`` is ``0.0.0.0:<port>``; and the credentials are the pod's service
account, so ``[kubernetes]`` says ``in_cluster = true`` and loses ``kubeconfig`` and ``context``
(paths and contexts of the machine where the file was written). The file is edited line by line,
so its comments stay, then read back: the edit must mean exactly those changes.
"""

from __future__ import annotations

import dataclasses
import re

from opd.daemon import config as daemon_config
from opd.daemon.config import DaemonConfig, KubernetesSection, Listen
from opd.errors import OpdError

DEFAULT_PORT = 8080
_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*\]\s*(#.*)?")
_ANY_HEADER = re.compile(r"\s*\[")


def port_of(config: DaemonConfig) -> int:
    return config.opd.listen.port if config.opd.listen is not None else DEFAULT_PORT


def pod_config(config: DaemonConfig, text: str) -> str:
    """``text`` (the file ``config`` was read from) with the pod's listen address and credentials."""
    listen = Listen("0.0.0.0", port_of(config))
    edited = _set(text, "opd", {"listen": f'"{listen}"'})
    edited = _set(edited, "kubernetes", {"kubeconfig": None, "context": None, "in_cluster": "true"})
    where = str(config.path) if config.path else "the config"
    try:
        back = daemon_config.parse(edited, path=config.path)
    except daemon_config.ConfigFileError as exc:
        raise OpdError(f"{where}: cannot set [opd].listen and [kubernetes] for the pod: {exc.problems[0]} (write "
                       "them as keys of [opd] and [kubernetes] tables)") from None
    wanted = dataclasses.replace(config, opd=dataclasses.replace(config.opd, listen=listen),
                                 kubernetes=KubernetesSection(in_cluster=True))
    if back != wanted:
        raise OpdError(f"{where}: cannot set [opd].listen and [kubernetes] for the pod by editing the file (write "
                       "them as keys of [opd] and [kubernetes] tables, one per line)")
    return edited


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
    for key, value in values.items():
        pattern = re.compile(rf"\s*(\"?){re.escape(key)}\1\s*=")
        found = [i for i, line in enumerate(body) if pattern.match(line)]
        if value is None:
            body = [line for i, line in enumerate(body) if i not in found]
        elif found:
            body[found[0]] = f"{key} = {value}"
        else:
            body.insert(0, f"{key} = {value}")
    result = "\n".join([*lines[:start + 1], *body, *lines[end:]])
    return result + "\n" if text.endswith("\n") or not text else result
