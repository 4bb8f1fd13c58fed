"""TTFT, ITL, TPOT and the run's summary on known streams."""

import pytest

from probes.loadtest.metrics import Sample, distribution, meets, percentile, stream_figures, summarise


def test_a_known_stream_gives_its_ttft_itl_and_tpot():
    # sent at 10.0 s; content chunks at +200, +250, +300, +400 ms; last byte at +500 ms; 5 output tokens
    figures = stream_figures(10.0, [10.2, 10.25, 10.3, 10.4], 10.5, tokens_out=5)
    assert figures["ttft"] == pytest.approx(200)
    assert figures["itl"] == pytest.approx((50 + 50 + 100) / 3)
    assert figures["tpot"] == pytest.approx((500 - 200) / 4)
    assert figures["e2e"] == pytest.approx(500)


def test_a_single_chunk_has_no_itl_and_a_single_token_no_tpot():
    figures = stream_figures(0.0, [0.1], 0.2, tokens_out=1)
    assert figures["ttft"] == pytest.approx(100)
    assert figures["itl"] is None
    assert figures["tpot"] is None


def test_a_stream_without_content_has_no_ttft():
    assert stream_figures(0.0, [], 0.3, tokens_out=0)["ttft"] is None


def test_percentiles_are_exact_and_interpolated_between_ranks():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([], 50) is None
    figures = distribution([None, 3.0, 1.0, 2.0])
    assert (figures["min"], figures["avg"], figures["max"], figures["p50"]) == (1.0, 2.0, 3.0, 2.0)
    assert set(figures) == {"avg", "min", "max", "p50", "p90", "p95", "p99", "p99.9"}


def samples():
    return [
        Sample(outcome="ok", ttft=100, e2e=1000, tokens_in=10, tokens_out=20, cost=0.002),
        Sample(outcome="ok", ttft=300, e2e=3000, tokens_in=10, tokens_out=20, cost=0.002),
        Sample(outcome="server_error", status=500, e2e=50, error="HTTP 500: boom", at=1.5),
        Sample(outcome="rate_limited", status=429, e2e=5, error="HTTP 429: slow down", at=2.0),
    ]


def test_the_summary_counts_errors_by_kind_with_the_first_examples():
    summary = summarise(samples(), duration_s=2.0)
    assert summary["count"] == 4
    assert summary["success_rate"] == 0.5
    assert summary["error_rate"] == 0.5
    assert summary["errors"] == {"server_error": 1, "rate_limited": 1}
    first = {"outcome": "server_error", "status": 500, "error": "HTTP 500: boom", "at": 1.5}
    assert summary["first_errors"][0] == first
    assert summary["rps"] == 2.0
    assert summary["output_tps"] == 20.0  # 40 tokens of successful requests over 2 s


def test_latencies_count_only_successful_requests():
    summary = summarise(samples(), duration_s=2.0)
    assert summary["e2e"]["min"] == 1000
    assert summary["ttft"]["p50"] == 200


def test_cost_per_thousand_requests_comes_from_the_reported_usage():
    summary = summarise(samples(), duration_s=2.0)
    assert summary["cost"] == pytest.approx(0.004)
    assert summary["cost_per_1k"] == pytest.approx(1.0)  # $0.004 over 4 requests -> $1 per 1,000


def test_goodput_counts_successes_that_meet_every_slo():
    summary = summarise(samples(), duration_s=2.0, slos={"ttft": 200, "e2e": 2000})
    assert summary["goodput_ratio"] == 0.25
    assert summary["goodput_rps"] == 0.5
    assert not meets(Sample(outcome="ok", ttft=None), {"ttft": 200})  # no figure is no evidence


def test_an_empty_run_has_no_rates():
    summary = summarise([], duration_s=1.0)
    assert summary["success_rate"] is None
    assert summary["cost_per_1k"] is None
