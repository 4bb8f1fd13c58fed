"""Canary vs baseline over the same window: a pass / fail / inconclusive verdict per guard, with its evidence.

Pure functions over per-arm figures (as merged from the route's rollups); no
database. Every guard goes through the same anytime-valid count test
(`sequential`), conditional on the canary's share of requests, with two
one-sided questions:

- fail: is the canary worse than the baseline at all? H0 "no difference":
  each event lands on the canary with probability equal to its share.
- pass: is any regression within what the guard allows? H0 "the regression
  is exactly the allowed one"; rejecting it is evidence of no larger
  regression. Silence never passes.

Errors and 429s: the events are each arm's guarded failures; "+0.5 pp" is the
rate ratio (baseline rate + 0.5 pp) / baseline rate at the baseline's observed
rate, or (second route) the canary's own rate proven below 0.5 pp.

p95 latency and p95 time to first token: the events are requests slower than
the baseline's p95 t (frozen by the caller for the step). To fail, the canary's
count above t is compared with the baseline's (ratio 1). To pass with +10 %,
the canary's count above t x 1.1 is compared with the baseline's count above
t: "canary p95 <= 1.1 x baseline p95" is exactly "the canary's share above
1.1 t <= the baseline's share above t (5 %)", so the allowed regression is
the rate ratio 1 on these counts, whatever the shape of the distribution.

The false-alarm budget alpha is split across the tested guards by weight
(BUDGET_WEIGHTS: errors first), for failing and for passing alike; guards judged
by an absolute limit alone spend none of it. No verdict before a minimum number
of canary requests.
"""

import math
from dataclasses import asdict, dataclass, field

from django.db.models import TextChoices

from probes import sketch
from routing.outcomes import DEPLOYMENT_FAILURES, Outcome

from .choices import Verdict  # noqa: F401  (analysis.Verdict is its public name too)
from .sequential import Side, log_e_ratio, log_e_value, log_e_worse, ratio_bounds

ALPHA = 0.01
MIN_CANARY_REQUESTS = 100
P95 = 0.95

# Outcome kinds that count against a deployment (never the client's own).
# The lead's routing/outcomes.py will own this set; until then the values of probes.models.Outcome.
GUARDED_ERROR_KINDS = DEPLOYMENT_FAILURES  # the deployment's failures; never the client's or a key's
RATE_LIMITED_KIND = Outcome.RATE_LIMITED


class Metric(TextChoices):
    ERRORS = "errors", "Error rate"
    RATE_LIMITED = "rate_limited", "429 rate"
    LATENCY_P95 = "latency_p95", "p95 latency"
    TTFT_P95 = "ttft_p95", "p95 time to first token"
    TOKENS_PER_S = "tokens_per_s", "Tokens per second"
    COST_PER_REQUEST = "cost_per_request", "Cost per request"


RATE_METRICS = (Metric.ERRORS, Metric.RATE_LIMITED)
TAIL_METRICS = (Metric.LATENCY_P95, Metric.TTFT_P95)
# Means without a per-request spread in the rollups: only their absolute limits are judged.
LIMIT_ONLY_METRICS = (Metric.TOKENS_PER_S, Metric.COST_PER_REQUEST)
# Shares of alpha by importance (Bonferroni with weights: the levels still add up to alpha). A failed
# request is what a user feels first; a slower tail is caught at a small level anyway, because a real
# latency regression moves many requests past the baseline's p95 (bench/RESULTS.md).
BUDGET_WEIGHTS = {Metric.ERRORS: 4, Metric.RATE_LIMITED: 2, Metric.LATENCY_P95: 1, Metric.TTFT_P95: 1}


@dataclass(frozen=True)
class Guard:
    """One guarded metric: `allowed` regression and an optional absolute `limit`.

    allowed is in points for rates (0.005 = +0.5 pp) and relative for tails
    (0.10 = +10 % p95). limit is a maximum rate for rates, a maximum p99 in ms
    for tails, a minimum for tokens per second and a maximum for cost per request.
    """

    metric: Metric
    allowed: float | None = None
    limit: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "metric", Metric(self.metric))
        if self.metric in LIMIT_ONLY_METRICS and (self.allowed is not None or self.limit is None):
            raise ValueError(f"{self.metric} takes an absolute limit and no allowed regression")
        if self.metric not in LIMIT_ONLY_METRICS and (self.allowed is None or self.allowed < 0):
            raise ValueError(f"{self.metric} needs a non-negative allowed regression")


