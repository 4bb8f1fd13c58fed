"""Verdicts a rollout shows, per minute of traffic: on fixed figures, with the numbers behind them in words."""

import json
import math
import random

import numpy as np
import pytest

from probes import sketch
from probes.rollups import RollupDelta
from routing.rollouts.analysis import (
    DEFAULT_GUARDS,
    Guard,
    Metric,
    Minute,
    StepWindow,
    Verdict,
    count_test,
    guard_levels,
    judge,
    rate_minutes,
    threshold,
)
from routing.rollouts.sequential import log_e_worse

ERRORS = Guard(Metric.ERRORS, allowed=0.005)
TTFT = Guard(Metric.TTFT_P95, allowed=0.10)


def _minute(requests, errors=0, kind="server_error", ttft=None, tps=None):
    """Return one arm's RollupDelta of a minute: `errors` failures of `kind` among `requests`."""
    if ttft is None and tps is None:
        return RollupDelta(count=requests, ok=requests - errors, errors={kind: errors} if errors else {})
    delta = RollupDelta()
    for i in range(requests):
        outcome = kind if i < errors else "ok"
        delta.add(outcome, ttft_ms=None if ttft is None else float(ttft[i]), tps=None if tps is None else tps[i])
    return delta


def _window(canary, baseline, reference=None):
    """canary, baseline: [(requests, errors)] per minute."""
    return StepWindow([_minute(*m) for m in canary], [_minute(*m) for m in baseline], reference)


def test_the_fail_e_value_is_the_mixture_at_the_allowed_boundary():
    # One minute, zero tolerance: the boundary is ratio 1, and the e-value is the mean of the two priors' closed
    # forms that test_sequential checks against numeric integration (262,152 for 14 of 412 canary errors vs 9 of
    # 3,690 with the prior on a doubled rate).
    test = count_test([Minute(14, 412, 9, 3690)], boundary=1.0)
    doubled, eightfold = log_e_worse(14, 9, 412 / 4102), log_e_worse(14, 9, 412 / 4102, ratio=8.0)
    assert math.exp(doubled) == pytest.approx(262_152.317, rel=1e-6)
    assert math.exp(test.log_fail) == pytest.approx((math.exp(doubled) + math.exp(eightfold)) / 2, rel=1e-9)
    assert test.phi == 1.0


def test_a_regression_spread_over_minutes_rolls_back_and_says_why():
    window = _window([(80, 3)] * 5, [(740, 2)] * 5)
    judgement = judge(window, [ERRORS])
    assert judgement.verdict == Verdict.FAIL
    assert judgement.sentence.startswith(
        "canary errors 15 of 400 (3.8 %) vs baseline 10 of 3,700 (0.3 %) (clearly beyond +0.5 pp: e-value ")
    assert judgement.sentence.endswith("alpha 0.01): rolling back")
    evidence = judgement.metrics[0].evidence
    assert evidence["e_fail"] > evidence["fail_threshold"] == pytest.approx(100)
    assert evidence["progress"]["fail"] == 1.0


def test_one_bad_minute_on_the_canary_is_an_incident_not_a_regression():
    # The canary's provider fails half its requests for one minute, then is as good as the baseline.
    canary = [(80, 1), (80, 40), (80, 1), (80, 0), (80, 1)]
    window = _window(canary, [(720, 7)] * 5)
    judgement = judge(window, [ERRORS])
    assert judgement.verdict == Verdict.INCONCLUSIVE
    assert judgement.incident
    assert judgement.sentence.endswith(": canary provider incident, holding")
    assert "worse only in one spell of a minute or two" in judgement.metrics[0].sentence
    # The same failures spread over every minute are a regression.
    spread = judge(_window([(80, 9)] * 5, [(720, 7)] * 5), [ERRORS])
    assert spread.verdict == Verdict.FAIL and not spread.incident


def test_bursty_minutes_weigh_the_counts_down():
    from routing.rollouts.sequential import dispersion

    # Hand-computed: 2 events a minute split 2:0 then 0:2 at an even share; the window's ratio is 1, so each
    # minute expects 1 +/- sqrt(0.5): chi-square 2 + 2 = 4 on 1 degree of freedom, shrunk by 4 prior ones:
    # (4 + 4) / (4 + 1) = 1.6.
    assert dispersion([(2, 10, 0, 10), (0, 10, 2, 10)]) == pytest.approx(1.6)
    assert dispersion([(1, 10, 1, 10), (1, 10, 1, 10)]) == 1.0
    assert dispersion([(5, 10, 5, 10)]) == 1.0  # one minute: nothing to compare


