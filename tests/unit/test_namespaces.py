"""Unit tests for opd/engine/namespaces.py: static sets, globs and negations."""

from __future__ import annotations

import pytest

from opd.engine.namespaces import is_static, matches


@pytest.mark.parametrize(("patterns", "expected"), [
    ([], True),
    (["default"], True),
    (["default", "prod", "team-a"], True),
    (["dev-*"], False),
    (["default", "dev-?"], False),
    (["ns[12]"], False),
    (["!kube-system"], False),
    (["default", "!kube-*"], False),
    (("default", "prod"), True),
])
def test_is_static(patterns: list[str], expected: bool) -> None:
    assert is_static(patterns) is expected


def test_is_static_accepts_generators() -> None:
    assert is_static(p for p in ["a", "b"]) is True
    assert is_static(p for p in ["a", "b*"]) is False


@pytest.mark.parametrize(("name", "patterns", "expected"), [
    # Plain names.
    ("default", ["default"], True),
    ("default", ["prod"], False),
    ("default", ["default", "prod"], True),
    ("defaults", ["default"], False),
    ("Default", ["default"], False),  # case-sensitive, as namespace names are
    # Globs.
    ("dev-1", ["dev-*"], True),
    ("dev-", ["dev-*"], True),
    ("dev", ["dev-*"], False),
    ("prod-dev-1", ["dev-*"], False),
    ("dev-ab", ["dev-?"], False),
    ("dev-a", ["dev-?"], True),
    ("ns1", ["ns[12]"], True),
    ("ns3", ["ns[12]"], False),
    ("prod", ["dev-*", "prod"], True),
    # Negations exclude from the positives.
    ("dev-1", ["dev-*", "!dev-secret"], True),
    ("dev-secret", ["dev-*", "!dev-secret"], False),
    ("dev-secret", ["!dev-secret", "dev-*"], False),  # order does not matter
    ("dev-1", ["dev-*", "!dev-?"], False),
    ("dev-12", ["dev-*", "!dev-?"], True),
    ("prod", ["dev-*", "!dev-secret"], False),
    # Only negatives: everything else.
    ("default", ["!kube-*"], True),
    ("anything-at-all", ["!kube-*"], True),
    ("kube-system", ["!kube-*"], False),
    ("kube-public", ["!kube-*"], False),
    ("kube", ["!kube-*"], True),
    ("default", ["!kube-*", "!openshift-*"], True),
    ("openshift-x", ["!kube-*", "!openshift-*"], False),
    ("kube-system", ["!kube-system"], False),
    ("kube-system2", ["!kube-system"], True),
    ("Kube-system", ["!kube-*"], True),  # negations are case-sensitive too
    # A negation wins over a positive naming the same namespace.
    ("kube-system", ["kube-system", "!kube-*"], False),
])
def test_matches(name: str, patterns: list[str], expected: bool) -> None:
    assert matches(name, patterns) is expected


def test_matches_no_patterns_means_all() -> None:
    assert matches("anything", []) is True


def test_matches_accepts_tuples() -> None:
    assert matches("dev-1", ("dev-*", "!dev-2")) is True
    assert matches("dev-2", ("dev-*", "!dev-2")) is False


def test_matches_accepts_any_iterable() -> None:
    # The signature takes Iterable[str]: a one-shot iterator must count its negations too.
    assert matches("kube-system", iter(["!kube-*"])) is False
    assert matches("dev-2", (p for p in ["dev-*", "!dev-2"])) is False
    assert matches("dev-1", (p for p in ["dev-*", "!dev-2"])) is True