@dataclass(frozen=True)
class Tail:
    """One arm's requests with a timing: how many were slower than `threshold_ms` (the baseline's p95)
    and, for the canary, than `allowed_ms` (that p95 plus the allowed regression); its percentiles."""

    timed: int
    slower: int
    threshold_ms: float
    beyond_allowed: int | None = None
    allowed_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class Arm:
    """One arm's figures over the window."""

    requests: int
    errors: int = 0
    rate_limited: int = 0
    latency: Tail | None = None
    ttft: Tail | None = None
    tps_sum: float = 0.0
    tps_count: int = 0
    cost: float = 0.0

    def count_of(self, metric):
        return self.errors if metric == Metric.ERRORS else self.rate_limited

    def tail_of(self, metric):
        return self.latency if metric == Metric.LATENCY_P95 else self.ttft

    def mean_of(self, metric):
        """Return tokens per second or cost per request, or None without data."""
        if metric == Metric.TOKENS_PER_S:
            return self.tps_sum / self.tps_count if self.tps_count else None
        return self.cost / self.requests if self.requests else None


@dataclass
class MetricVerdict:
    """One guard's verdict; log_fail and log_pass are its e-values so far (in logs), to carry to the next step."""

    metric: Metric
    verdict: Verdict
    sentence: str
    evidence: dict = field(default_factory=dict)
    log_fail: float = 0.0
    log_pass: float = 0.0

    def as_dict(self):
        return {"metric": str(self.metric), "verdict": str(self.verdict), "sentence": self.sentence,
                "evidence": self.evidence, "log_fail": self.log_fail, "log_pass": self.log_pass}


@dataclass
class Judgement:
    verdict: Verdict
    sentence: str
    metrics: list

    def as_dict(self):
        return {"verdict": str(self.verdict), "sentence": self.sentence,
                "metrics": [m.as_dict() for m in self.metrics]}


# --- building arms from rollups ------------------------------------------------------


def baseline_threshold(latency_sketch):
    """Return the p95 in ms of a sketch (the baseline's, frozen at the step's start), or None when empty."""
    return sketch.quantiles(latency_sketch, (P95,))[P95]


def tail_from_sketch(latency_sketch, threshold_ms, allowed_ms=None):
    """Return the Tail of one arm's sketch against threshold_ms (and allowed_ms when given)."""
    q = sketch.quantiles(latency_sketch, (P95, 0.99))
    beyond = None if allowed_ms is None else sketch.count_above(latency_sketch, allowed_ms)
    slower = sketch.count_above(latency_sketch, threshold_ms)
    return Tail(int(latency_sketch.count), slower, threshold_ms, beyond, allowed_ms, q[P95], q[0.99])


def arm_from_figures(errors, count, latency=None, ttft=None, tps_sum=0.0, tps_count=0, cost=0.0):
    """Return an Arm from merged rollup figures: errors by kind, sketches already turned into Tails."""
    guarded = sum(n for kind, n in errors.items() if kind in GUARDED_ERROR_KINDS)
    return Arm(count, guarded, errors.get(RATE_LIMITED_KIND, 0), latency, ttft, tps_sum, tps_count, float(cost))


def tails_for(guard, canary_sketch, baseline_sketch, threshold_ms):
    """Return (canary Tail, baseline Tail) for a tail guard, threshold_ms being the baseline's frozen p95."""
    canary = tail_from_sketch(canary_sketch, threshold_ms, threshold_ms * (1 + guard.allowed))
    return canary, tail_from_sketch(baseline_sketch, threshold_ms)


def step_thresholds(baseline_total):
    """Return {tail metric: the baseline's p95 in ms} from its merged rollup totals, to freeze for a step."""
    return {Metric.LATENCY_P95: baseline_threshold(baseline_total.latency),
            Metric.TTFT_P95: baseline_threshold(baseline_total.ttft)}