def test_a_canary_inside_the_allowance_passes_and_never_rolls_back_at_high_traffic():
    # 500 requests/s for 10 minutes: the canary is 0.2 pp worse, inside +0.5 pp.
    window = _window([(15_000, 180)] * 10, [(15_000, 150)] * 10)
    judgement = judge(window, [ERRORS])
    assert judgement.verdict == Verdict.PASS
    assert judgement.sentence == "every guard within its allowed regression (1 of 1): step passes"


def test_clearly_beyond_the_allowance_rolls_back_and_the_zone_between_holds():
    beyond = judge(_window([(15_000, 330)] * 10, [(15_000, 150)] * 10), [ERRORS])  # +1.2 pp
    assert beyond.verdict == Verdict.FAIL
    between = judge(_window([(15_000, 225)] * 10, [(15_000, 150)] * 10), [ERRORS])  # +0.5 pp: the boundary itself
    assert between.verdict == Verdict.INCONCLUSIVE
    assert "between: not clearly beyond +0.5 pp, not yet shown within it" in between.sentence
    assert between.sentence.endswith(": holding")


def test_zero_tolerance_rolls_back_on_any_proven_regression():
    zero = Guard(Metric.ERRORS, allowed=0)
    assert judge(_window([(15_000, 195)] * 10, [(15_000, 150)] * 10), [zero]).verdict == Verdict.FAIL
    assert judge(_window([(15_000, 195)] * 10, [(15_000, 150)] * 10), [ERRORS]).verdict == Verdict.PASS


def test_the_rollback_side_runs_from_the_first_requests_but_a_pass_waits_for_the_minimum_sample():
    failing = judge(_window([(10, 5), (10, 4), (10, 6)], [(90, 1)] * 3), [ERRORS])
    assert failing.verdict == Verdict.FAIL  # 30 canary requests, far under the 100 a pass needs
    clean = judge(_window([(20, 0)] * 3, [(50_000, 0)] * 3), [Guard(Metric.ERRORS, allowed=0.2)])
    assert clean.verdict == Verdict.INCONCLUSIVE
    assert clean.sentence == ("every guard within its allowed regression, but only 60 of the 100 canary requests "
                              "a pass needs: holding")
    assert judge(_window([(20, 0)] * 3, [(50_000, 0)] * 3), [Guard(Metric.ERRORS, allowed=0.2)],
                 min_canary_requests=50).verdict == Verdict.PASS


def test_an_arm_without_traffic_is_inconclusive_not_a_crash():
    judgement = judge(_window([(100, 0)], [(0, 0)]), [ERRORS, TTFT])
    assert judgement.verdict == Verdict.INCONCLUSIVE
    assert judgement.sentence == "no traffic on the baseline in this step yet: holding"
    assert judge(StepWindow([], []), [ERRORS]).verdict == Verdict.INCONCLUSIVE


def test_client_errors_and_429s_never_count_as_the_canarys_errors():
    delta = RollupDelta()
    for outcome in ["client_error"] * 80 + ["rate_limited"] * 3 + ["server_error"] * 2 + ["truncated"] + ["ok"] * 10:
        delta.add(outcome)
    minutes = rate_minutes(StepWindow([delta], [delta]), Metric.ERRORS)
    assert minutes == [Minute(3, 96, 3, 96)]
    assert rate_minutes(StepWindow([delta], [delta]), Metric.RATE_LIMITED) == [Minute(3, 96, 3, 96)]


def test_a_better_canary_never_fails():
    judgement = judge(_window([(3000, 0)] * 3, [(3000, 90)] * 3), [ERRORS])
    assert judgement.verdict == Verdict.PASS


def _timed(rng, requests, scale=1.0, sigma=0.5):
    return rng.lognormal(np.log(400 * scale), sigma, requests)


def _ttft_window(rng, canary_scale=1.0, canary_sigma=0.5, minutes=10, canary=100, baseline=900):
    c = [_minute(canary, ttft=_timed(rng, canary, canary_scale, canary_sigma)) for _ in range(minutes)]
    b = [_minute(baseline, ttft=_timed(rng, baseline)) for _ in range(minutes)]
    return StepWindow(c, b)


