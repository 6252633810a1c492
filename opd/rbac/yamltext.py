"""YAML text for manifests, with comments: the few shapes Kubernetes objects need, written out by hand.

PyYAML writes no comments, and the comments are the point here: they say why each rule is
granted. The shapes are fixed (mappings, lists, strings, numbers, booleans), so a small writer
does it; strings that could read as anything else are quoted (JSON's double-quoted strings are
YAML's too), and multi-line strings are literal blocks, as a person would write a config file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A plain scalar that YAML reads back as the same string: no indicator first, nothing that could
# start a comment or a mapping inside, and not a word or number YAML 1.1 would turn into another type.
_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./:@=+-]*")
_SPECIAL = re.compile(r"(?i)(y|yes|n|no|true|false|on|off|null|~|\.nan|[-+]?\.inf|[-+]?[0-9_.:]+([eE][-+]?[0-9]+)?)")


@dataclass(frozen=True)
class Commented:
    """A list item with comment lines above it."""

    value: Any
    comment: tuple[str, ...]


@dataclass(frozen=True)
class Document:
    """One YAML document, with comment lines above it."""

    body: Mapping[str, Any]
    comment: tuple[str, ...] = ()


def dump(documents: Iterable[Document]) -> str:
    """The documents as one YAML stream (``---`` between them), ending with a newline."""
    parts = []
    for doc in documents:
        lines = [*_comment(doc.comment, 0), *_mapping(doc.body, 0)]
        parts.append("\n".join(lines))
    return "\n---\n".join(parts) + "\n"


def scalar(value: Any) -> str:
    """One value on one line: a plain or double-quoted string, a number, a boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and not _SPECIAL.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _comment(lines: Sequence[str], indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}# {line}".rstrip() for text in lines for line in text.splitlines() or [""]]


def _is_flat(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple | Commented)


def _mapping(body: Mapping[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, value in body.items():
        name = scalar(str(key))
        if isinstance(value, str) and "\n" in value and (block := _block(value, indent + 2)):
            lines.append(f"{pad}{name}: {block[0]}")
            lines += block[1:]
        elif _is_flat(value):
            lines.append(f"{pad}{name}: {scalar(value)}")
        elif isinstance(value, Mapping):
            if value:
                lines.append(f"{pad}{name}:")
                lines += _mapping(value, indent + 2)
            else:
                lines.append(f"{pad}{name}: {{}}")
        elif not value:
            lines.append(f"{pad}{name}: []")
        elif all(_is_flat(v) for v in value):  # short lists of strings (verbs, resources) on one line
            lines.append(f"{pad}{name}: [{', '.join(_quoted(v) for v in value)}]")
        else:
            lines.append(f"{pad}{name}:")
            lines += _sequence(value, indent)
    return lines


def _quoted(value: Any) -> str:
    # Inside a flow list, a comma or a bracket would end the item: strings are always quoted there.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else scalar(value)


def _sequence(items: Sequence[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in items:
        if isinstance(item, Commented):
            lines += _comment(item.comment, indent)
            item = item.value
        if isinstance(item, Mapping) and item:
            inner = _mapping(item, indent + 2)
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines += inner[1:]
        elif isinstance(item, Mapping):
            lines.append(f"{pad}- {{}}")
        elif isinstance(item, list | tuple):
            lines.append(f"{pad}- [{', '.join(_quoted(v) for v in item)}]")
        else:
            lines.append(f"{pad}- {scalar(item)}")
    return lines


def _block(text: str, indent: int) -> list[str] | None:
    """A literal block (``|``) for a multi-line string, or None when one cannot hold it exactly."""
    if text.startswith((" ", "\t")) or any(ch in text for ch in "\r\x85\u2028\u2029\ufeff") or any(
            not ch.isprintable() and ch not in "\n\t" for ch in text):
        return None
    body = text.rstrip("\n")
    ending = len(text) - len(body)
    chomp = {0: "-", 1: ""}.get(ending, "+")
    pad = " " * indent
    lines = [f"|{chomp}"]
    lines += [f"{pad}{line}" if line else "" for line in body.split("\n")]
    lines += [""] * (ending - 1 if ending > 1 else 0)
    return lines
