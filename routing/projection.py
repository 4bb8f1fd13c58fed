"""Cost before you commit: what a proposed split would do at the route's current volume.

For each target: its cost per request from its last 24 hours of gateway traffic
(else its prices at the route's average tokens per request), its error rate and
latency from the last hour (traffic, else probes). A split mixes them by weight:
spend per day = requests per day × Σ share × cost per request; error rate = Σ
share × error rate; p95 = the 95th percentile of the latency mixture. The same
projection of today's split sits next to it, beside what was measured.

Volume is the route's own gateway traffic over the last 24 hours (rollups carry
the route); each target's cost and error figures are its deployment's, whatever
route its traffic came through.
"""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from probes import sketch
from probes.models import Rollup, Source
from probes.rollups import merge_rows, select_rows
from routing.outcomes import deployment_errors

VOLUME_WINDOW = timedelta(hours=24)
RECENT_WINDOW = timedelta(hours=1)


def target_figures(deployment, now, tokens_per_request):
    """Return {cost_per_request, error_rate, latency (a sketch), basis} of one deployment."""
    day = _rows(deployment, Source.TRAFFIC, now - VOLUME_WINDOW)
    count = sum(r.count for r in day)
    if count:
        cost, cost_basis = sum((r.cost for r in day), Decimal(0)) / count, "traffic"
    else:
        cost, cost_basis = deployment.price_for(*tokens_per_request), "prices"
    recent, basis = _rows(deployment, Source.TRAFFIC, now - RECENT_WINDOW), Source.TRAFFIC
    if not sum(r.count for r in recent):
        recent, basis = _rows(deployment, Source.PROBE, now - RECENT_WINDOW), Source.PROBE
    seen = sum(r.count for r in recent)
    latency = sketch.new()
    for row in recent:
        latency.merge(sketch.from_json(row.latency))
    return {"cost_per_request": cost, "cost_basis": cost_basis, "error_rate": _error_rate(recent, seen),
            "latency": latency, "basis": basis if seen else None, "requests_24h": count}


def _rows(deployment, source, since):
    return list(Rollup.objects.filter(deployment=deployment, source=source, minute__gte=since))


def _error_rate(rows, count):
    """The deployment error rate (routing.outcomes.deployment_errors) of `rows`."""
    return sum(deployment_errors(r.errors or {}) for r in rows) / count if count else None


def mix(weights, figures, per_day):
    """Return {spend_per_day, error_rate, p95_ms} of a split ({name: weight 0-100}) over per-target figures.

    Figures a target lacks leave its share out of that average (and `complete` false).
    """
    shares = {name: weight / 100 for name, weight in weights.items() if weight > 0}
    spend = sum((Decimal(str(share)) * figures[name]["cost_per_request"] for name, share in shares.items()), Decimal(0))
    rated = {n: s for n, s in shares.items() if figures[n]["error_rate"] is not None}
    error_rate = sum(s * figures[n]["error_rate"] for n, s in rated.items()) / sum(rated.values()) if rated else None
    p95 = sketch.mixture_quantile([(s, figures[n]["latency"]) for n, s in shares.items()], 0.95)
    timed = all(figures[n]["latency"].count for n in shares)
    return {"spend_per_day": spend * Decimal(per_day), "error_rate": error_rate, "p95_ms": p95,
            "complete": len(rated) == len(shares) and timed}


def route_projection(route, proposed, now=None):
    """Return today's split and `proposed` side by side: measured, projected, and each target's figures."""
    now = now or timezone.now()
    targets = list(route.targets.select_related("deployment"))
    day = list(select_rows(source=Source.TRAFFIC, since=now - VOLUME_WINDOW, route_id=route.pk))
    per_day = sum(r.count for r in day) * (timedelta(days=1) / VOLUME_WINDOW)
    tokens = _tokens_per_request(day)
    figures = {t.deployment.name: target_figures(t.deployment, now, tokens) for t in targets}
    current = {t.deployment.name: t.weight for t in targets}
    measured = merge_rows(day)
    return {
        "window": "24h", "recent_window": "1h", "requests_per_day": per_day,
        "measured": {"spend_per_day": Decimal(measured["cost"]) * Decimal(timedelta(days=1) / VOLUME_WINDOW),
                     "error_rate": measured["error_rate"], "p95_ms": measured["p95_ms"]},
        "current": _rounded(mix(current, figures, per_day)),
        "proposed": _rounded(mix(proposed, figures, per_day)),
        "targets": [_target_row(name, current[name], proposed.get(name, 0), f) for name, f in figures.items()],
    }


def _tokens_per_request(rows):
    count = sum(r.count for r in rows)
    if not count:
        return (0, 0)
    return (Decimal(sum(r.tokens_in for r in rows)) / count, Decimal(sum(r.tokens_out for r in rows)) / count)


def _rounded(figures):
    return {**figures, "spend_per_day": figures["spend_per_day"].quantize(Decimal("0.000001"))}


def _target_row(name, weight, proposed, figures):
    return {"deployment": name, "weight": weight, "proposed": proposed,
            "cost_per_request": figures["cost_per_request"].quantize(Decimal("0.0000000001")),
            "cost_basis": figures["cost_basis"], "error_rate": figures["error_rate"],
            "p95_ms": sketch.quantiles(figures["latency"], (0.95,))[0.95], "basis": figures["basis"],
            "requests_24h": figures["requests_24h"]}
