"""Diffs between essences, and the patch object handlers fill in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (operation, field path, old value, new value), as Kopf users know them.
DiffItem = tuple[str, tuple[str, ...], Any, Any]


def diff(old: Any, new: Any, path: tuple[str, ...] = ()) -> tuple[DiffItem, ...]:
    if old == new:
        return ()
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        items: list[DiffItem] = []
        for key in sorted(old.keys() | new.keys()):
            if key not in new:
                items.append(("remove", (*path, key), old[key], None))
            elif key not in old:
                items.append(("add", (*path, key), None, new[key]))
            else:
                items.extend(diff(old[key], new[key], (*path, key)))
        return tuple(items)
    if old is None:
        return (("add", path, None, new),)
    if new is None:
        return (("remove", path, old, None),)
    return (("change", path, old, new),)


def shown(items: tuple[DiffItem, ...], new: Any) -> tuple[DiffItem, ...]:
    """``items`` (a diff between two essences) with each new side taken from ``new``: the diff is
    measured on a Secret's digests, and its handlers are shown the values themselves."""
    result: list[DiffItem] = []
    for op, path, old_value, new_value in items:
        if op != "remove":
            node: Any = new
            for key in path:
                node = node.get(key) if isinstance(node, Mapping) else None
            new_value = node
        result.append((op, path, old_value, new_value))
    return tuple(result)


class _Section(dict[str, Any]):
    """A dict whose sub-dicts are made on first access: ``patch.metadata.labels['x'] = 'y'``."""

    def __getattr__(self, name: str) -> _Section:
        if name.startswith("_"):
            raise AttributeError(name)
        value = self.get(name)
        if not isinstance(value, _Section):
            value = self[name] = _Section(value or {})
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class Patch(_Section):
    """A merge-patch the handler fills; opd sends it with the handler's outcome.
    ``patch.status`` goes to the status subresource, the rest to the object."""
