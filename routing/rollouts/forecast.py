"""How long each step of a plan will likely take to decide, from the route's own recent traffic.

The same e-values the verdicts use (analysis.count_test), fed the counts an
unchanged canary would show on average: the smallest number of canary requests
whose pass e-value reaches its guard's threshold, at the step's share of the
route's recent requests per second. A canary that is really unchanged passes
around then (half the time sooner); a worse one takes longer or rolls back.
"""

import math
from datetime import timedelta

from django.utils import timezone
from scipy.stats import norm

from probes import rollups, sketch
from probes.models import Source

from . import analysis

WINDOW = timedelta(minutes=15)
DEFAULT_ERROR_RATE = 0.01  # assumed when the route has no recent traffic to read it from
DEFAULT_SIGMA = 0.5  # log-normal spread assumed for a timing without recent data
MAX_REQUESTS = 10**8


def forecast_plan(route, plan, guards, step_timeout_s=1800, min_canary_requests=analysis.MIN_CANARY_REQUESTS,
                  now=None):
    """Return {"route_rps", "window_s", "steps": [...], "warnings": [...]} for a plan on `route` (see module)."""
    guards = [g if isinstance(g, analysis.Guard) else analysis.Guard(**g) for g in guards]
    recent, span_s = _recent(route, now or timezone.now())
    rps = recent.count / span_s
    steps, warnings, carried = [], [], 0.0
    for index, step in enumerate(plan):
        if step.get("pause") or step.get("weight") == 100:
            continue
        level = analysis.pass_bar(analysis.pass_alpha_of(plan, index), carried)
        carried += level  # an unchanged canary passes about when its step reaches its bar
        entry = _step(index, step, rps, guards, recent, step_timeout_s, min_canary_requests, level)
        steps.append(entry)
        if not entry["decides_in_time"]:
            warnings.append(_warning(entry, rps, step_timeout_s))
    if not recent.count:
        warnings.insert(0, f"route {route.name!r} had no traffic in the last {WINDOW.seconds // 60} minutes: "
                           "no step can decide until it has some")
    return {"route_rps": round(rps, 3), "window_s": int(span_s), "steps": steps, "warnings": warnings}


def _recent(route, now):
    """Return (RollupDelta, seconds) of the route's traffic over the last WINDOW: the seconds from its first
    minute with traffic in it (a route younger than WINDOW is not diluted by minutes before it existed), at
    least one minute."""
    total, first = rollups.RollupDelta(), None
    for row in rollups.select_rows(source=Source.TRAFFIC, since=now - WINDOW, route_id=route.pk):
        total.merge(rollups.RollupDelta.of_row(row))
        first = row.minute if first is None else min(first, row.minute)
    if first is None:
        return total, WINDOW.total_seconds()
    return total, min(max((now - first).total_seconds(), 60.0), WINDOW.total_seconds())


def _step(index, step, rps, guards, recent, timeout_s, min_canary_requests, level):
    weight = step.get("weight") or step.get("shadow") or 0
    share = weight / 100
    canary_rps = rps * share
    needed = [{"metric": str(g.metric), "requests_needed": requests_needed(g, share, recent, level)} for g in guards]
    counts = [n["requests_needed"] for n in needed]
    worst = None if None in counts else max([*counts, min_canary_requests, step.get("min_requests", 0)])
    for entry in needed:
        entry["seconds"] = _seconds(entry["requests_needed"], canary_rps)
    seconds = _seconds(worst, canary_rps)
    if seconds is not None:
        seconds = max(seconds + 60, step.get("min_dwell_s", 0))  # verdicts read whole minutes of rollups
    label = f"shadow {weight} %" if step.get("shadow") else f"{weight} %"
    return {"index": index, "label": label, "weight": step.get("weight"), "canary_rps": round(canary_rps, 3),
            "requests_needed": worst, "guards": needed, "seconds": seconds,
            "decides_in_time": seconds is not None and seconds <= timeout_s}


def _seconds(requests, canary_rps):
    if requests is None or canary_rps <= 0:
        return None
    return math.ceil(requests / canary_rps)


def requests_needed(guard, share, recent, level=None):
    """Return the canary requests an unchanged canary needs to pass `guard` at `share` of the traffic (0 for a
    limit-only guard), or None when no number up to MAX_REQUESTS would do. level: the step's pass bar in logs
    (analysis.pass_bar; default a step passing on its own at PASS_ALPHA)."""
    if guard.metric in analysis.LIMIT_ONLY_METRICS:
        return 0
    if not 0 < share < 1:
        return None
    if level is None:  # the pass side is an intersection-union test: no split
        level = math.log(1 / analysis.PASS_ALPHA)
    if guard.metric in analysis.RATE_METRICS:
        return _smallest(lambda n: _rate_pass(guard, share, recent, n), level)
    needs = [_smallest(lambda n, q=q: _tail_pass(guard, share, recent, q, n), level) for q in analysis.TAIL_QUANTILES]
    return None if None in needs else max(needs)


def _rate_pass(guard, share, recent, n):
    rate = _baseline_rate(guard.metric, recent)
    baseline_n = n * (1 - share) / share
    boundary = 1 + guard.allowed / rate
    minute = analysis.Minute(rate * n, n, rate * baseline_n, baseline_n)
    own = guard.allowed or None
    return analysis.count_test([minute], boundary, own_limit=own).log_pass


def _baseline_rate(metric, recent):
    if not recent.count:
        return DEFAULT_ERROR_RATE if metric == analysis.Metric.ERRORS else DEFAULT_ERROR_RATE / 2
    events = analysis.guarded_failures(recent.errors) if metric == analysis.Metric.ERRORS else \
        recent.errors.get(analysis.RATE_LIMITED_KIND, 0)
    return max((events + 0.5) / (recent.count + 1), 1e-4)


def _tail_pass(guard, share, recent, q, n):
    """The pass e-value at quantile q when the canary's timings are the baseline's own distribution."""
    above_allowed = _share_above(getattr(recent, analysis.SKETCH_FIELD[guard.metric]), q, 1 + guard.allowed)
    baseline_n = n * (1 - share) / share
    minute = analysis.Minute(above_allowed * n, n, (1 - q) * baseline_n, baseline_n)
    return analysis.count_test([minute], 1.0, within_centre=(1 + guard.allowed) ** -3).log_pass


def _share_above(timings, q, factor):
    """Return the share of `timings` above factor x their q-quantile (log-normal when too few timings)."""
    if timings.count >= analysis.MIN_THRESHOLD_SAMPLE:
        value = sketch.quantiles(timings, (q,))[q]
        return max(sketch.count_above(timings, value * factor) / timings.count, 1e-6)
    return float(norm.sf(norm.ppf(q) + math.log(factor) / DEFAULT_SIGMA))


def _smallest(log_pass, level):
    """Return the smallest whole n with log_pass(n) >= level (doubling, then bisection), or None."""
    low, high = 0, 16
    while log_pass(high) < level:
        low, high = high, high * 2
        if high > MAX_REQUESTS:
            return None
    while high - low > max(1, high // 50):
        middle = (low + high) // 2
        low, high = (low, middle) if log_pass(middle) >= level else (middle, high)
    return high


def _warning(entry, rps, timeout_s):
    needs = entry["requests_needed"]
    if needs is None or not entry["canary_rps"]:
        return f"step {entry['index'] + 1} ({entry['label']}) cannot decide at {rps:.2g} req/s"
    return (f"step {entry['index'] + 1} ({entry['label']}) needs about {needs:,} canary requests: about "
            f"{_duration(entry['seconds'])} at {rps:.2g} req/s, past its {_duration(timeout_s)} timeout")


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
