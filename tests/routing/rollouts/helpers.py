"""Builders for rollout tests: a 100/0 route, a draft rollout, probe results and route traffic written directly."""

from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from probes import rollups
from probes.models import ProbeResult, ProbeTarget, Rollup, Source
from routing.outcomes import Outcome
from routing.rollouts.models import Rollout
from tests.factories import canary_world

PLAN = [{"weight": 10, "min_dwell_s": 0, "min_requests": 100}, {"weight": 50, "min_dwell_s": 0, "min_requests": 100}]
GUARDS = [{"metric": "errors", "allowed": 0.005}]


def world():
    return canary_world(secret=None, weights=(100, 0))


def draft(w, plan=PLAN, guards=GUARDS, **fields):
    return Rollout.objects.create(route=w.route, canary=w.canary, plan=plan, guards=guards, created_by="admin",
                                  **fields)


def probe_results(deployment, outcomes):
    """Save one ProbeResult per outcome for `deployment`, now."""
    target, _ = ProbeTarget.objects.get_or_create(deployment=deployment, api_key=None)
    start = ProbeResult.objects.count()
    for n, outcome in enumerate(outcomes):
        ProbeResult.objects.create(target=target, deployment=deployment, slot=10**12 + start + n,
                                   started_at=timezone.now(), outcome=outcome, total_ms=120.0)


def traffic(route, deployment, requests, errors=0, error_kind=Outcome.SERVER_ERROR, latency_ms=200.0, minutes=1):
    """Record `requests` gateway requests of `route` through `deployment` in the rollups of this minute and the
    `minutes` - 1 after it, evenly (a regression must show in more than one minute to roll a canary back)."""
    agg = rollups.Aggregator(Source.TRAFFIC)
    now = timezone.now()
    for n in range(requests):
        outcome = error_kind if n < errors else Outcome.OK
        when = now + timedelta(minutes=n % minutes)
        agg.add(deployment.pk, route_id=route.pk, outcome=outcome, latency_ms=latency_ms + n % 50, when=when)
    rollups.save_deltas(agg.drain())


def past_traffic(route, deployment, requests, errors=0, minutes=15):
    """Record `requests` evenly over the `minutes` whole minutes before this one (the route's recent traffic, as
    the forecast reads it); return this minute's start."""
    traffic(route, deployment, requests, errors=errors, minutes=minutes)
    Rollup.objects.filter(route=route).update(minute=F("minute") - timedelta(minutes=minutes))
    return timezone.now().replace(second=0, microsecond=0)


def age(rollout, minutes=1):
    """Move the route's recorded traffic and the rollout's step `minutes` into the past (time passing)."""
    Rollup.objects.filter(route=rollout.route).update(minute=F("minute") - timedelta(minutes=minutes))
    Rollout.objects.filter(pk=rollout.pk).update(step_started_at=F("step_started_at") - timedelta(minutes=minutes))
