"""Verdicts a rollout shows: on fixed seeds, with the numbers behind them in words."""

import json
import random

import numpy as np
import pytest

from probes import sketch
from probes.rollups import RollupDelta
from routing.rollouts.analysis import (
    Arm,
    Guard,
    Metric,
    Tail,
    Verdict,
    arm_from_figures,
    arms_from_totals,
    baseline_threshold,
    guard_levels,
    judge,
    step_thresholds,
    tails_for,
)

ERRORS = Guard(Metric.ERRORS, allowed=0.005)
LATENCY = Guard(Metric.LATENCY_P95, allowed=0.10)


def test_a_clear_error_regression_rolls_back_and_says_why():
    canary, baseline = Arm(412, errors=14), Arm(3690, errors=9)
    judgement = judge(canary, baseline, [ERRORS, LATENCY])
    assert judgement.verdict == Verdict.FAIL
    # The e-value is the closed form that test_sequential checks against numeric integration; errors get 4 of the
    # 5 weights of alpha 0.01 next to p95 latency (threshold 1 / 0.008 = 125).
    assert judgement.sentence == (
        "canary errors 14 of 412 vs baseline 9 of 3,690 (e-value 262,152 > 125, alpha 0.008: worse than the baseline)"
        ": rolling back")
    errors = judgement.metrics[0].evidence
    assert errors["canary"]["rate"] == pytest.approx(14 / 412)
    assert errors["e_fail"] > errors["fail_threshold"] == pytest.approx(125)
    assert errors["ratio_bounds"][0] > 1


def test_the_budget_is_split_by_weight_over_the_tested_guards_only():
    tps = Guard(Metric.TOKENS_PER_S, limit=20.0)
    levels = guard_levels([ERRORS, LATENCY, tps], alpha=0.01)
    assert levels == {Metric.ERRORS: pytest.approx(0.008), Metric.LATENCY_P95: pytest.approx(0.002),
                      Metric.TOKENS_PER_S: None}
    assert guard_levels([LATENCY], alpha=0.01) == {Metric.LATENCY_P95: 0.01}
    every = [Guard(m, allowed=0.1) for m in (Metric.ERRORS, Metric.RATE_LIMITED, Metric.LATENCY_P95, Metric.TTFT_P95)]
    assert sum(guard_levels(every, alpha=0.01).values()) == pytest.approx(0.01)


def test_no_verdict_before_the_minimum_sample():
    judgement = judge(Arm(60, errors=30), Arm(540), [ERRORS])
    assert judgement.verdict == Verdict.INCONCLUSIVE
    assert judgement.sentence == "waiting for the minimum sample: 60 of 100 canary requests: holding"


def test_silence_is_not_a_pass_but_evidence_is():
    # The same 1 % error rate on both arms: a few hundred requests prove nothing within +0.5 pp...
    few = judge(Arm(300, errors=3), Arm(2700, errors=27), [ERRORS])
    assert few.verdict == Verdict.INCONCLUSIVE
    assert "undecided" in few.metrics[0].sentence
    # ...tens of thousands do.
    many = judge(Arm(30_000, errors=300), Arm(30_000, errors=300), [ERRORS])
    assert many.verdict == Verdict.PASS
    assert many.sentence == "every guard within its allowed regression (1 of 1): step passes"
    assert few.sentence == "Error rate not decided yet: holding"
    assert few.metrics[0].sentence.startswith("canary errors 3 of 300 vs baseline 27 of 2,700 (e-values ")
    assert few.metrics[0].sentence.endswith("for within +0.5 pp, both under 100: undecided)")


def test_a_clean_canary_passes_on_its_own_rate_when_nobody_errs():
    judgement = judge(Arm(5000), Arm(5000), [ERRORS])
    assert judgement.verdict == Verdict.PASS


def test_client_errors_never_count_against_the_canary():
    arm = arm_from_figures({"client_error": 80, "rate_limited": 3, "server_error": 2, "truncated": 1}, 400)
    assert (arm.errors, arm.rate_limited) == (3, 3)


def test_a_better_canary_never_fails():
    judgement = judge(Arm(3000, errors=0), Arm(3000, errors=90), [ERRORS])
    assert judgement.verdict == Verdict.PASS


def _sketch(values):
    s = sketch.new()
    for v in values:
        s.add(float(v))
    return s


def test_slow_requests_are_counted_from_the_sketch_bins():
    s = _sketch(range(1, 1001))
    assert sketch.count_above(s, 950) == pytest.approx(50, abs=10)
    assert baseline_threshold(s) == pytest.approx(950, rel=0.02)


