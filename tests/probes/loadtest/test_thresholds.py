"""Thresholds in k6's spirit: parsing, judging a summary, and their clear errors."""

import pytest

from probes.loadtest.thresholds import ThresholdError, check_all, parse


def test_it_reads_a_percentile_of_a_timing_in_ms_or_s():
    assert parse("p95(ttft) < 800ms").value == 800
    assert parse("p99.9(e2e)<=2s").value == 2000
    threshold = parse("avg(itl) < 30")
    assert (threshold.metric, threshold.aggregate, threshold.op, threshold.value) == ("itl", "avg", "<", 30)


def test_it_reads_rates_as_percent_or_fraction():
    assert parse("error_rate < 1%").value == pytest.approx(0.01)
    assert parse("success_rate >= 0.99").value == pytest.approx(0.99)


@pytest.mark.parametrize("text, says", [
    ("p95(ttft) 800ms", "not of the form"),
    ("p95(latency) < 800ms", "unknown timed metric"),
    ("p42.5(ttft) < 1s", "unknown aggregate"),
    ("error_rate < 5ms", "a rate takes %"),
    ("error_rate < 150%", "at most 100%"),
    ("p95(ttft) < 5%", "ms or s"),
    ("throughput > 5", "unknown metric"),
    ("rps > 5%", "plain number"),
])
def test_it_rejects_what_it_cannot_read_and_says_why(text, says):
    with pytest.raises(ThresholdError, match=says):
        parse(text)


SUMMARY = {"ttft": {"p95": 750.0}, "e2e": {"p99": 2500.0}, "error_rate": 0.02, "rps": 12.0}


def test_a_run_passes_only_when_every_threshold_holds():
    passed, results = check_all([parse("p95(ttft) < 800ms"), parse("rps > 10")], SUMMARY)
    assert passed
    passed, results = check_all([parse("p95(ttft) < 800ms"), parse("error_rate < 1%"), parse("p99(e2e) < 2s")], SUMMARY)
    assert not passed
    assert [r["ok"] for r in results] == [True, False, False]
    assert results[1] == {"threshold": "error_rate < 1%", "value": 0.02, "ok": False}


def test_a_missing_figure_fails_its_threshold():
    passed, results = check_all([parse("p95(tpot) < 50ms")], SUMMARY)
    assert not passed
    assert results[0]["value"] is None
