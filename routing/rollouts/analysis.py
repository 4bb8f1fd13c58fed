"""Canary vs baseline over a step's minutes: a pass / fail / inconclusive verdict per guard, with its evidence.

Pure functions over per-minute figures (a StepWindow, as read from the route's
rollups); no database. Every guard is one or more count tests: each minute,
some of each arm's requests are "events" (a failure, a request slower than a
baseline quantile), and the test asks how the events split between the arms,
given the canary's share of requests (`sequential`: Lindon & Malek's
beta-binomial mixture, an anytime-valid e-value). The allowed regression is one
boundary on the rate ratio, and the two questions are one-sided tests of it:

- fail ("clearly beyond the allowance"): H0 "the canary is at most the allowed
  regression worse"; rejecting it rolls back.
- pass ("within the allowance"): H0 "the canary is at least the allowed
  regression worse"; rejecting it passes the step. Silence never passes.
- neither: the zone between; the step holds and its timeout drains the canary
  and asks a human.

Requests are not independent: a provider's bad spell puts many failures in a
minute on one arm. So the minute is the unit of variation: the counts are
weighed by 1/phi, phi being the minute-to-minute over-dispersion of the split
(sequential.dispersion, a quasi-binomial correction), and a rollback must
survive leaving out the canary's worst minute or two adjacent minutes (a spell
across a minute's edge) when they are an outlier among the canary's own
minutes (OUTLIER_P) or all there is, so one spell on the canary's provider
holds the step ("canary provider incident") instead of proving a regression,
while a canary that is bad in every minute (thin traffic: a few requests a
minute, the worst holding two of its six failures) is not made to prove it
twice.

Errors and 429s: "+0.5 pp" is the ratio (baseline rate + 0.5 pp) / baseline
rate at the baseline's observed rate (or, to pass, the canary's own rate proven
under 0.5 pp). Latency, time to first token and time per output token: for the
median and the p95 of the baseline (re-derived every look from at least
MIN_THRESHOLD_SAMPLE baseline timings), the canary's requests slower than
quantile x (1 + allowed) are compared with the baseline's slower than the
quantile: "the canary's q-quantile <= (1 + allowed) x the baseline's" is
exactly "its share above that is at most 1 - q", ratio 1, whatever the shape.

The false-alarm budget alpha is split over the guards by BUDGET_WEIGHTS, and
over a tail guard's quantiles evenly; a pass needs every guard and quantile
within its allowance at PASS_ALPHA (an intersection-union test: no split). Failure evidence is carried from step to
step (never below none: an e-detector over steps, so with k steps the false
rollback rate is at most k x alpha); a step passes only on its own traffic,
after the minimum sample. Absolute limits are judged with the same e-values
(a rate or a p99 proven beyond the limit), not point estimates.
"""

import math
from dataclasses import dataclass, field

from django.db.models import TextChoices
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from probes import sketch
from routing import formats
from routing.outcomes import DEPLOYMENT_FAILURES, Outcome

from .choices import Verdict  # noqa: F401  (analysis.Verdict is its public name too)
from .sequential import (
    DISPERSION_PRIOR_DF,
    Side,
    dispersion,
    log_e_beyond,
    log_e_value,
    log_e_within,
    share_of,
)

ALPHA = 0.01
# A step passes when every guard (and every quantile of a tail guard) is shown within its allowance at this level:
# an intersection-union test, so the level needs no splitting. It is looser than the rollback side's alpha
# because a wrong pass only moves the canary to a step with more traffic, where the rollback side keeps
# watching with the evidence carried, and the next step must pass again on its own traffic.
PASS_ALPHA = 0.05
# A step whose pass does not promote (a larger share follows, where the rollback side keeps watching with the
# evidence carried) passes at this looser level; the promotion still needs the whole product at PASS_ALPHA.
STEP_PASS_ALPHA = 0.25
# A step after a passed one needs this share of the pass bar (in logs) from its own traffic: earlier steps' pass
# evidence covers the rest (a product of e-values over consecutive steps is one), and the own share is the
# "this step's traffic is not against the canary" that a regression starting at a later step cannot meet.
STEP_PASS_SHARE = 0.5
MIN_CANARY_REQUESTS = 100
MIN_THRESHOLD_SAMPLE = 200  # baseline timings before a latency threshold is trusted
REFERENCE_MINUTES = 30  # the baseline's look-back before a step (thresholds, its own variation, its long-run rate)
TAIL_QUANTILES = (0.5, 0.95)
OUTLIER_P = 0.01  # a canary minute is an incident when its events are this unlikely at the rest's rate (Bonferroni)
OWN_PRIOR_K = 4.0  # the own-rate rollback route's prior: wide, centred on four times its limit (thin traffic, big
# regressions are what it is for)
OWN_ROUTE_EVENTS = 5  # baseline events under which a rate may also pass on the canary's own rate
OWN_ROUTE_WEIGHT = 0.25  # the own-rate rollback route's share of the errors' e-value (the split test keeps 3/4)
P99 = 0.99
RATE_LIMITED_KIND = Outcome.RATE_LIMITED