def test_the_canary_is_held_to_the_baseline_p95_plus_the_allowance():
    rng = np.random.default_rng(1)
    baseline = _sketch(rng.lognormal(np.log(400), 0.5, 4000))
    canary = _sketch(rng.lognormal(np.log(400), 0.5, 400))
    threshold = baseline_threshold(baseline)
    c_tail, b_tail = tails_for(LATENCY, canary, baseline, threshold)
    assert c_tail.threshold_ms == b_tail.threshold_ms == threshold
    assert c_tail.allowed_ms == pytest.approx(threshold * 1.1)
    assert b_tail.slower == pytest.approx(200, abs=10)
    assert c_tail.beyond_allowed < c_tail.slower


def _latency_arm(rng, requests, scale, threshold_ms, sigma=0.5):
    values = rng.lognormal(np.log(400 * scale), sigma, requests)
    slower, beyond = int((values > threshold_ms).sum()), int((values > threshold_ms * 1.1).sum())
    p95, p99 = np.percentile(values, [95, 99])
    tail = Tail(requests, slower, threshold_ms, beyond, threshold_ms * 1.1, p95_ms=p95, p99_ms=p99)
    return Arm(requests, latency=tail)


def test_latency_half_again_slower_fails_and_the_sentence_names_the_thresholds():
    rng = np.random.default_rng(7)
    threshold = 400 * np.exp(1.645 * 0.5)
    canary = _latency_arm(rng, 300, 1.5, threshold)
    baseline = _latency_arm(rng, 2700, 1.0, threshold)
    judgement = judge(canary, baseline, [LATENCY])
    assert judgement.verdict == Verdict.FAIL
    sentence = judgement.metrics[0].sentence
    assert sentence.startswith(
        f"p95 latency: canary {canary.latency.slower} of 300 slower than the baseline's p95 {threshold:,.0f} ms "
        f"({canary.latency.beyond_allowed} slower than {threshold * 1.1:,.0f} ms) vs baseline "
        f"{baseline.latency.slower:,} of 2,700 (e-value ")
    assert sentence.endswith("worse than the baseline)")


def test_latency_like_the_baseline_passes_once_there_is_evidence():
    rng = np.random.default_rng(8)
    threshold = 400 * np.exp(1.645 * 0.5)
    few = judge(_latency_arm(rng, 150, 1.0, threshold), _latency_arm(rng, 1350, 1.0, threshold), [LATENCY])
    assert few.verdict == Verdict.INCONCLUSIVE
    many = judge(_latency_arm(rng, 10_000, 1.0, threshold), _latency_arm(rng, 10_000, 1.0, threshold), [LATENCY])
    assert many.verdict == Verdict.PASS


def test_an_absolute_limit_is_a_plain_second_layer():
    guard = Guard(Metric.LATENCY_P95, allowed=0.10, limit=3000)
    tail = Tail(500, 25, 1000, 20, 1100, p95_ms=900, p99_ms=3400)
    judgement = judge(Arm(500, latency=tail), Arm(500, latency=tail), [guard])
    assert judgement.verdict == Verdict.FAIL
    assert "beyond its limit (p99 3,400 ms vs p99 3,000 ms)" in judgement.sentence
    cost = Guard(Metric.COST_PER_REQUEST, limit=0.01)
    assert judge(Arm(200, cost=1.0), Arm(200, cost=1.0), [cost]).verdict == Verdict.PASS
    assert judge(Arm(200, cost=4.0), Arm(200, cost=1.0), [cost]).verdict == Verdict.FAIL


@pytest.mark.parametrize("fields", [
    {"metric": "errors"}, {"metric": "errors", "allowed": -0.1}, {"metric": "tokens_per_s", "allowed": 0.1},
    {"metric": "cost_per_request"}, {"metric": "not_a_metric", "allowed": 0.1},
])
def test_a_guard_that_makes_no_sense_is_refused(fields):
    with pytest.raises(ValueError):
        Guard(**fields)


def _identical_rollout(rng, looks=30, per_look=100, share=0.1, error_rate=0.01):
    """Accumulate an identical canary and baseline look by look; return the first non-inconclusive verdict."""
    c_n = b_n = c_err = b_err = 0
    for _ in range(looks):
        canary = sum(rng.random() < share for _ in range(per_look))
        c_n, b_n = c_n + canary, b_n + per_look - canary
        c_err += sum(rng.random() < error_rate for _ in range(canary))
        b_err += sum(rng.random() < error_rate for _ in range(per_look - canary))
        verdict = judge(Arm(c_n, errors=c_err), Arm(b_n, errors=b_err), [ERRORS]).verdict
        if verdict != Verdict.INCONCLUSIVE:
            return verdict
    return Verdict.INCONCLUSIVE