def test_the_latency_thresholds_are_baseline_quantiles_from_enough_timings():
    rng = np.random.default_rng(1)
    window = StepWindow([], [_minute(150, ttft=_timed(rng, 150))])
    assert threshold(window, Metric.TTFT_P95, 0.95) is None  # 150 timings: too few to trust a p95
    window = StepWindow([], [_minute(4000, ttft=_timed(rng, 4000))])
    p95 = threshold(window, Metric.TTFT_P95, 0.95)
    assert p95 == pytest.approx(400 * math.exp(1.645 * 0.5), rel=0.05)
    assert threshold(window, Metric.TTFT_P95, 0.5) == pytest.approx(400, rel=0.05)


def test_a_slower_first_token_fails_and_the_sentence_names_the_quantiles():
    judgement = judge(_ttft_window(np.random.default_rng(7), canary_scale=1.5), [TTFT])
    assert judgement.verdict == Verdict.FAIL
    sentence = judgement.metrics[0].sentence
    assert sentence.startswith("p95 time to first token: median ")
    assert "; p95 " in sentence and "clearly beyond +10 %" in sentence
    quantiles = judgement.metrics[0].evidence["quantiles"]
    assert [q["q"] for q in quantiles] == [0.5, 0.95]
    assert quantiles[1]["canary_limit_ms"] == pytest.approx(quantiles[1]["baseline_ms"] * 1.1)


def test_a_heavier_tail_alone_is_caught_at_the_p95():
    # Median unchanged, p95 +40 %: the median passes, the p95 fails.
    judgement = judge(_ttft_window(np.random.default_rng(3), canary_sigma=0.5 + math.log(1.4) / 1.645,
                                   minutes=15), [TTFT])
    assert judgement.verdict == Verdict.FAIL
    verdicts = [q["verdict"] for q in judgement.metrics[0].evidence["quantiles"]]
    assert verdicts[1] == "fail" and verdicts[0] != "fail"


def test_a_first_token_like_the_baseline_passes_once_there_is_evidence():
    rng = np.random.default_rng(8)
    assert judge(_ttft_window(rng, minutes=1), [TTFT]).verdict == Verdict.INCONCLUSIVE
    assert judge(_ttft_window(rng, minutes=10, canary=1000, baseline=1000), [TTFT]).verdict == Verdict.PASS


def test_time_per_output_token_comes_from_the_streams_tokens_per_second():
    tpot = Guard(Metric.TPOT_P95, allowed=0.10)
    rng = np.random.default_rng(4)
    canary = [_minute(200, tps=1000 / (_timed(rng, 200) / 16 * 1.5)) for _ in range(8)]  # 37.5 ms a token
    baseline = [_minute(800, tps=1000 / (_timed(rng, 800) / 16)) for _ in range(8)]  # 25 ms
    assert baseline[0].tpot.count == 800
    assert sketch.quantiles(baseline[0].tpot, (0.5,))[0.5] == pytest.approx(25, rel=0.1)
    assert judge(StepWindow(canary, baseline), [tpot]).verdict == Verdict.FAIL


def test_an_absolute_limit_needs_proof_not_a_point_estimate():
    limited = Guard(Metric.ERRORS, allowed=0.5, limit=0.02)
    # 2.5 % over 200 requests is above the 2 % limit as a point estimate, but proves nothing.
    noisy = judge(_window([(100, 3), (100, 2)], [(900, 9), (900, 9)]), [limited])
    assert noisy.verdict != Verdict.FAIL
    proven = judge(_window([(500, 50)] * 4, [(900, 9)] * 4), [limited])
    assert proven.verdict == Verdict.FAIL
    assert "beyond its limit (10.0 % vs 2.0 %)" in proven.sentence
    p99 = Guard(Metric.TTFT_P95, allowed=5.0, limit=2000)
    rng = np.random.default_rng(5)
    slow = judge(_ttft_window(rng, canary_scale=3.0, minutes=5), [p99])  # p99 ~5,000 ms
    assert slow.verdict == Verdict.FAIL and "beyond its limit (p99 " in slow.sentence


def test_the_mean_limits_wait_for_the_minimum_sample():
    cost = Guard(Metric.COST_PER_REQUEST, limit=0.01)
    canary = RollupDelta(count=50, ok=50, cost=4)
    assert judge(StepWindow([canary], [RollupDelta(count=50, ok=50)]), [cost]).verdict == Verdict.INCONCLUSIVE
    canary = RollupDelta(count=200, ok=200, cost=4)
    assert judge(StepWindow([canary], [RollupDelta(count=200, ok=200)]), [cost]).verdict == Verdict.FAIL


