"""A plugin's declared options: declarations, type checks, defaults, and the one-line problems."""

from __future__ import annotations

from typing import Any

import pytest

import opd
from opd.plugin import REQUIRED, Option
from opd.plugin.options import declared, resolve

WHERE = "[plugins.p]"


def test_the_public_names() -> None:
    assert opd.Option is Option
    assert opd.plugin.Option is Option
    assert repr(REQUIRED) == "REQUIRED"
    assert Option("a", str).required and not Option("a", str, default="").required
    assert not Option("a", str, default=None).required


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"name": "", "type": str}, "Option '': a name of letters, digits, '_' and '-' is expected"),
    ({"name": "a.b", "type": str}, "Option 'a.b': a name of letters, digits, '_' and '-' is expected"),
    ({"name": 7, "type": str}, "Option 7: a name of letters, digits, '_' and '-' is expected"),
    ({"name": "isolation", "type": str}, "Option 'isolation': opd reads 'isolation' itself"),
    ({"name": "a", "type": set}, "Option 'a': type set is not one of str, int, float, bool, list, dict"),
    ({"name": "a", "type": (str, bytes)}, "Option 'a': type bytes is not one of"),
    ({"name": "a", "type": str, "items": str}, "Option 'a': items is only for a list"),
    ({"name": "a", "type": list, "items": tuple}, "Option 'a': items tuple is not one of"),
    ({"name": "a", "type": str, "check": "nonempty"}, "Option 'a': check must be callable, got 'nonempty'"),
    ({"name": "a", "type": int, "default": "1"}, "Option 'a': default '1': expected an integer, got string"),
    ({"name": "a", "type": int, "default": True}, "Option 'a': default True: expected an integer, got boolean"),
    ({"name": "a", "type": list, "items": str, "default": ["x", 1]},
     "Option 'a': default ['x', 1]: expected a string, got integer"),
])
def test_a_mistaken_declaration_is_said_at_once(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises((TypeError, ValueError)) as err:
        Option(**kwargs)
    assert str(err.value).startswith(error)


@pytest.mark.parametrize(("option", "words"), [
    (Option("a", str), "a string"),
    (Option("a", int), "an integer"),
    (Option("a", float), "a number"),
    (Option("a", bool), "true or false"),
    (Option("a", dict), "a table"),
    (Option("a", list), "a list"),
    (Option("a", list, items=dict), "a list of tables"),
    (Option("a", (str, list), items=str), "a string or a list of strings"),
])
def test_what_is_expected_in_words(option: Option, words: str) -> None:
    assert option.expected() == words


@pytest.mark.parametrize(("option", "value", "accepted"), [
    (Option("a", float), 3, 3.0),
    (Option("a", float), 2.5, 2.5),
    (Option("a", (int, float)), 3, 3),  # an integer stays one where integers are welcome
    (Option("a", int), 3, 3),
    (Option("a", bool), False, False),
    (Option("a", list, items=float), [1, 2.5], [1.0, 2.5]),
    (Option("a", (str, list), items=str), "one", "one"),
    (Option("a", (str, list), items=str), ["one"], ["one"]),
    (Option("a", dict), {"k": [1]}, {"k": [1]}),
])
def test_accepted_values(option: Option, value: Any, accepted: Any) -> None:
    result, problems = option.accept(value)
    assert (result, problems) == (accepted, [])
    assert type(result) is type(accepted)


@pytest.mark.parametrize(("option", "value", "problems"), [
    (Option("a", int), True, [("", "expected an integer, got boolean")]),
    (Option("a", float), False, [("", "expected a number, got boolean")]),
    (Option("a", int), 1.5, [("", "expected an integer, got float")]),
    (Option("a", bool), 1, [("", "expected true or false, got integer")]),
    (Option("a", str), ["x"], [("", "expected a string, got array")]),
    (Option("a", dict), "x", [("", "expected a table, got string")]),
    (Option("a", list, items=str), ["x", 1, True], [("[1]", "expected a string, got integer"),
                                                    ("[2]", "expected a string, got boolean")]),
])
def test_refused_values(option: Option, value: Any, problems: list[tuple[str, str]]) -> None:
    assert option.accept(value)[1] == problems


OPTIONS = [
    Option("interval", float, default=30.0, check=lambda v: None if v > 0 else f"expected seconds > 0, got {v:g}"),
    Option("bucket", str, help="where backups go"),
    Option("region", str),
    Option("tags", list, items=str, default=["a"]),
    Option("extra", dict, default=None),
]


def test_defaults_fill_what_the_table_leaves_out() -> None:
    values, problems = resolve(WHERE, {"bucket": "b", "region": "r", "interval": 5}, OPTIONS)
    assert problems == []
    assert values == {"interval": 5.0, "bucket": "b", "region": "r", "tags": ["a"], "extra": None}
    assert list(values) == ["interval", "bucket", "region", "tags", "extra"]  # as declared
    values["tags"].append("b")  # the plugin's own copy of the default
    assert OPTIONS[3].default == ["a"]
    table = {"bucket": "b", "region": "r", "extra": {"k": [1]}}
    values, _ = resolve(WHERE, table, OPTIONS)
    values["extra"]["k"].append(2)
    assert table["extra"] == {"k": [1]}


def test_every_problem_one_line_each_in_order() -> None:
    table = {"intervall": 5, "interval": 0, "namespace": ["x"], "tags": ["a", 2], "zzz": 1, '"odd" key': 1}
    _, problems = resolve(WHERE, table, OPTIONS)
    assert problems == [
        f"{WHERE}.intervall: unknown key (did you mean 'interval'?)",
        f"{WHERE}.interval: expected seconds > 0, got 0",
        f"{WHERE}.namespace: unknown key (did you mean 'namespaces'?)",  # opd's own key, in the wrong form
        f"{WHERE}.tags[1]: expected a string, got integer",
        f"{WHERE}.zzz: unknown key",
        f'{WHERE}."\\"odd\\" key": unknown key',
        f"{WHERE}.bucket: required key missing (a string: where backups go)",
        f"{WHERE}.region: required key missing (a string)",
    ]


def test_the_check_sees_only_well_typed_values_and_speaks_in_one_line() -> None:
    seen: list[Any] = []

    def check(value: Any) -> str | None:
        seen.append(value)
        if value == "boom":
            raise ValueError("no\nway")
        return "expected a name,\n  not this" if value == "bad" else None

    options = [Option("name", str, check=check)]
    assert resolve(WHERE, {"name": 7}, options)[1] == [f"{WHERE}.name: expected a string, got integer"]
    assert seen == []
    assert resolve(WHERE, {"name": "bad"}, options)[1] == [f"{WHERE}.name: expected a name, not this"]
    assert resolve(WHERE, {"name": "boom"}, options)[1] == [
        f"{WHERE}.name: the plugin's check raised ValueError: no way"]
    assert resolve(WHERE, {"name": "fine"}, options) == ({"name": "fine"}, [])


def test_declared_wants_a_list_of_distinct_options() -> None:
    assert declared([OPTIONS[0]]) == (OPTIONS[0],)
    assert declared(()) == ()
    with pytest.raises(TypeError, match=r"must return a list of opd\.Option, got dict"):
        declared({"interval": OPTIONS[0]})
    with pytest.raises(ValueError, match="declares 'interval' twice"):
        declared([OPTIONS[0], OPTIONS[0]])


def test_the_type_checks_and_their_words_are_shared_with_opd_s_own_keys() -> None:
    from opd.plugin.options import expected, mistyped

    assert expected((list,), str) == Option("a", list, items=str).expected() == "a list of strings"
    assert expected((str, int)) == "a string or an integer"
    assert mistyped(1, (str,)) == "expected a string, got integer"
    assert mistyped(True, (int, float)) == "expected an integer or a number, got boolean"  # TOML's booleans
    assert mistyped(3, (float,)) is None and mistyped([1], (list,), str) is None  # items are the caller's
    assert mistyped("8s", (float,), words="a number of seconds") == "expected a number of seconds, got string"