def test_identical_arms_checked_every_look_do_not_roll_back():
    rng = random.Random(2026)
    verdicts = [_identical_rollout(rng) for _ in range(200)]
    assert verdicts.count(Verdict.FAIL) <= 2  # alpha 0.01 over 200 rollouts, each looked at 30 times


def test_evidence_from_earlier_steps_carries_over():
    guards = [ERRORS]
    first = judge(Arm(14_000, errors=140), Arm(14_000, errors=140), guards)
    assert first.verdict == Verdict.INCONCLUSIVE
    step_two = (Arm(14_000, errors=140), Arm(14_000, errors=140))
    alone = judge(*step_two, guards)
    carried = {m.metric: (m.log_fail, m.log_pass) for m in first.metrics}
    together = judge(*step_two, guards, carried=carried)
    assert alone.verdict == Verdict.INCONCLUSIVE
    assert together.verdict == Verdict.PASS
    assert together.metrics[0].log_pass == pytest.approx(2 * first.metrics[0].log_pass)
    assert together.metrics[0].sentence.endswith("; with earlier steps' evidence)")


def test_time_to_first_token_and_429s_use_the_same_machinery():
    ttft = Guard(Metric.TTFT_P95, allowed=0.10)
    slow_start = Tail(300, 90, 800, 80, 880)
    baseline = Tail(2700, 135, 800)
    judgement = judge(Arm(300, ttft=slow_start), Arm(2700, ttft=baseline), [ttft])
    assert judgement.verdict == Verdict.FAIL
    expected = "p95 time to first token: canary 90 of 300 slower than the baseline's p95 800 ms"
    assert judgement.sentence.startswith(expected)
    throttled = judge(Arm(300, rate_limited=30), Arm(2700, rate_limited=27), [Guard(Metric.RATE_LIMITED, allowed=0.01)])
    assert throttled.verdict == Verdict.FAIL
    assert throttled.sentence.startswith("canary 429s 30 of 300 vs baseline 27 of 2,700")


def test_every_verdict_is_storable_as_strict_json():
    cases = [
        (Arm(412, errors=14), Arm(3690, errors=9)),  # fail
        (Arm(5000), Arm(5000)),  # pass on the canary's own rate, no events at all
        (Arm(5000, errors=5000), Arm(5000)),  # everything failed: e-values at their cap
        (Arm(300, errors=3), Arm(2700, errors=27)),  # undecided
    ]
    for canary, baseline in cases:
        stored = json.loads(json.dumps(judge(canary, baseline, [ERRORS]).as_dict(), allow_nan=False))
        assert stored["metrics"][0]["evidence"]["canary"]["requests"] == canary.requests


def _traffic(requests, error_every, slow_every, seed):
    """Return a RollupDelta of gateway-like outcomes: a client error, a server error and slow requests now and then."""
    rng = random.Random(seed)
    total = RollupDelta(None, "traffic", 1)
    for i in range(requests):
        slow = i % slow_every == 0
        latency = rng.uniform(900, 1000) if slow else rng.uniform(100, 300)
        outcome = "server_error" if i % error_every == 0 else "client_error" if i % 7 == 0 else "ok"
        total.add(outcome, latency_ms=latency, ttft_ms=latency / 2, tps=50.0, cost=0.001)
    return total


def test_arms_come_straight_from_merged_rollups():
    baseline = _traffic(3000, error_every=100, slow_every=20, seed=1)
    canary = _traffic(400, error_every=10, slow_every=4, seed=2)
    guards = [ERRORS, LATENCY, Guard(Metric.TTFT_P95, allowed=0.1), Guard(Metric.COST_PER_REQUEST, limit=0.01)]
    thresholds = step_thresholds(baseline)
    assert 300 <= thresholds[Metric.LATENCY_P95] <= 1000
    c_arm, b_arm = arms_from_totals(canary, baseline, guards, thresholds)
    assert (c_arm.requests, c_arm.errors, b_arm.errors) == (400, 40, 30)  # client errors left out
    assert c_arm.latency.slower == 100 and c_arm.ttft.slower == 100
    judgement = judge(c_arm, b_arm, guards)
    assert judgement.verdict == Verdict.FAIL
    assert [m.verdict for m in judgement.metrics] == [Verdict.FAIL, Verdict.FAIL, Verdict.FAIL, Verdict.PASS]