class Metric(TextChoices):
    ERRORS = "errors", "Error rate"
    RATE_LIMITED = "rate_limited", "429 rate"
    LATENCY_P95 = "latency_p95", "p95 latency"
    TTFT_P95 = "ttft_p95", "p95 time to first token"
    TPOT_P95 = "tpot_p95", "p95 time per output token"
    TOKENS_PER_S = "tokens_per_s", "Tokens per second"
    COST_PER_REQUEST = "cost_per_request", "Cost per request"


RATE_METRICS = (Metric.ERRORS, Metric.RATE_LIMITED)
TAIL_METRICS = (Metric.LATENCY_P95, Metric.TTFT_P95, Metric.TPOT_P95)
SKETCH_FIELD = {Metric.LATENCY_P95: "latency", Metric.TTFT_P95: "ttft", Metric.TPOT_P95: "tpot"}
# Means without a per-request spread in the rollups: only their absolute limits are judged.
LIMIT_ONLY_METRICS = (Metric.TOKENS_PER_S, Metric.COST_PER_REQUEST)
# Shares of alpha by importance (Bonferroni with weights: the levels still add up to alpha).
BUDGET_WEIGHTS = {Metric.ERRORS: 4, Metric.RATE_LIMITED: 2, Metric.LATENCY_P95: 1, Metric.TTFT_P95: 1,
                  Metric.TPOT_P95: 1}
# What a rollout guards when its author says nothing: LLM latency is time to first token and time per output
# token; end-to-end latency is the client's choice of length.
# The allowances are ones a step can decide at a few requests per second (forecast.py says how long).
DEFAULT_GUARDS = ({"metric": Metric.ERRORS.value, "allowed": 0.01, "limit": None},
                  {"metric": Metric.TTFT_P95.value, "allowed": 0.20, "limit": None},
                  {"metric": Metric.TPOT_P95.value, "allowed": 0.20, "limit": None})


