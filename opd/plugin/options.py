"""A plugin's options: the keys of its table ``[plugins.<name>]``, declared through ``opd_options``.

Declared options let opd check a plugin's table as it checks its own keys, before any of
the plugin's handlers run: every problem at once, one line each, naming the key, with a
"did you mean" for a misspelt one (``[plugins.ttl].intervall: unknown key (did you mean
'interval'?)``). TOML gives strings, integers, floats, booleans, arrays and tables; those
are the types an option may have.
"""

from __future__ import annotations

import builtins
import copy
import datetime
import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

# The keys opd itself reads (and removes) from a plugin's table: no option may take them.
RESERVED = ("namespaces", "clusterwide", "isolation", "module", "file")

# What a value of each type is called in messages: one of them, many of them.
_TYPES: Final[dict[type, tuple[str, str]]] = {
    str: ("a string", "strings"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    list: ("a list", "lists"),
    dict: ("a table", "tables"),
}


class _Required:
    """The default of an option that has none: the key must be in the table."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Required:
        return self


REQUIRED: Final = _Required()


@dataclass(frozen=True)
class Option:
    """One key of a plugin's table.

    ``type`` is one of ``str, int, float, bool, list, dict`` or a tuple of them (``float``
    takes an integer too, and hands it over as a float); ``items`` is the type of a list's
    items. Without ``default`` the key is required; ``default=None`` makes it optional with
    no value. ``check`` sees a well-typed value and returns what is wrong with it (``"expected
    seconds > 0, got 0"``) or None. ``secret`` values are shown redacted by ``opd config show``.
    """

    name: str
    type: builtins.type | tuple[builtins.type, ...]  # the field is named as people say it, hence builtins.type
    default: Any = REQUIRED
    help: str = ""
    secret: bool = False
    check: Callable[[Any], str | None] | None = None
    items: builtins.type | None = None

    def __post_init__(self) -> None:
        # Mistakes in a declaration are the plugin author's: raised here, in the plugin's own frame.
        where = f"Option {self.name!r}"
        name, check = cast(object, self.name), cast(object, self.check)  # as given, whatever the annotations say
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"{where}: a name of letters, digits, '_' and '-' is expected")
        if self.name in RESERVED:
            raise ValueError(f"{where}: opd reads {self.name!r} itself (one of {', '.join(RESERVED)})")
        for kind in self.types:
            if kind not in _TYPES:
                raise TypeError(f"{where}: type {_name(kind)} is not one of str, int, float, bool, list, dict")
        if self.items is not None:
            if list not in self.types:
                raise TypeError(f"{where}: items is only for a list")
            if self.items not in _TYPES:
                raise TypeError(f"{where}: items {_name(self.items)} is not one of str, int, float, bool, list, dict")
        if check is not None and not callable(check):
            raise TypeError(f"{where}: check must be callable, got {self.check!r}")
        if self.default is not REQUIRED and self.default is not None:
            _, problems = self.accept(self.default)
            if problems:
                raise TypeError(f"{where}: default {self.default!r}: {problems[0][1]}")

    @property
    def types(self) -> tuple[builtins.type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def expected(self) -> str:
        """What a value must be, in words: ``a list of strings``, ``a string or an integer``."""
        return expected(self.types, self.items)

    def accept(self, value: Any) -> tuple[Any, list[tuple[str, str]]]:
        """The value as the plugin gets it, and its problems as (suffix of the key path, text)."""
        if problem := mistyped(value, self.types, self.items):
            return value, [("", problem)]
        value = _widen(value, self.types)
        if isinstance(value, list) and self.items is not None and list in self.types:
            items, problems = [], []
            for index, item in enumerate(value):
                if trouble := mistyped(item, (self.items,)):
                    problems.append((f"[{index}]", trouble))
                else:
                    items.append(_widen(item, (self.items,)))
            if problems:
                return value, problems
            value = items
        return value, []


# The type checks and their words, shared with the daemon's own keys (opd.service.config.Key).


def expected(types: tuple[type, ...], items: type | None = None) -> str:
    """What a value of ``types`` (a list's of ``items``) is, in words: ``a list of strings``."""
    words = []
    for kind in types:
        word = _TYPES[kind][0]
        if kind is list and items is not None:
            word = f"a list of {_TYPES[items][1]}"
        words.append(word)
    return " or ".join(words)


def mistyped(value: Any, types: tuple[type, ...], items: type | None = None, words: str = "") -> str | None:
    """What is wrong with the TOML type of ``value`` (not of its items), or None; ``words`` say what is
    expected instead of the types' own words (``a number of seconds``)."""
    if any(_is(value, kind) for kind in types):
        return None
    return f"expected {words or expected(types, items)}, got {toml_type(value)}"


def _name(kind: object) -> str:
    return str(getattr(kind, "__name__", repr(kind)))


def _is(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):  # TOML's booleans are not numbers
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _widen(value: Any, types: tuple[type, ...]) -> Any:
    """An integer where only a float is expected becomes one: the plugin gets the type it declared."""
    if float in types and int not in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def declared(options: object) -> tuple[Option, ...]:
    """What an ``opd_options`` implementation returned, checked: a list of Options with distinct names."""
    if not isinstance(options, list | tuple):
        raise TypeError(f"opd_options must return a list of opd.Option, got {type(options).__name__}")
    seen: set[str] = set()
    for option in options:
        if not isinstance(option, Option):
            raise TypeError(f"opd_options must return a list of opd.Option, got an item {option!r}")
        if option.name in seen:
            raise ValueError(f"opd_options declares {option.name!r} twice")
        seen.add(option.name)
    return tuple(options)


def resolve(where: str, table: Mapping[str, Any], options: Sequence[Option]) -> tuple[dict[str, Any], list[str]]:
    """The table checked against the options: the values with defaults filled in, and every problem.

    Problems are one line each, ``<where>.<key>: <what is wrong>``, in the table's order, then
    the missing required keys in the order they are declared.
    """
    known = {option.name: option for option in options}
    problems: list[str] = []
    given: dict[str, Any] = {}
    if nesting(dict(table)) > MAX_NESTING:  # before anything walks it recursively (deepcopy, the plugin's check)
        return {}, [f"{where}: nested more than {MAX_NESTING} levels deep"]
    for key, value in table.items():
        option = known.get(key)
        if option is None:
            problems.append(f"{where}.{table_key(key)}: {unknown(key, [*known, *RESERVED])}")
            continue
        accepted, troubles = option.accept(value)
        if not troubles and option.check is not None:
            try:
                trouble = option.check(accepted)
            except Exception as exc:  # the plugin's check is code of its own: its failure is one line too
                trouble = f"the plugin's check raised {type(exc).__name__}: {' '.join(str(exc).split())}"
            if trouble:
                troubles = [("", " ".join(str(trouble).split())[:MAX_PROBLEM])]
        problems += [f"{where}.{key}{suffix}: {text}" for suffix, text in troubles]
        given[key] = accepted
    values: dict[str, Any] = {}
    for option in options:
        if option.name in given:
            values[option.name] = copy.deepcopy(given[option.name])
        elif option.required:
            about = f": {option.help}" if option.help else ""
            problems.append(f"{where}.{option.name}: required key missing ({option.expected()}{about})")
        else:
            values[option.name] = copy.deepcopy(option.default)
    return values, bounded(problems)


# -- words for messages (opd's own config uses them too) -----------------------------------------------------------


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, as messages say it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime.datetime):
        return "datetime"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    return type(value).__name__


def closest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate a misspelt word most likely meant (``namespace`` → ``namespaces``)."""

    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    by_norm = {norm(c): c for c in candidates}
    found = difflib.get_close_matches(norm(word), list(by_norm), n=1, cutoff=0.6)
    return by_norm[found[0]] if found else None


def unknown(word: str, candidates: Sequence[str], what: str = "key") -> str:
    guess = closest(word, candidates)
    return f"unknown {what} (did you mean {guess!r}?)" if guess else f"unknown {what}"


MAX_PROBLEM = 300  # characters of one problem's line: a value or key of any size is shown cut
MAX_PROBLEMS = 50  # problems listed; the rest are counted
MAX_NESTING = 32  # levels of tables and arrays in a config: far past any real one, far within Python's recursion


def bounded(problems: Sequence[str]) -> list[str]:
    """Problems as they are shown: each one line of at most MAX_PROBLEM characters, at most MAX_PROBLEMS
    of them (then how many more). A line cut keeps its start (the key) and its end."""
    lines = [problem.replace("\r", " ").replace("\n", " ") for problem in problems[:MAX_PROBLEMS]]
    lines = [line if len(line) <= MAX_PROBLEM else f"{line[:MAX_PROBLEM - 63]}...{line[-60:]}" for line in lines]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
    return lines


def nesting(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar: 0), counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def table_key(name: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
