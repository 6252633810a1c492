"""The chaos scenarios (tests/chaos/run.py) at their reduced size, in the normal test suite.

Every scenario runs once, on a control plane of this module's own (its apiserver gets killed),
and each test checks the rows of one scenario. The scenarios that leave the apiserver alone run
side by side, to keep the module near a minute and a half; the two that restart it run alone after
them; the replicas' (opd.ha) last, side by side. Rows of faults the scenarios found in the engine
(since fixed) are checked by tests of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest
from chaos import scenarios
from chaos.scenarios import QUICK, Result, Stage

from opd.errors import ControlPlaneError
from opd.localcluster import LocalControlPlane
from opd.testing.chaos import Kube

SIDE_BY_SIDE = ("partition", "sigterm", "unreachable", "bad-input", "delete-result", "cut-delete", "crash")
ALONE = ("restarts", "gone")
HA = ("ha-leader", "ha-fence", "ha-shards")  # replicas on Leases, side by side (ha-measure: run.py only)


async def _run_all(cp: LocalControlPlane, workdir: Path) -> dict[str, Result]:
    async with await Kube.connect(cp.kubeconfig) as kube:
        stage = Stage(cp, kube, workdir, QUICK)
        await stage.prepare()
        try:
            together = await asyncio.gather(*(_one(stage, name) for name in SIDE_BY_SIDE))
            results = dict(zip(SIDE_BY_SIDE, together, strict=True))
            for name in ALONE:
                results[name] = await _one(stage, name)
            results.update(zip(HA, await asyncio.gather(*(_one(stage, name) for name in HA)), strict=True))
        finally:
            stage.stop_all()
        results["secrets"] = scenarios.secrets_scan(stage)
        return results


async def _one(stage: Stage, name: str) -> Result:
    try:
        return await scenarios.SCENARIOS[name](stage)
    except Exception as exc:  # reported in that scenario's test, not in every test
        broken = Result(name)
        broken.add("scenario ran to the end", f"no: {type(exc).__name__}: {exc}", "yes", False)
        return broken


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    cp = LocalControlPlane(controller_manager=False)
    try:
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(f"local control plane: {exc}", pytrace=False)
    try:
        outcome = asyncio.run(_run_all(cp, tmp_path_factory.mktemp("chaos")))
    finally:
        cp.stop()
    print("\n" + scenarios.render(outcome.values()))  # the table, for -s and for failures' reports
    return outcome


def _check(result: Result, *, keys: Iterable[str] | None = None, skip: Iterable[str] = ()) -> None:
    failures = result.failures(keys=keys, skip=skip)
    assert not failures, "\n" + result.render()


pytestmark = [pytest.mark.timeout(400), pytest.mark.apiserver]  # its own control plane, not the fixture


def test_apiserver_restarts_lose_no_handling(results: dict[str, Result]) -> None:
    _check(results["restarts"], skip={"delete-dup"})


def test_apiserver_restarts_duplicate_no_delete_handling(results: dict[str, Result]) -> None:
    # A restart can fail the finalizer removal after the delete handlers ran: they must not run again.
    _check(results["restarts"], keys={"delete-dup"})


def test_operator_crash_loses_no_handling_and_no_result(results: dict[str, Result]) -> None:
    _check(results["crash"])


def test_silent_partition_is_detected_with_default_settings(results: dict[str, Result]) -> None:
    _check(results["partition"], skip={"stored"})


def test_silent_partition_results_are_stored_within_15s(results: dict[str, Result]) -> None:
    _check(results["partition"], keys={"stored"})


def test_sigterm_during_a_5s_handler(results: dict[str, Result]) -> None:
    _check(results["sigterm"], skip={"long-exit", "long-once"})


def test_sigterm_during_a_handler_longer_than_the_bound(results: dict[str, Result]) -> None:
    _check(results["sigterm"], keys={"long-exit", "long-once"})


def test_gone_relists_and_handles_what_changed(results: dict[str, Result]) -> None:
    _check(results["gone"])


def test_bad_input_does_not_stop_the_rest(results: dict[str, Result]) -> None:
    _check(results["bad-input"], skip={"big"})


def test_a_1mib_object_gets_its_result(results: dict[str, Result]) -> None:
    _check(results["bad-input"], keys={"big"})


def test_start_without_a_reachable_api(results: dict[str, Result]) -> None:
    _check(results["unreachable"])


def test_delete_handler_with_a_result_lets_the_object_go(results: dict[str, Result]) -> None:
    _check(results["delete-result"], skip={"delete-result"})


def test_delete_handler_with_a_result_runs_once(results: dict[str, Result]) -> None:
    _check(results["delete-result"], keys={"delete-result"})


def test_a_cut_during_delete_handlers_loses_nothing(results: dict[str, Result]) -> None:
    _check(results["cut-delete"], skip={"delete-dup"})


def test_a_retried_finalizer_removal_does_not_rerun_delete_handlers(results: dict[str, Result]) -> None:
    _check(results["cut-delete"], keys={"delete-dup"})


def test_no_secret_in_any_log(results: dict[str, Result]) -> None:
    _check(results["secrets"])


def test_standbys_run_nothing_and_a_killed_leader_is_replaced(results: dict[str, Result]) -> None:
    _check(results["ha-leader"])


def test_a_blackholed_leader_stops_before_the_standby_starts(results: dict[str, Result]) -> None:
    _check(results["ha-fence"])


def test_shards_are_shared_survive_a_crash_and_move_to_a_newcomer(results: dict[str, Result]) -> None:
    _check(results["ha-shards"])


# -- the count line (pure) ---------------------------------------------------------------------------------------------
def _result(name: str, *oks: bool | None) -> Result:
    result = Result(name)
    for i, ok in enumerate(oks):
        result.add(f"row {i}", "x", "report" if ok is None else "y", ok)
    return result


def test_the_count_leaves_out_scenarios_that_only_report() -> None:
    results = [_result("1. a", True, None), _result("3k. Kopf", None, None), _result("2. b", False),
               _result("13. cost", None)]
    assert scenarios.count(results) == ("1 of 2 judged scenarios met every target; "
                                        "report only, no target: 3k. Kopf; 13. cost")
    assert scenarios.count([_result("1. a", True)]) == "1 of 1 judged scenarios met every target"


def test_scenario_10_runs_with_the_default_timings_at_full_scale() -> None:
    assert scenarios.HA_FULL.leader_timings == scenarios.CLIENT_GO == scenarios.HaTimings(15.0, 10.0, 2.0)
    assert scenarios.HaTimings(12.0, 8.0, 2.0) == scenarios.FAST