@dataclass(frozen=True)
class Guard:
    """One guarded metric: `allowed` regression and an optional absolute `limit`.

    allowed is in points for rates (0.005 = +0.5 pp) and relative for tails
    (0.10 = +10 %). limit is a maximum rate for rates, a maximum p99 in ms
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
        if self.metric in RATE_METRICS and self.allowed is not None and self.allowed >= 1:
            raise ValueError(f"{self.metric}'s allowed regression is in points: below 1 (0.005 = +0.5 pp)")
        if self.metric in RATE_METRICS and self.limit is not None and not 0 < self.limit < 1:
            raise ValueError(f"{self.metric}'s limit is a rate strictly between 0 and 1")


@dataclass(frozen=True)
class Minute:
    """One minute of one count: events among requests on each arm."""

    canary: int
    canary_n: int
    baseline: int
    baseline_n: int


@dataclass
class StepWindow:
    """A step's figures: per-minute deltas of each arm (aligned, oldest first; probes.rollups.RollupDelta or
    anything with count, errors and the sketches) and `reference`, the baseline's per-minute deltas over a longer
    look-back (REFERENCE_MINUTES before the step up to now): where latency thresholds, the baseline's own
    minute-to-minute variation and its long-run error rate come from (empty: the window's own baseline)."""

    canary: list
    baseline: list
    reference: list = field(default_factory=list)

    def requests(self):
        return sum(m.count for m in self.canary), sum(m.count for m in self.baseline)

    def history(self):
        """Return the baseline's per-minute deltas to read its long-run figures from."""
        return self.reference or self.baseline


@dataclass
class CountTest:
    """The e-values of one count test over a window's minutes (logs), and what they rest on."""

    minutes: list
    boundary: float
    phi: float
    log_fail: float
    log_fail_robust: float
    log_pass: float
    worst: tuple | None  # (start, stop) of the minute or two adjacent minutes that weigh most against the canary
    log_worst: float = -math.inf  # the failure e-value of those minutes alone
    outlier: bool = False  # nothing beside them to compare, or an outlier among the canary's: left out of a rollback

    @property
    def totals(self):
        m = self.minutes
        return (sum(x.canary for x in m), sum(x.canary_n for x in m), sum(x.baseline for x in m),
                sum(x.baseline_n for x in m))


@dataclass
class MetricVerdict:
    """One guard's verdict; log_fail is its failure evidence so far (in logs, earlier steps' included)."""

    metric: Metric
    verdict: Verdict
    sentence: str
    evidence: dict = field(default_factory=dict)
    log_fail: float = 0.0
    incident: bool = False
    log_pass: float = 0.0  # pass evidence so far (in logs, earlier passed steps' included)

    def as_dict(self):
        return {"metric": str(self.metric), "verdict": str(self.verdict), "sentence": self.sentence,
                "evidence": self.evidence, "log_fail": max(self.log_fail, -700.0),
                "log_pass": max(self.log_pass, -700.0), "incident": self.incident}


@dataclass
class Judgement:
    verdict: Verdict
    sentence: str
    metrics: list

    @property
    def incident(self):
        return any(m.incident for m in self.metrics) and self.verdict != Verdict.FAIL

    def as_dict(self):
        return {"verdict": str(self.verdict), "sentence": self.sentence, "incident": self.incident,
                "metrics": [m.as_dict() for m in self.metrics]}


# --- the count test --------------------------------------------------------------------


def count_test(minutes, boundary, within_centre=1.0, own_limit=None, phi_floor=1.0):
    """Return the CountTest of `minutes` against the rate-ratio `boundary`.

    within_centre is the ratio where the pass test's prior sits (a canary that deserves to pass). own_limit,
    for rates, adds a second route to passing when the baseline has (almost) no events: the canary's own rate
    proven under it (the mean of the two e-values). phi_floor is the baseline's own over-dispersion (from its
    look-back): the rollback side never weighs the window's counts by less (a provider's bad spells can be
    known before the window has minutes enough to show them); the pass side weighs by the window's own split.
    Raises ValueError when either arm has no requests.
    """
    c, cn, b, bn = (sum(getattr(m, name) for m in minutes) for name in ("canary", "canary_n", "baseline",
                                                                        "baseline_n"))
    if not cn or not bn:
        raise ValueError("both arms need requests")
    share = cn / (cn + bn)
    split = dispersion([(m.canary, m.canary_n, m.baseline, m.baseline_n) for m in minutes])
    phi = max(split, phi_floor)
    log_fail = log_e_beyond(c / phi, b / phi, share, boundary)
    log_pass = log_e_within(c / split, b / split, share, boundary, within_centre)
    if own_limit and b <= OWN_ROUTE_EVENTS:
        own = log_e_value(c / split, (cn - c) / split, own_limit, Side.BELOW)
        log_pass = _log_mean(log_pass, own)
    worst = _worst_span(minutes, share, boundary)
    if worst is None:
        return CountTest(minutes, boundary, phi, log_fail, log_fail, log_pass, None)
    # A span with less canary traffic beside it than in it (the whole window, or a first minute and a sliver of
    # the next) may be all incident: nothing shows it is not, so it is left out.
    c, cn, b, bn = _sums(minutes[worst[0]:worst[1]])
    outlier = sum(m.canary_n for m in minutes) - cn < cn or is_outlier(minutes, worst)
    robust = _without(minutes, worst, boundary, phi_floor) if outlier else log_fail
    log_worst = log_e_beyond(c, b, cn / (cn + bn), boundary) if bn else -math.inf
    return CountTest(minutes, boundary, phi, log_fail, min(log_fail, robust), log_pass, worst, log_worst, outlier)


def _sums(minutes):
    return tuple(sum(getattr(m, name) for m in minutes) for name in ("canary", "canary_n", "baseline", "baseline_n"))


def _worst_span(minutes, share, boundary):
    """Return (start, stop) of the one minute or two adjacent minutes (a bad spell of up to a minute can fall
    across a minute's edge) with the most canary events beyond what the boundary expects, or None."""
    theta = share_of(boundary, share)
    excess = [m.canary - (m.canary + m.baseline) * theta if m.canary else -math.inf for m in minutes]
    spans = [(excess[i], (i, i + 1)) for i in range(len(minutes))]
    spans += [(excess[i] + excess[i + 1], (i, i + 2)) for i in range(len(minutes) - 1)
              if excess[i] > -math.inf and excess[i + 1] > 0]
    best = max(spans, default=(-math.inf, None))
    return best[1] if best[0] > -math.inf else None


def is_outlier(minutes, span, p=OUTLIER_P):
    """Whether the minutes of `span` (start, stop) hold more canary events than the canary's other minutes
    make believable.

    The upper tail of Binomial(the span's requests, the rest's rate) at its events, below p over the number of
    spans it was the worst of (Bonferroni: 2n - 1 for n minutes). The rest's rate is (events + 1) /
    (requests + 2), so a canary with no other events still has one. A span with nothing else beside it is never
    an outlier (there is nothing to compare it with).
    """
    start, stop = span
    if stop - start >= len(minutes):
        return False
    c, cn, _, _ = _sums(minutes[start:stop])
    rest_events, rest_requests, _, _ = _sums(minutes[:start] + minutes[stop:])
    rate = (rest_events + 1) / (rest_requests + 2)
    return float(binom.sf(c - 1, cn, rate)) < p / (2 * len(minutes) - 1)


def _without(minutes, span, boundary, phi_floor):
    """Return the failure log e-value of the window without the minutes of `span` (-inf when nothing is left)."""
    rest = minutes[:span[0]] + minutes[span[1]:]
    c, cn, b, bn = (sum(getattr(m, name) for m in rest) for name in ("canary", "canary_n", "baseline", "baseline_n"))
    if not cn or not bn:
        return -math.inf
    phi = max(dispersion([(m.canary, m.canary_n, m.baseline, m.baseline_n) for m in rest]), phi_floor)
    return log_e_beyond(c / phi, b / phi, cn / (cn + bn), boundary)


def _log_mix(main, second, weight=OWN_ROUTE_WEIGHT):
    """Return the log of (1 - weight) x e(main) + weight x e(second): a weighted mean of e-values is one."""
    total = (1 - weight) * math.exp(min(main, 700.0)) + weight * math.exp(min(second, 700.0))
    return math.log(total) if total > 0 else -math.inf


def _log_mean(*log_values):
    """Return the log of the mean of e-values given as logs (-inf for e-values of 0)."""
    total = sum(math.exp(min(v, 700.0)) for v in log_values)
    return math.log(total / len(log_values)) if total > 0 else -math.inf


# --- minutes from rollups -------------------------------------------------------------------


def guarded_failures(errors):
    """Return the failures of a deployment in an {outcome: count} dict: never the client's or a key's."""
    return sum(n for kind, n in errors.items() if kind in DEPLOYMENT_FAILURES)


def rate_minutes(window, metric):
    """Return the window's Minutes of errors (the deployment's own failures) or 429s."""
    return [Minute(rate_events(c, metric)[0], c.count, rate_events(b, metric)[0], b.count)
            for c, b in zip(window.canary, window.baseline, strict=True)]


def threshold(window, metric, q):
    """Return the baseline's q-quantile in ms for a tail metric, or None while it rests on too little.

    From window.history(): at least MIN_THRESHOLD_SAMPLE timings, and about 1 - q of them above it (the
    sketch's bins can lump a tail together).
    """
    name = SKETCH_FIELD[metric]
    reference = sketch.new()
    for delta in window.history():
        reference.merge(getattr(delta, name))
    if reference.count < MIN_THRESHOLD_SAMPLE:
        return None
    value = sketch.quantiles(reference, (q,))[q]
    above = sketch.count_above(reference, value) / reference.count
    return value if 0.5 * (1 - q) <= above <= 1.5 * (1 - q) + 1 / reference.count else None


def tail_minutes(window, metric, q, allowed, value):
    """Return Minutes of requests slower than value x (1 + allowed) on the canary and than value on the baseline."""
    name = SKETCH_FIELD[metric]
    limit = value * (1 + allowed)
    return [Minute(int(sketch.count_above(getattr(c, name), limit)), int(getattr(c, name).count),
                   int(sketch.count_above(getattr(b, name), value)), int(getattr(b, name).count))
            for c, b in zip(window.canary, window.baseline, strict=True)]


# --- judging ---------------------------------------------------------------------------


def judge(window, guards, alpha=ALPHA, min_canary_requests=MIN_CANARY_REQUESTS, carried=None, carried_pass=None,
          pass_alpha=PASS_ALPHA):
    """Return the Judgement of a StepWindow under guards.

    carried maps a metric to the failure log e-value of the rollout's earlier steps, carried_pass to their pass
    log e-value (the steps that passed; this step then needs STEP_PASS_SHARE of the bar itself); pass_alpha is the
    pass side's level (PASS_ALPHA for the step whose pass promotes, STEP_PASS_ALPHA before). Fail if any guard
    fails (from the first canary request on), pass if every guard passes and the canary has at least
    min_canary_requests, otherwise inconclusive. Raises ValueError without guards.
    """
    if not guards:
        raise ValueError("a rollout needs at least one guard")
    carried, carried_pass = carried or {}, carried_pass or {}
    canary_n, baseline_n = window.requests()
    if not canary_n or not baseline_n:
        return _no_traffic(guards, canary_n, carried)
    levels = guard_levels(guards, alpha)
    metrics = [judge_metric(guard, window, levels[guard.metric] or alpha, carried.get(guard.metric, 0.0),
                            carried_pass.get(guard.metric, 0.0), pass_alpha) for guard in guards]
    verdict = _overall(metrics)
    if verdict == Verdict.PASS and canary_n < min_canary_requests:
        return Judgement(Verdict.INCONCLUSIVE, _waiting_sentence(canary_n, min_canary_requests), metrics)
    return Judgement(verdict, _overall_sentence(metrics), metrics)


def guard_levels(guards, alpha=ALPHA):
    """Return {metric: its level}: alpha split over the tested guards in proportion to BUDGET_WEIGHTS
    (limit-only guards get none; their levels sum to alpha)."""
    total = sum(BUDGET_WEIGHTS.get(g.metric, 0) for g in guards)
    return {g.metric: alpha * BUDGET_WEIGHTS[g.metric] / total if g.metric in BUDGET_WEIGHTS else None
            for g in guards}


def judge_metric(guard, window, alpha, carried=0.0, carried_pass=0.0, pass_alpha=PASS_ALPHA):
    """Return the MetricVerdict of one guard at level alpha (its share of the budget)."""
    if guard.metric in RATE_METRICS:
        verdict = _judge_rate(guard, window, alpha, carried, carried_pass, pass_alpha)
    elif guard.metric in TAIL_METRICS:
        verdict = _judge_tail(guard, window, alpha, carried, carried_pass, pass_alpha)
    else:
        verdict = _judge_mean(guard, window)
    return _apply_limit(guard, window, verdict, alpha)


def _judge_rate(guard, window, alpha, carried, carried_pass=0.0, pass_alpha=PASS_ALPHA):
    """Errors or 429s. The baseline's rate, its variation and the own-rate route to a rollback come from its
    look-back; the split of each minute's events is the main test."""
    minutes = rate_minutes(window, guard.metric)
    history = [rate_events(d, guard.metric) for d in window.history()]
    events, requests = sum(e for e, _ in history), sum(n for _, n in history)
    base_rate = (events + 0.5) / (requests + 1)  # never 0, so the ratio stays finite
    phi_b = arm_dispersion(history)
    test = count_test(minutes, 1 + guard.allowed / base_rate, own_limit=guard.allowed or None, phi_floor=phi_b)
    rest = minutes[:test.worst[0]] + minutes[test.worst[1]:] if test.outlier else minutes
    own = _own_rate_fail(minutes, events, requests, guard.allowed, alpha, test.phi)
    own_robust = _own_rate_fail(rest, events, requests, guard.allowed, alpha, test.phi)
    test.log_fail = _log_mix(test.log_fail, own)
    test.log_fail_robust = _log_mix(test.log_fail_robust, own_robust)
    verdict = _decide(guard.metric, test, carried, alpha, carried_pass, pass_alpha)
    verdict.evidence.update(_rate_evidence(guard, test, base_rate))
    verdict.sentence = _rate_sentence(guard, verdict)
    return verdict


def _own_rate_fail(minutes, events, requests, allowed, alpha, phi):
    """The second route to a rollback, for thin traffic: the canary's own rate proven above the baseline's
    look-back rate (its upper confidence bound at alpha) plus the allowance. Against a fixed rate no common
    cause cancels, so the counts are weighed by the canary's own minute-to-minute over-dispersion (its
    provider's bad spells) when that is more than phi."""
    c, cn = sum(m.canary for m in minutes), sum(m.canary_n for m in minutes)
    if not requests or not cn:
        return -math.inf
    phi = max(phi, arm_dispersion([(m.canary, m.canary_n) for m in minutes]))
    upper = float(beta_dist.ppf(1 - alpha, events / phi + 1, (requests - events) / phi + 1))
    limit = min(upper + allowed, 0.999)
    return log_e_value(c / phi, (cn - c) / phi, limit, Side.ABOVE, k=OWN_PRIOR_K, centre=min(4 * limit, 0.9))


def rate_events(delta, metric):
    """Return (events, requests) of one delta for a rate metric."""
    events = guarded_failures(delta.errors) if metric == Metric.ERRORS else delta.errors.get(RATE_LIMITED_KIND, 0)
    return events, delta.count


def arm_dispersion(history):
    """Return the over-dispersion of one arm's own events from minute to minute, given (events, requests) per
    minute: Pearson's chi-square over its degrees of freedom around the arm's rate over them, shrunk like
    sequential.dispersion; at least 1."""
    useful = [(e, n) for e, n in history if n]
    events, requests = sum(e for e, _ in useful), sum(n for _, n in useful)
    if len(useful) < 2 or not events or events == requests:
        return 1.0
    rate = events / requests
    chi2 = sum((e - n * rate) ** 2 / (n * rate * (1 - rate)) for e, n in useful)
    return max(1.0, (DISPERSION_PRIOR_DF + chi2) / (DISPERSION_PRIOR_DF + len(useful) - 1))


def _judge_tail(guard, window, alpha, carried, carried_pass=0.0, pass_alpha=PASS_ALPHA):
    """Every quantile of TAIL_QUANTILES at alpha / their number: fail if one fails, pass if all pass."""
    level = alpha / len(TAIL_QUANTILES)
    parts = []
    for q in TAIL_QUANTILES:
        value = threshold(window, guard.metric, q)
        if value is None:
            return _undecided_tail(guard, carried)
        minutes = tail_minutes(window, guard.metric, q, guard.allowed, value)
        if not sum(m.canary_n for m in minutes) or not sum(m.baseline_n for m in minutes):
            return _undecided_tail(guard, carried)
        # No floor from the baseline's own variation here: latency moves with who is asking (prompt sizes,
        # sessions), which both arms share when requests are assigned one by one; the split shows the rest.
        parts.append((q, value, count_test(minutes, 1.0, within_centre=(1 + guard.allowed) ** -3)))
    decided = [(q, value, _decide(guard.metric, test, carried, level, carried_pass, pass_alpha))
               for q, value, test in parts]
    verdict = _combine_quantiles(guard.metric, decided, alpha)
    verdict.evidence.update(_tail_evidence(guard, parts, decided))
    verdict.sentence = _tail_sentence(guard, verdict, parts)
    return verdict


def _undecided_tail(guard, carried):
    sentence = f"{guard.metric.label}: too few baseline timings for a threshold yet (at least {MIN_THRESHOLD_SAMPLE:,})"
    return MetricVerdict(guard.metric, Verdict.INCONCLUSIVE, sentence, {"progress": {"fail": 0.0, "pass": 0.0}},
                         carried)


def _combine_quantiles(metric, decided, alpha):
    verdicts = [v for _, _, v in decided]
    if any(v.verdict == Verdict.FAIL for v in verdicts):
        overall = Verdict.FAIL
    elif all(v.verdict == Verdict.PASS for v in verdicts):
        overall = Verdict.PASS
    else:
        overall = Verdict.INCONCLUSIVE
    level = math.log(len(verdicts) / alpha)
    log_fail = max(v.log_fail for v in verdicts)  # what the next step carries (the quantiles' Bonferroni covers it)
    log_pass = min(v.log_pass for v in verdicts)  # every quantile showed at least this much
    progress = {"fail": max(v.evidence["progress"]["fail"] for v in verdicts),
                "pass": min(v.evidence["progress"]["pass"] for v in verdicts)}
    incident = any(v.incident for v in verdicts) and overall != Verdict.FAIL
    evidence = {"progress": progress, "alpha": alpha, "fail_threshold": math.exp(level),
                "pass_threshold": max(v.evidence["pass_threshold"] for v in verdicts), "e_fail": _e(log_fail),
                "e_pass": min(v.evidence["e_pass"] for v in verdicts),
                "phi": max(v.evidence["phi"] for v in verdicts),
                "carried": any(v.evidence["carried"] for v in verdicts)}
    return MetricVerdict(metric, overall, "", evidence, log_fail, incident, log_pass)


def _decide(metric, test, carried, alpha, carried_pass=0.0, pass_alpha=PASS_ALPHA):
    """Return the MetricVerdict (sentence still empty) of a CountTest at level alpha.

    The rollback side adds the carried evidence of earlier steps to the robust e-value (the worst minutes
    left out, over-dispersion weighed in). The pass side needs the whole bar from this step's own traffic, or,
    after passed steps, what their evidence leaves of it and at least STEP_PASS_SHARE of it (the product over
    consecutive steps is an e-value; the own share is the step earning its own pass).
    """
    level = math.log(1 / alpha)
    log_fail = max(carried, 0.0) + test.log_fail_robust
    needed = pass_bar(pass_alpha, carried_pass)
    if log_fail >= level:
        verdict = Verdict.FAIL
    elif test.log_pass >= needed:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    # One minute alone says "clearly worse" and the rest does not lean against the canary at all: the canary's
    # provider had a bad spell.
    incident = verdict != Verdict.FAIL and test.log_worst >= level and test.log_fail_robust <= 0
    evidence = {"e_fail": _e(log_fail), "e_pass": _e(test.log_pass), "alpha": alpha, "fail_threshold": 1 / alpha,
                "pass_threshold": math.exp(needed), "phi": test.phi, "carried": carried > 0 or carried_pass > 0,
                "incident": incident,
                "progress": {"fail": _progress(log_fail, level), "pass": _progress(test.log_pass, needed)}}
    return MetricVerdict(metric, verdict, "", evidence, log_fail, incident, max(carried_pass, 0.0) + test.log_pass)


def pass_bar(pass_alpha, carried_pass=0.0):
    """Return the log e-value a step's own traffic must show to pass at pass_alpha after earlier steps showed
    carried_pass: what they leave of log(1 / pass_alpha), and never less than STEP_PASS_SHARE of it."""
    level = math.log(1 / pass_alpha)
    return level - min(max(carried_pass, 0.0), (1 - STEP_PASS_SHARE) * level)


def pass_alpha_of(plan, index):
    """Return the pass side's level for plan step `index`: PASS_ALPHA when its pass promotes (the next step is
    100 % or there is none), STEP_PASS_ALPHA when a larger share or a human's approval follows."""
    following = plan[index + 1:index + 2]
    return PASS_ALPHA if not following or following[0].get("weight") == 100 else STEP_PASS_ALPHA


def _progress(log_value, level):
    return round(min(max(log_value / level, 0.0), 1.0), 3)


def _judge_mean(guard, window):
    """Tokens per second and cost: shown, and judged by their absolute limit alone (in _apply_limit)."""
    c_mean, b_mean = _mean(guard.metric, window.canary), _mean(guard.metric, window.baseline)
    evidence = {"canary": c_mean, "baseline": b_mean, "progress": {"fail": 0.0, "pass": 1.0}}
    sentence = f"{guard.metric.label}: canary {_num(c_mean)} vs baseline {_num(b_mean)}"
    return MetricVerdict(guard.metric, Verdict.PASS, sentence, evidence)  # every such Guard has a limit


def _mean(metric, deltas):
    if metric == Metric.TOKENS_PER_S:
        count = sum(d.tps_count for d in deltas)
        return sum(d.tps_sum for d in deltas) / count if count else None
    count = sum(d.count for d in deltas)
    return float(sum(d.cost for d in deltas)) / count if count else None


# --- absolute limits -------------------------------------------------------------------------


def _apply_limit(guard, window, verdict, alpha):
    """The second layer: a canary proven beyond an absolute limit fails the guard (an e-value at the guard's
    level for rates and p99s; a mean, which has no spread in the rollups, once the canary has the minimum
    sample)."""
    if guard.limit is None or verdict.verdict == Verdict.FAIL:
        return verdict
    beyond, value, e_limit = _beyond_limit(guard, window, alpha)
    verdict.evidence.update(limit=guard.limit, limited_value=value, e_limit=e_limit)
    if value is None:
        verdict.verdict = Verdict.INCONCLUSIVE
    elif beyond:
        verdict.verdict = Verdict.FAIL
        verdict.incident = False
        verdict.sentence += f"; beyond its limit ({_limit_text(guard.metric, value)} vs " \
                            f"{_limit_text(guard.metric, guard.limit)})"
    return verdict


def _beyond_limit(guard, window, alpha):
    """Return (proven beyond, the canary's value, the e-value or None)."""
    level = math.log(1 / alpha)
    total = _canary_total(window, guard.metric)
    if guard.metric in RATE_METRICS:
        minutes = rate_minutes(window, guard.metric)
        events, n = sum(m.canary for m in minutes), sum(m.canary_n for m in minutes)
        return _proven_above(events, n, guard.limit, minutes, level)
    if guard.metric in TAIL_METRICS:
        if not total.count:
            return False, None, None
        above = sketch.count_above(total, guard.limit)
        p99 = sketch.quantiles(total, (P99,))[P99]
        beyond, _, e_value = _proven_above(above, int(total.count), 1 - P99, None, level)
        return beyond, p99, e_value
    value = _mean(guard.metric, window.canary)
    if value is None or window.requests()[0] < MIN_CANARY_REQUESTS:
        return False, None, None
    below_minimum = guard.metric == Metric.TOKENS_PER_S and value < guard.limit
    return below_minimum or (guard.metric != Metric.TOKENS_PER_S and value > guard.limit), value, None


def _proven_above(events, n, limit, minutes, level):
    if not n:
        return False, None, None
    phi = dispersion([(m.canary, m.canary_n, m.baseline, m.baseline_n) for m in minutes]) if minutes else 1.0
    log_e = log_e_value(events / phi, (n - events) / phi, limit, Side.ABOVE)
    return log_e >= level, events / n, _e(log_e)


def _canary_total(window, metric):
    if metric not in TAIL_METRICS:
        return None
    total = sketch.new()
    for delta in window.canary:
        total.merge(getattr(delta, SKETCH_FIELD[metric]))
    return total


# --- the whole judgement ------------------------------------------------------------------


def _overall(metrics):
    verdicts = {m.verdict for m in metrics}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    return Verdict.PASS if verdicts == {Verdict.PASS} else Verdict.INCONCLUSIVE


def _no_traffic(guards, canary_n, carried):
    arm = "the baseline" if canary_n else "the canary"
    sentence = f"no traffic on {arm} in this step yet: holding"
    metrics = [MetricVerdict(g.metric, Verdict.INCONCLUSIVE, sentence, {"progress": {"fail": 0.0, "pass": 0.0}},
                             carried.get(g.metric, 0.0)) for g in guards]
    return Judgement(Verdict.INCONCLUSIVE, sentence, metrics)


def _waiting_sentence(canary_n, minimum):
    return (f"every guard within its allowed regression, but only {_count(canary_n)} of the {_count(minimum)} "
            f"canary requests a pass needs: holding")


def _overall_sentence(metrics):
    failed = [m.sentence for m in metrics if m.verdict == Verdict.FAIL]
    if failed:
        return "; ".join(failed) + ": rolling back"
    if all(m.verdict == Verdict.PASS for m in metrics):
        return f"every guard within its allowed regression ({len(metrics)} of {len(metrics)}): step passes"
    incidents = [m for m in metrics if m.incident]
    if incidents:
        return "; ".join(m.sentence for m in incidents) + ": canary provider incident, holding"
    undecided = [m.sentence for m in metrics if m.verdict == Verdict.INCONCLUSIVE]
    return "; ".join(undecided) + ": holding"


# --- evidence and words ------------------------------------------------------------------


def _rate_evidence(guard, test, base_rate):
    c, cn, b, bn = test.totals
    return {"canary": {"events": c, "requests": cn, "rate": c / cn},
            "baseline": {"events": b, "requests": bn, "rate": b / bn},
            "share": cn / (cn + bn), "allowed": guard.allowed, "allowed_ratio": test.boundary,
            "baseline_rate": base_rate, "minutes": len(test.minutes)}


def _tail_evidence(guard, parts, decided):
    quantiles = []
    for (q, value, test), (_, _, verdict) in zip(parts, decided, strict=True):
        c, cn, b, bn = test.totals
        quantiles.append({"q": q, "baseline_ms": value, "canary_limit_ms": value * (1 + guard.allowed),
                          "canary": {"slower": c, "timed": cn}, "baseline": {"slower": b, "timed": bn},
                          "phi": test.phi, "e_fail": verdict.evidence["e_fail"], "e_pass": verdict.evidence["e_pass"],
                          "verdict": str(verdict.verdict)})
    return {"allowed": guard.allowed, "quantiles": quantiles}


def _rate_sentence(guard, verdict):
    ev = verdict.evidence
    name = "errors" if guard.metric == Metric.ERRORS else "429s"
    c, b = ev["canary"], ev["baseline"]
    counts = (f"canary {name} {_count(c['events'])} of {_count(c['requests'])} ({_pct(c['rate'])}) vs baseline "
              f"{_count(b['events'])} of {_count(b['requests'])} ({_pct(b['rate'])})")
    return f"{counts} ({_reason(ev, verdict, f'+{guard.allowed * 100:g} pp')})"


def _tail_sentence(guard, verdict, parts):
    pieces = []
    for q, value, test in parts:
        c, cn, b, bn = test.totals
        pieces.append(f"{_quantile_name(q)} {value:,.0f} ms: canary {_count(c)} of {_count(cn)} slower than "
                      f"{value * (1 + guard.allowed):,.0f} ms vs baseline {_count(b)} of {_count(bn)} slower than it")
    allowed = f"+{guard.allowed * 100:g} %"
    return f"{guard.metric.label}: " + "; ".join(pieces) + f" ({_reason(verdict.evidence, verdict, allowed)})"


def _quantile_name(q):
    return "median" if q == 0.5 else f"p{q * 100:g}"


def _reason(ev, verdict, allowed):
    worse = f"{_num(ev.get('e_fail', 0))} of {_num(ev['fail_threshold'])}" if "e_fail" in ev else None
    if verdict.verdict == Verdict.FAIL:
        reason = f"clearly beyond {allowed}: e-value {worse}, alpha {ev['alpha']:.2g}"
    elif verdict.verdict == Verdict.PASS:
        reason = f"within {allowed}: e-value {_num(ev.get('e_pass', 0))} of {_num(ev['pass_threshold'])}"
    elif verdict.incident:
        reason = f"worse only in one spell of a minute or two: a provider incident, not a proven regression ({worse})"
    else:
        pct = f"{ev['progress']['fail'] * 100:.0f} % of the way to a rollback, {ev['progress']['pass'] * 100:.0f} %"
        reason = f"between: not clearly beyond {allowed}, not yet shown within it ({pct} to a pass)"
    if ev.get("phi", 1) > 1.05:
        reason += f"; counts weighed down {ev['phi']:.1f}x for minute-to-minute bursts"
    return f"{reason}; with earlier steps' evidence" if ev.get("carried") else reason


def _limit_text(metric, value):
    if metric in RATE_METRICS:
        return _pct(value)
    if metric in TAIL_METRICS:
        return f"p99 {value:,.0f} ms"
    return _num(value)


def _pct(value):
    return formats.pct(value) if value is not None else "n/a"


def _count(value):
    """A count in a sentence, whole: sketch counts are floats, and "12.0 of 340.0" reads as a measurement."""
    return formats.whole(value)


def _e(log_value):
    """Return an e-value from its log, capped so it stays JSON-safe."""
    return math.exp(min(log_value, 700.0))


def _num(value):
    """Return a number for a sentence: 2,900 or 4.2e+07 or 45 or 0.31 (never 1e+02)."""
    if value is None:
        return "n/a"
    if value >= 1e6:
        return f"{value:.2g}"
    if value >= 10:
        return formats.whole(value)
    return f"{value:.2g}"
