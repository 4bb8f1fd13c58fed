"""The verdict-quality benchmark runs the real analysis and the controller's own decisions: small runs, fixed seeds."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "rollout_verdicts.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("rollout_verdicts", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _case(bench, name, **changes):
    case = next(case for case in bench.CASES if case.name == name)
    return dataclasses.replace(case, **changes)


def test_a_canary_failing_a_fifth_of_its_requests_at_2_requests_a_second_is_rolled_back(bench):
    result = bench.run_case(_case(bench, "low_2"), 6, seed=1)
    assert result["weathervane"]["rolled_back"] == 1.0
    assert result["weathervane"]["within_10_min"] == 1.0


def test_an_identical_canary_is_not_rolled_back_where_fixed_thresholds_are(bench):
    result = bench.run_case(_case(bench, "identical", horizon_s=900), 6, seed=2)
    assert result["weathervane"]["rolled_back"] == 0
    assert result["weathervane"]["crashed"] == 0
    assert result["flagger"]["rolled_back"] > 0


def test_a_plan_ending_at_100_percent_is_a_promotion_not_a_crash(bench):
    case = _case(bench, "high_inside", horizon_s=600)
    result = bench.run_case(case, 3, seed=3)
    assert result["weathervane"]["promoted"] == 1.0
    assert result["weathervane"]["crashed"] == 0