def test_failure_evidence_carries_over_from_step_to_step():
    step = _window([(60, 2)] * 5, [(540, 3)] * 5)
    alone = judge(step, [ERRORS])
    assert alone.verdict == Verdict.INCONCLUSIVE
    together = judge(step, [ERRORS], carried={Metric.ERRORS: alone.metrics[0].log_fail + math.log(50)})
    assert together.verdict == Verdict.FAIL
    assert together.metrics[0].sentence.endswith("; with earlier steps' evidence)")
    # A clean step passes on its own traffic and hands both kinds of evidence on.
    clean = _window([(3000, 30)] * 5, [(3000, 30)] * 5)
    assert judge(clean, [ERRORS]).verdict == Verdict.PASS
    assert set(judge(clean, [ERRORS]).metrics[0].as_dict()) == {"metric", "verdict", "sentence", "evidence",
                                                                  "log_fail", "log_pass", "incident"}


def test_the_budget_is_split_by_weight_over_the_tested_guards_only():
    tps = Guard(Metric.TOKENS_PER_S, limit=20.0)
    levels = guard_levels([ERRORS, TTFT, tps], alpha=0.01)
    assert levels == {Metric.ERRORS: pytest.approx(0.008), Metric.TTFT_P95: pytest.approx(0.002),
                      Metric.TOKENS_PER_S: None}
    defaults = [Guard(**g) for g in DEFAULT_GUARDS]
    assert [g.metric for g in defaults] == [Metric.ERRORS, Metric.TTFT_P95, Metric.TPOT_P95]
    assert sum(guard_levels(defaults).values()) == pytest.approx(0.01)


@pytest.mark.parametrize("fields", [
    {"metric": "errors"}, {"metric": "errors", "allowed": -0.1}, {"metric": "errors", "allowed": 5},
    {"metric": "errors", "allowed": 0.01, "limit": 3}, {"metric": "tokens_per_s", "allowed": 0.1},
    {"metric": "cost_per_request"}, {"metric": "not_a_metric", "allowed": 0.1},
])
def test_a_guard_that_makes_no_sense_is_refused(fields):
    with pytest.raises(ValueError):
        Guard(**fields)


def _identical_rollout(rng, minutes=30, per_minute=100, share=0.1, error_rate=0.01):
    """Add an identical canary and baseline minute by minute; return the first decided verdict."""
    canary, baseline = [], []
    for _ in range(minutes):
        n = sum(rng.random() < share for _ in range(per_minute))
        canary.append((n, sum(rng.random() < error_rate for _ in range(n))))
        baseline.append((per_minute - n, sum(rng.random() < error_rate for _ in range(per_minute - n))))
        verdict = judge(_window(canary, baseline), [ERRORS]).verdict
        if verdict != Verdict.INCONCLUSIVE:
            return verdict
    return Verdict.INCONCLUSIVE


def test_identical_arms_checked_every_minute_do_not_roll_back():
    rng = random.Random(2026)
    verdicts = [_identical_rollout(rng) for _ in range(100)]
    assert verdicts.count(Verdict.FAIL) <= 1  # alpha 0.01 over 100 rollouts, each looked at 30 times


def test_every_verdict_is_storable_as_strict_json():
    cases = [
        _window([(80, 3)] * 5, [(740, 2)] * 5),  # fail
        _window([(5000, 0)], [(5000, 0)]),  # pass on the canary's own rate, no events at all
        _window([(500, 500)] * 3, [(500, 0)] * 3),  # everything failed: e-values at their cap
        _window([(100, 1)], [(900, 9)]),  # undecided
        _window([(80, 1), (80, 40), (80, 1)], [(720, 7)] * 3),  # an incident
    ]
    for window in cases:
        stored = json.loads(json.dumps(judge(window, [ERRORS, TTFT]).as_dict(), allow_nan=False))
        assert stored["metrics"][0]["evidence"]["progress"]["fail"] >= 0


def test_an_arms_own_variation_is_pearsons_chi_square_shrunk_toward_one():
    from routing.rollouts.analysis import arm_dispersion

    # Hand-computed: 2 and 0 failures in two minutes of 100 at a 1 % rate: each minute is 1 away from its
    # expected 1 with variance 0.99, chi-square 2 / 0.99 on 1 degree of freedom; shrunk by 4: (4 + 2.0202) / 5.
    assert arm_dispersion([(2, 100), (0, 100)]) == pytest.approx((4 + 2 / 0.99) / 5)
    assert arm_dispersion([(1, 100), (1, 100)]) == 1.0
    assert arm_dispersion([(0, 100), (0, 100)]) == 1.0  # no events: nothing to say


