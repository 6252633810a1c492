"""``opd config show``: the effective configuration as TOML, defaults included, secrets redacted; and what
counts as a secret in a config (``opd manifests`` puts those into a Secret)."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opd.plugin.options import Option, table_key
from opd.service.config import SECTIONS, DaemonConfig, PluginTable, keys

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

    opd's own sections are written from their declaration (``opd.service.config.key``), in its order.
    ``options`` are the loaded plugins' declared options by plugin name: their tables are shown
    with every default (and each option's help), also when the file has no table for them.
    Secret values are redacted, so the output can be pasted into a bug report.
    """
    options = options or {}
    source = str(config.path) if config.path else "no file: defaults only"
    lines = [f"# effective configuration ({source})"]
    for name, section in SECTIONS.items():
        lines += ["", f"[{name}]", *_keys(getattr(config, name), section)]
    tables = config.plugins.tables
    declared = [name for name, found in sorted(options.items()) if found and name not in tables]
    for name in [*tables, *declared]:
        resolved = config.plugin(name)
        lines += ["", f"[plugins.{toml_key(name)}]", *_keys(resolved, PluginTable)]
        lines += _plugin_options(resolved.options, options.get(name))
    return "\n".join(lines) + "\n"


def _keys(values: Any, section: type) -> list[str]:
    """A section's declared keys with the values of ``values``: an unset one as a comment saying what that means,
    an empty one with it as a note, one whose Key says it does not apply left out."""
    lines = []
    for name, (spec, _) in keys(section).items():
        value = getattr(values, name)
        if spec.shown is not None and not spec.shown(values):
            continue
        if value is None:
            lines += [f"# {name}: not set ({spec.unset})"] if spec.unset else []
        else:
            lines.append(_assign(name, value, comment=spec.unset if value in ("", ()) else ""))
    return lines


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
