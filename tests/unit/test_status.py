"""The status surface's pure parts: a watch error kept as data (its status from the error raised, its
text one bounded line whatever the server sent), and the contract that keeps the daemon and opd.ha to it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from opd.engine.status import WatchError
from opd.kube.api import APIError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]
# What the daemon and opd.ha may import of opd.engine: the surface, a connection, and pure helpers.
SURFACE = {"operation", "status", "cluster", "ownership", "namespaces", "backoff"}


def test_a_watch_error_keeps_the_status_it_was_raised_with() -> None:
    refused = WatchError.of(APIError(403, "Forbidden", "no", method="WATCH", path="/x"), "not allowed (403): no")
    assert (refused.kind, refused.status, refused.refused) == ("APIError", 403, True)
    gone = WatchError.of(NotFoundError(404, "NotFound", ""), "not served (404)")
    assert (gone.kind, gone.status, gone.refused) == ("NotFoundError", 404, True)
    reset = WatchError.of(ConnectionResetError("reset (403)"), "reset (403)")
    assert (reset.kind, reset.status, reset.refused) == ("ConnectionResetError", None, False)  # the text says nothing
    assert not WatchError.of(APIError(500, "", "etcd (401)"), "etcd (401)").refused


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=2000), status=st.integers(min_value=400, max_value=599))
def test_a_watch_errors_text_is_one_bounded_line(text: str, status: int) -> None:
    error = WatchError.of(APIError(status, "", text), text)
    assert error.status == status and error.refused == (status in (401, 403, 404))
    assert 0 < len(error.text) <= 300
    assert error.text == " ".join(error.text.split())  # one line, no runs of whitespace


def test_the_contract_forbids_every_engine_module_but_the_surface() -> None:
    """A module added to opd.engine is forbidden to the daemon and opd.ha until it is named part of the surface."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [contract] = [c for c in contracts if c["type"] == "forbidden"
                  and any(m.startswith("opd.engine.") for m in c["forbidden_modules"])]
    assert set(contract["source_modules"]) == {"opd.service", "opd.ha"}
    modules = {p.stem for p in (ROOT / "opd" / "engine").glob("*.py") if p.stem != "__init__"}
    assert modules >= SURFACE
    assert set(contract["forbidden_modules"]) == {f"opd.engine.{m}" for m in modules - SURFACE}