def test_thin_traffic_can_roll_back_on_the_canarys_own_rate_against_the_baselines_history():
    from routing.rollouts.analysis import _own_rate_fail

    minutes = [Minute(2, 10, 0, 90), Minute(2, 10, 1, 90), Minute(2, 10, 0, 90)]  # 6 of 30 canary requests fail
    proven = _own_rate_fail(minutes, events=9, requests=900, allowed=0.01, alpha=0.0067, phi=1.0)
    assert proven > math.log(100)
    clean = [Minute(0, 10, 0, 90)] * 3
    assert _own_rate_fail(clean, events=9, requests=900, allowed=0.01, alpha=0.0067, phi=1.0) < 0
    # A baseline that failed as often over its look-back leaves nothing to prove.
    assert _own_rate_fail(minutes, events=180, requests=900, allowed=0.01, alpha=0.0067, phi=1.0) < math.log(10)


def test_the_worst_minute_is_left_out_only_when_it_is_an_outlier_among_the_canarys_own():
    from routing.rollouts.analysis import is_outlier

    # Thin traffic, a canary bad in every minute: the worst holds 2 of 3; the rest fail 4 of 12, a rate of
    # (4 + 1) / (12 + 2) = 0.357; P(X >= 2 | 3, 0.357) = 3 x 0.357^2 x 0.643 + 0.357^3 = 0.291: not an outlier.
    thin = [Minute(2, 3, 0, 27), Minute(1, 3, 0, 27), Minute(0, 3, 1, 27), Minute(1, 3, 0, 27), Minute(0, 3, 0, 27)]
    assert not is_outlier(thin, (0, 1))
    # A burst: 8 of 60 in one minute, 1 of 180 in the rest (rate 2 / 182); P(X >= 8 | 60, 0.011) ~ 5e-7, under
    # 0.01 over the 7 spans of one or two minutes it was the worst of.
    burst = [Minute(8, 60, 0, 540), Minute(0, 60, 1, 540), Minute(1, 60, 0, 540), Minute(0, 60, 0, 540)]
    assert is_outlier(burst, (0, 1))
    assert not is_outlier([Minute(8, 60, 0, 540)], (0, 1))  # one minute: nothing to compare it with
    # ... so a single minute, however bad, is left out of the rollback side: it may be all incident.
    alone = count_test([Minute(10, 36, 1, 272)], boundary=2.0)
    assert alone.outlier and alone.log_fail > math.log(1000) and alone.log_fail_robust == -math.inf


def test_a_bad_spell_across_a_minutes_edge_is_left_out_as_one():
    # A 30 s spell from 0:45 to 1:15: 10 failures of 36 in the first minute, 5 of 32 in the second.
    spell = [Minute(10, 36, 1, 272), Minute(5, 32, 0, 270)]
    test = count_test(spell, boundary=2.0)
    assert test.worst == (0, 2) and test.outlier and test.log_fail_robust == -math.inf  # nothing else to go on
    clean = [Minute(0, 30, 1, 270)] * 3
    later = count_test(spell + clean, boundary=2.0)
    assert later.worst == (0, 2) and later.outlier and later.log_fail_robust < 0
    assert later.log_fail > math.log(150)  # left in, it would roll back (errors alone: 1 / 150)
    # Ten seconds into the next minute, four clean requests beside 64 say nothing: the minute is still left out.
    sliver = count_test([Minute(15, 64, 1, 536), Minute(0, 4, 0, 79)], boundary=2.0)
    assert sliver.worst == (0, 1) and sliver.outlier and sliver.log_fail_robust <= 0


def test_a_thin_canary_failing_in_every_minute_is_not_made_to_prove_it_without_its_worst_minute():
    # 0.5 requests/s on the route, a 10 % step: 3 canary requests a minute, 2 of every 9 failing.
    canary = [(3, 2), (3, 0), (3, 1), (3, 1), (3, 0), (3, 2), (3, 1), (3, 0), (3, 1), (3, 1)]
    window = _window(canary, [(27, 0)] * 9 + [(27, 1)], reference=[_minute(27, 0)] * 25 + [_minute(27, 1)] * 5)
    test = count_test(rate_minutes(window, Metric.ERRORS), boundary=2.0)
    assert not test.outlier and test.log_fail_robust == test.log_fail
    assert judge(window, [Guard(Metric.ERRORS, allowed=0.01)]).verdict == Verdict.FAIL


