"""``opd config show``: the effective configuration as TOML, defaults included, secrets redacted; and what
counts as a secret in a config (``opd manifests`` puts those into a Secret)."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opd.daemon.config import DaemonConfig
from opd.plugin.options import Option, table_key

# Keys whose values `opd config show` never prints: any name with one of these words in it.
SECRET_WORDS = ("password", "passwd", "passphrase", "token", "secret", "key", "credential", "private")
REDACTED = "<redacted>"


def toml_key(name: str) -> str:
    """A key as TOML reads it back: bare when it can be, else a basic string (DEL escaped, as in values)."""
    return table_key(name).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """A value in TOML syntax (inline), for ``opd config show``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str | Path):
        # JSON's escapes are valid in TOML basic strings; DEL is the one control character JSON leaves as is.
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (datetime.date, datetime.time)):
        return str(value.isoformat())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return toml_value(str(value))


def toml_document(document: Mapping[str, Any]) -> str:
    """A whole TOML document (as ``tomllib`` gives one) written back: tables as ``[a.b]`` headers, their
    other values inline (arrays of tables too), so that ``tomllib.loads`` reads back the same."""
    lines: list[str] = []
    _table(lines, (), document)
    return "\n".join(lines) + "\n" if lines else ""


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    values = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and (values or not tables):  # a table of tables only is made by their headers
        if lines:
            lines.append("")
        lines.append(f"[{'.'.join(toml_key(k) for k in path)}]")
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in values]
    for key, value in tables:
        _table(lines, (*path, key), value)


def secret_name(key: str) -> bool:
    """A key whose value ``config show`` keeps to itself: its name has password, token, secret, key,
    credential or private in it (any case)."""
    return any(word in key.lower() for word in SECRET_WORDS)


def redact(key: str, value: Any, secret: bool = False) -> Any:
    """``value`` as ``config show`` prints it: secret values, also inside tables and lists, as "<redacted>"."""
    if secret or secret_name(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact("", v) for v in value]
    return value


def _assign(key: str, value: Any, secret: bool = False, comment: str = "") -> str:
    line = f"{toml_key(key)} = {toml_value(redact(key, value, secret))}"
    return f"{line}  # {comment}" if comment else line


def render(config: DaemonConfig, options: Mapping[str, Sequence[Option] | None] | None = None) -> str:
    """The effective configuration, defaults included, as TOML (unset optional keys as comments).

    ``options`` are the loaded plugins' declared options by plugin name: their tables are shown
    with every default (and each option's help), also when the file has no table for them.
    Secret values are redacted, so the output can be pasted into a bug report.
    """
    o, k, p = config.opd, config.kubernetes, config.plugins
    options = options or {}
    source = str(config.path) if config.path else "no file: defaults only"
    lines = [f"# effective configuration ({source})", "", "[opd]"]
    if o.clusterwide:
        lines.append(_assign("clusterwide", True))
    else:
        lines.append(_assign("namespaces", o.namespaces))
    lines += [
        _assign("log_level", o.log_level),
        _assign("log_format", o.log_format),
        _assign("listen", str(o.listen) if o.listen else "", comment="" if o.listen else "off"),
        _assign("shutdown_timeout", o.shutdown_timeout),
        "",
        "[kubernetes]",
    ]
    lines.append(_assign("kubeconfig", k.kubeconfig) if k.kubeconfig
                 else "# kubeconfig: not set ($KUBECONFIG, then ~/.kube/config)")
    lines.append(_assign("context", k.context) if k.context
                 else "# context: not set (the kubeconfig's current context)")
    lines.append(_assign("in_cluster", k.in_cluster) if k.in_cluster is not None
                 else "# in_cluster: not set (in-cluster when a service account is mounted and $KUBECONFIG is not set)")
    h = config.ha
    lines += ["", "[ha]", _assign("mode", h.mode), _assign("lease", h.lease),
              _assign("lease_namespace", h.lease_namespace)]
    lines.append(_assign("identity", h.identity) if h.identity else
                 "# identity: not set ($OPD_HA_IDENTITY, else <hostname>_<UUID>)")
    lines += [_assign("lease_duration", h.lease_duration), _assign("renew_deadline", h.renew_deadline),
              _assign("retry_period", h.retry_period)]
    if h.mode == "shards":
        lines.append(_assign("shards", h.shards))
    w = config.webhooks
    lines += ["", "[webhooks]", _assign("listen", str(w.listen))]
    for key, value, unset in (("host", w.host, "the listen address; localhost for 0.0.0.0"), ("url", w.url, ""),
                              ("service", w.service, ""),
                              ("cert_dir", w.cert_dir, "a CA and certificate made per process")):
        lines.append(_assign(key, value) if value else f"# {key}: not set" + (f" ({unset})" if unset else ""))
    lines.append(_assign("managed", w.managed, comment="" if w.managed else "not managed"))
    lines.append(_assign("excluded_namespaces", w.excluded_namespaces, comment="and opd's own, in a pod"))
    lines += ["", "[plugins]"]
    lines.append(_assign("enable", p.enable) if p.enable is not None
                 else "# enable: not set (every installed plugin)")
    lines.append(_assign("disable", p.disable))
    declared = [name for name, found in sorted(options.items()) if found and name not in p.tables]
    for name in [*p.tables, *declared]:
        resolved = config.plugin(name)
        lines += ["", f"[plugins.{toml_key(name)}]"]
        if resolved.clusterwide:
            lines.append(_assign("clusterwide", True))
        else:
            lines.append(_assign("namespaces", resolved.namespaces))
        lines.append(_assign("isolation", resolved.isolation))
        if resolved.module or resolved.file:
            lines.append(_assign("module", resolved.module) if resolved.module else _assign("file", resolved.file))
        lines += _plugin_options(resolved.options, options.get(name))
    return "\n".join(lines) + "\n"


def _plugin_options(table: Mapping[str, Any], options: Sequence[Option] | None) -> list[str]:
    """A plugin's own keys: as written, or, when it declares options, each one with its value or default."""
    if options is None:
        return [_assign(key, value) for key, value in table.items()]
    lines = []
    for option in options:
        about = " ".join(option.help.split())
        if option.name in table:
            value, _ = option.accept(table[option.name])
            lines.append(_assign(option.name, value, option.secret, about))
        elif option.required:
            lines.append(f"# {option.name}: required, not set ({option.expected()}{': ' + about if about else ''})")
        elif option.default is None:
            lines.append(f"# {option.name}: not set" + (f" ({about})" if about else ""))
        else:
            lines.append(_assign(option.name, option.default, option.secret, about))
    known = {option.name for option in options}
    lines += [_assign(key, value, comment="unknown key") for key, value in table.items() if key not in known]
    return lines
