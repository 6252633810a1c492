"""One builder: ``opd.orchestration.build_operation`` is the only place an ``Operation`` is made, so
that embedding, ``opd run``, ``opd run --ha`` and ``opd start``'s plugins serve the same things
(``tests/webhooks/test_replicated.py`` runs ``opd run --ha`` with webhooks against the API server)."""

from __future__ import annotations

import ast
from pathlib import Path

import opd
from opd.engine.operation import Operation
from opd.engine.ownership import EVERYTHING
from opd.orchestration import Attached, Memo, build_operation
from opd.webhooks.hosting import Webhooks

ROOT = Path(__file__).resolve().parents[2]  # the repository: opd/ and plugins/
BUILDER = ROOT / "opd" / "orchestration.py"


def _constructions(path: Path) -> list[int]:
    """Lines of ``path`` that call ``Operation(...)``, by name or as an attribute (``operation.Operation``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name == "Operation":
                found.append(node.lineno)
    return found


def test_only_the_builder_constructs_an_operation() -> None:
    sources = [*(ROOT / "opd").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    assert BUILDER in sources and len(sources) > 50  # the tree is where it is supposed to be
    assert any(p.is_relative_to(ROOT / "plugins") for p in sources)
    elsewhere = {str(path.relative_to(ROOT)): lines for path in sources if path != BUILDER
                 if (lines := _constructions(path))}
    assert elsewhere == {}, f"Operation(...) made outside opd/orchestration.py: {elsewhere}"
    assert len(_constructions(BUILDER)) == 1


def test_the_builder_serves_the_operators_own_webhooks_unless_given_services() -> None:
    registry, settings = opd.OperatorRegistry(), opd.OperatorSettings()
    default = build_operation(registry=registry, settings=settings)
    assert [type(s) for s in default.services] == [Webhooks]
    assert isinstance(default.memo, Memo) and default.ownership is EVERYTHING
    assert default.clusterwide and default.registry is registry and default.settings is settings
    mounted = Webhooks(owner="plugin")
    assert build_operation(registry=registry, settings=settings, services=[mounted]).services == [mounted]
    assert build_operation(registry=registry, settings=settings, services=()).services == []


class _Following:
    """An ownership that follows its operation, as a replica's view does."""

    def __init__(self) -> None:
        self.attached: list[Operation] = []

    def owns(self, uid: str) -> bool:
        return False

    def may_write(self, uid: str) -> bool:
        return False

    def time_left(self, uid: str) -> float:
        return 0.0

    def attach(self, operation: Operation) -> None:
        self.attached.append(operation)


def test_an_ownership_that_follows_its_operation_is_attached_by_the_builder() -> None:
    ownership = _Following()
    assert isinstance(ownership, Attached) and not isinstance(EVERYTHING, Attached)
    memo = Memo(answer=42)
    operation = build_operation(registry=opd.OperatorRegistry(), settings=opd.OperatorSettings(), memo=memo,
                                namespaces=["a"], ownership=ownership, name="p")
    assert ownership.attached == [operation] and operation.ownership is ownership
    assert operation.memo is memo and operation.patterns == ["a"] and not operation.clusterwide
