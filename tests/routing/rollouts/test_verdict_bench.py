"""The verdict-quality benchmark runs the real analysis: a small run on fixed seeds."""

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


def _case(bench, name):
    return next(case for case in bench.CASES if case.name == name)


def test_identical_streams_false_alarm_under_fixed_thresholds_but_not_here(bench):
    result = bench.run_case(_case(bench, "identical"), 40, seed=1, alpha=0.01)
    assert result["weathervane"]["rolled_back"] == 0
    assert result["flagger"]["rolled_back"] >= 0.2


def test_a_slower_canary_is_rolled_back_on_the_same_streams(bench):
    result = bench.run_case(_case(bench, "latency"), 40, seed=2, alpha=0.01)
    assert result["weathervane"]["rolled_back"] >= 0.9
    assert result["weathervane"]["passed"] == 0