def arms_from_totals(canary_total, baseline_total, guards, thresholds):
    """Return (canary Arm, baseline Arm) from merged rollup totals (probes.rollups.RollupDelta's fields).

    thresholds is step_thresholds() of the baseline, frozen when the step began;
    a tail guard without a threshold (no baseline timings yet) gets no Tail.
    """
    tails = {"canary": {}, "baseline": {}}
    for guard in guards:
        threshold = thresholds.get(guard.metric) if guard.metric in TAIL_METRICS else None
        if threshold is None:
            continue
        field_name = "latency" if guard.metric == Metric.LATENCY_P95 else "ttft"
        canary_sketch, baseline_sketch = getattr(canary_total, field_name), getattr(baseline_total, field_name)
        tails["canary"][field_name], tails["baseline"][field_name] = tails_for(
            guard, canary_sketch, baseline_sketch, threshold)
    return tuple(
        arm_from_figures(total.errors, total.count, tps_sum=total.tps_sum, tps_count=total.tps_count,
                         cost=total.cost, **tails[arm])
        for arm, total in (("canary", canary_total), ("baseline", baseline_total))
    )


# --- judging ---------------------------------------------------------------------------


def judge(canary, baseline, guards, alpha=ALPHA, min_canary_requests=MIN_CANARY_REQUESTS, carried=None):
    """Return the Judgement of canary vs baseline (Arms over the same window, the current step's) under guards.

    carried maps a metric to (log_fail, log_pass) of the rollout's earlier steps
    (their MetricVerdicts' final values): e-processes of successive steps
    multiply and stay valid. Fail if any guard fails, pass if every guard
    passes, otherwise inconclusive. Raises ValueError without guards.
    """
    if not guards:
        raise ValueError("a rollout needs at least one guard")
    carried = carried or {}
    if canary.requests < min_canary_requests:
        return _waiting(canary, guards, min_canary_requests, carried)
    levels = guard_levels(guards, alpha)
    metrics = [judge_metric(guard, canary, baseline, levels[guard.metric], carried.get(guard.metric, (0.0, 0.0)))
               for guard in guards]
    return Judgement(_overall(metrics), _overall_sentence(metrics), metrics)


def guard_levels(guards, alpha=ALPHA):
    """Return {metric: its level}: alpha split over the tested guards in proportion to BUDGET_WEIGHTS
    (limit-only guards get none; their levels sum to alpha)."""
    total = sum(BUDGET_WEIGHTS.get(g.metric, 0) for g in guards)
    return {g.metric: alpha * BUDGET_WEIGHTS[g.metric] / total if g.metric in BUDGET_WEIGHTS else None
            for g in guards}


def judge_metric(guard, canary, baseline, alpha, carried=(0.0, 0.0)):
    """Return the MetricVerdict of one guard at level alpha (its share of the budget)."""
    if guard.metric in RATE_METRICS:
        verdict = _judge_rate(guard, canary, baseline, alpha, carried)
    elif guard.metric in TAIL_METRICS:
        verdict = _judge_tail(guard, canary, baseline, alpha, carried)
    else:
        verdict = _judge_mean(guard, canary, baseline)
    return _apply_limit(guard, canary, verdict)


def _judge_rate(guard, canary, baseline, alpha, carried):
    """Errors or 429s: fail on any proven excess, pass on the allowed points' ratio (or the canary's own rate)."""
    hits, misses = canary.count_of(guard.metric), baseline.count_of(guard.metric)
    share = canary.requests / (canary.requests + baseline.requests)
    base_rate = (misses + 0.5) / (baseline.requests + 1)  # never 0, so the ratio stays finite
    allowed_ratio = 1 + guard.allowed / base_rate
    fail = log_e_worse(hits, misses, share)
    # Two routes to passing, averaged (the mean of e-values is one): the ratio test, or the
    # canary's own rate below the allowed points (enough when neither arm sees any event).
    within = log_e_ratio(hits, misses, share, allowed_ratio, Side.BELOW)
    own = log_e_value(hits, canary.requests - hits, guard.allowed, Side.BELOW) if guard.allowed > 0 else -math.inf
    evidence = _rate_evidence(guard, canary, baseline, share, allowed_ratio, alpha)
    verdict = _decide(guard, fail, _log_mean(within, own), carried, alpha, evidence)
    verdict.sentence = _rate_sentence(guard, evidence, verdict.verdict)
    return verdict