def test_the_own_rate_route_weighs_the_canarys_bad_spells():
    from routing.rollouts.analysis import _own_rate_fail, arm_dispersion

    # The same 18 failures of 360, even over six minutes or in three of them (spells): the spells' chi-square
    # over the canary's own rate (0.05) is 6 x (6 or 0 - 3)^2 / 2.85 = 54 / 2.85 = 18.95 on 5 degrees of freedom,
    # shrunk by 4: phi = (4 + 18.95) / 9 = 2.55, so the spells count as 18 / 2.55 failures.
    even = [Minute(3, 60, 0, 540)] * 6
    spells = [Minute(6, 60, 0, 540), Minute(0, 60, 0, 540)] * 3
    assert arm_dispersion([(m.canary, m.canary_n) for m in spells]) == pytest.approx((4 + 54 / 2.85) / 9)
    args = {"events": 9, "requests": 16_200, "allowed": 0.01, "alpha": 0.0067, "phi": 1.0}
    assert _own_rate_fail(spells, **args) < _own_rate_fail(even, **args) - 2


def test_a_step_after_passed_ones_needs_half_the_pass_bar_from_its_own_traffic():
    # An identical canary, 3 minutes of 1,000 requests at 1 %: its own pass e-value is 6.74, short of 1 / 0.05.
    window = _window([(1000, 10)] * 3, [(9000, 90)] * 3)
    alone = judge(window, [ERRORS]).metrics[0]
    assert alone.verdict == Verdict.INCONCLUSIVE and alone.evidence["e_pass"] == pytest.approx(6.736, abs=0.01)
    # After steps that showed e = 20 (log 3.0), the step needs e^(ln 20 - 0.5 ln 20) = sqrt(20) = 4.47 itself.
    after = judge(window, [ERRORS], carried_pass={Metric.ERRORS: 3.0})
    assert after.verdict == Verdict.PASS
    assert after.metrics[0].evidence["pass_threshold"] == pytest.approx(math.sqrt(20))
    assert after.metrics[0].log_pass == pytest.approx(3.0 + math.log(6.736), abs=0.01)  # what the next step gets
    # Less carried covers less: ln 20 - 0.7 leaves e >= 20 / e^0.7 = 9.93 for this step.
    partly = judge(window, [ERRORS], carried_pass={Metric.ERRORS: 0.7}).metrics[0]
    assert partly.verdict == Verdict.INCONCLUSIVE and partly.evidence["pass_threshold"] == pytest.approx(9.93, abs=0.01)
    # However much earlier steps showed, a step whose own traffic is against the canary never passes.
    worse = judge(_window([(1000, 14)] * 3, [(9000, 90)] * 3), [ERRORS], carried_pass={Metric.ERRORS: 50.0})
    assert worse.verdict != Verdict.PASS


def test_the_pass_level_is_looser_before_the_step_that_promotes():
    from routing.rollouts.analysis import pass_alpha_of, pass_bar

    plan = [{"weight": 10}, {"weight": 25}, {"weight": 50}, {"weight": 100}]
    assert [pass_alpha_of(plan, i) for i in range(3)] == [0.25, 0.25, 0.05]
    assert pass_alpha_of([{"weight": 10}, {"weight": 50}], 1) == 0.05  # the last step's pass promotes
    assert pass_alpha_of([{"weight": 10}, {"pause": True}, {"weight": 100}], 0) == 0.25  # a human approves next
    # The bar in logs: ln 4 alone; ln 20 alone; after ln 4 was shown, ln 20 - ln 4 = ln 5; never below ln 20 / 2.
    assert pass_bar(0.25) == pytest.approx(math.log(4))
    assert pass_bar(0.05) == pytest.approx(math.log(20))
    assert pass_bar(0.05, math.log(4)) == pytest.approx(math.log(5))
    assert pass_bar(0.05, 10.0) == pytest.approx(math.log(20) / 2)
    # The same evidence (an identical canary's e = 6.74) passes a first step of four but not a promotion.
    window = _window([(1000, 10)] * 3, [(9000, 90)] * 3)
    assert judge(window, [ERRORS], pass_alpha=0.25).verdict == Verdict.PASS
    assert judge(window, [ERRORS], pass_alpha=0.05).verdict == Verdict.INCONCLUSIVE