def _judge_tail(guard, canary, baseline, alpha, carried):
    """p95 latency or TTFT: fail on more canary requests above the baseline's p95, pass on fewer above p95 + allowed."""
    c_tail, b_tail = canary.tail_of(guard.metric), baseline.tail_of(guard.metric)
    if not c_tail or not b_tail or not c_tail.timed or not b_tail.timed or c_tail.beyond_allowed is None:
        return MetricVerdict(guard.metric, Verdict.INCONCLUSIVE, f"{guard.metric.label}: no timings yet", {}, *carried)
    share = c_tail.timed / (c_tail.timed + b_tail.timed)
    fail = log_e_worse(c_tail.slower, b_tail.slower, share)
    within = log_e_ratio(c_tail.beyond_allowed, b_tail.slower, share, 1.0, Side.BELOW)
    evidence = _tail_evidence(guard, c_tail, b_tail, share, alpha)
    verdict = _decide(guard, fail, within, carried, alpha, evidence)
    verdict.sentence = _tail_sentence(guard, evidence, verdict.verdict)
    return verdict


def _decide(guard, log_fail, log_pass, carried, alpha, evidence):
    """Return the MetricVerdict (sentence still empty) of this step's log e-values times the carried ones."""
    log_fail, log_pass = log_fail + carried[0], log_pass + carried[1]
    evidence.update(e_fail=_e(log_fail), e_pass=_e(log_pass), pass_threshold=1 / alpha,
                    carried=any(carried))
    level = math.log(1 / alpha)
    if log_fail >= level:
        verdict = Verdict.FAIL
    elif log_pass >= level:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    return MetricVerdict(guard.metric, verdict, "", evidence, log_fail, log_pass)


def _log_mean(*log_values):
    return math.log(sum(math.exp(min(v, 700.0)) for v in log_values) / len(log_values))


def _judge_mean(guard, canary, baseline):
    """Tokens per second and cost: shown, and judged by their absolute limit alone (in _apply_limit)."""
    c_mean, b_mean = canary.mean_of(guard.metric), baseline.mean_of(guard.metric)
    evidence = {"canary": c_mean, "baseline": b_mean}
    sentence = f"{guard.metric.label}: canary {_num(c_mean)} vs baseline {_num(b_mean)}"
    return MetricVerdict(guard.metric, Verdict.PASS, sentence, evidence)  # every such Guard has a limit


def _apply_limit(guard, canary, verdict):
    """The plain second layer: a canary point estimate beyond an absolute limit fails the guard."""
    value = _limited_value(guard.metric, canary)
    if guard.limit is None or verdict.verdict == Verdict.FAIL:
        return verdict
    verdict.evidence.update(limit=guard.limit, limited_value=value)
    if value is None:
        verdict.verdict = Verdict.INCONCLUSIVE
        return verdict
    below_minimum = guard.metric == Metric.TOKENS_PER_S and value < guard.limit
    above_maximum = guard.metric != Metric.TOKENS_PER_S and value > guard.limit
    if below_minimum or above_maximum:
        verdict.verdict = Verdict.FAIL
        measured, limit = _limit_text(guard.metric, value), _limit_text(guard.metric, guard.limit)
        verdict.sentence += f"; beyond its limit ({measured} vs {limit})"
    return verdict


def _limited_value(metric, canary):
    if metric in RATE_METRICS:
        return canary.count_of(metric) / canary.requests if canary.requests else None
    if metric in TAIL_METRICS:
        tail = canary.tail_of(metric)
        return tail.p99_ms if tail else None
    return canary.mean_of(metric)


def _overall(metrics):
    verdicts = {m.verdict for m in metrics}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    return Verdict.PASS if verdicts == {Verdict.PASS} else Verdict.INCONCLUSIVE


def _waiting(canary, guards, minimum, carried):
    sentence = f"waiting for the minimum sample: {canary.requests:,} of {minimum:,} canary requests"
    metrics = [MetricVerdict(g.metric, Verdict.INCONCLUSIVE, sentence, {}, *carried.get(g.metric, (0.0, 0.0)))
               for g in guards]
    return Judgement(Verdict.INCONCLUSIVE, f"{sentence}: holding", metrics)


# --- evidence and words ------------------------------------------------------------------


def _rate_evidence(guard, canary, baseline, share, allowed_ratio, alpha):
    hits, misses = canary.count_of(guard.metric), baseline.count_of(guard.metric)
    low, high = ratio_bounds(hits, misses, share, alpha)
    return {
        "canary": {"events": hits, "requests": canary.requests, "rate": hits / canary.requests},
        "baseline": {"events": misses, "requests": baseline.requests,
                     "rate": misses / baseline.requests if baseline.requests else None},
        "share": share, "allowed": guard.allowed, "allowed_ratio": allowed_ratio,
        "ratio_bounds": [low, _finite(high)], "alpha": alpha, "fail_threshold": 1 / alpha,
    }


def _tail_evidence(guard, c_tail, b_tail, share, alpha):
    low, high = ratio_bounds(c_tail.slower, b_tail.slower, share, alpha)
    return {
        "canary": asdict(c_tail), "baseline": asdict(b_tail), "share": share, "allowed": guard.allowed,
        "allowed_ratio": 1.0, "ratio_bounds": [low, _finite(high)], "alpha": alpha, "fail_threshold": 1 / alpha,
    }


def _rate_sentence(guard, ev, verdict):
    name = "errors" if guard.metric == Metric.ERRORS else "429s"
    c, b = ev["canary"], ev["baseline"]
    counts = (f"canary {name} {c['events']:,} of {c['requests']:,} vs baseline {b['events']:,} "
              f"of {b['requests']:,}")
    allowed = f"+{guard.allowed * 100:g} pp"
    return f"{counts} ({_reason(ev, verdict, allowed)})"


def _tail_sentence(guard, ev, verdict):
    c, b = ev["canary"], ev["baseline"]
    counts = (f"canary {c['slower']:,} of {c['timed']:,} slower than the baseline's p95 {b['threshold_ms']:,.0f} ms "
              f"({c['beyond_allowed']:,} slower than {c['allowed_ms']:,.0f} ms) vs baseline {b['slower']:,} "
              f"of {b['timed']:,}")
    allowed = f"+{guard.allowed * 100:g}% {guard.metric.label}"
    return f"{guard.metric.label}: {counts} ({_reason(ev, verdict, allowed)})"


def _reason(ev, verdict, allowed):
    reason = _verdict_reason(ev, verdict, allowed)
    return f"{reason}; with earlier steps' evidence" if ev["carried"] else reason


def _verdict_reason(ev, verdict, allowed):
    if verdict == Verdict.FAIL:
        threshold = _num(ev["fail_threshold"])
        return f"e-value {_num(ev['e_fail'])} > {threshold}, alpha {ev['alpha']:.2g}: worse than the baseline"
    if verdict == Verdict.PASS:
        return f"e-value {_num(ev['e_pass'])} > {_num(ev['pass_threshold'])}: within {allowed}"
    return (f"e-values {_num(ev['e_fail'])} for worse and {_num(ev['e_pass'])} for within {allowed}, "
            f"both under {_num(ev['fail_threshold'])}: undecided")


def _overall_sentence(metrics):
    failed = [m.sentence for m in metrics if m.verdict == Verdict.FAIL]
    if failed:
        return "; ".join(failed) + ": rolling back"
    if all(m.verdict == Verdict.PASS for m in metrics):
        return f"every guard within its allowed regression ({len(metrics)} of {len(metrics)}): step passes"
    undecided = [str(m.metric.label) for m in metrics if m.verdict == Verdict.INCONCLUSIVE]
    return f"{', '.join(undecided)} not decided yet: holding"


def _limit_text(metric, value):
    if metric in RATE_METRICS:
        return f"{value * 100:.2f}%"
    if metric in TAIL_METRICS:
        return f"p99 {value:,.0f} ms"
    return _num(value)


def _e(log_value):
    """Return an e-value from its log, capped so it stays JSON-safe."""
    return math.exp(min(log_value, 700.0))


def _finite(value):
    return None if math.isinf(value) else value


def _num(value):
    """Return a number for a sentence: 2,900 or 4.2e+07 or 0.31."""
    if value is None:
        return "n/a"
    if value >= 1e6:
        return f"{value:.2g}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2g}"
