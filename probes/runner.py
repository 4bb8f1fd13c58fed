"""Running probes: claim a (target, slot), measure, record, judge health, publish.

The Celery tasks and the embedded scheduler call these same functions, so a
probe behaves the same whichever mode runs it.
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, close_old_connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from dashboard import live
from probes import health, measure, slots
from probes.models import NoUsableKey, ProbeBudget, ProbeResult, ProbeSlot, ProbeTarget, ProbeUsage, Rollup, Source
from probes.rollups import Aggregator, measurable_speed, save_deltas
from routing.crypto import SecretUnreadable
from routing.models import KeyState
from routing.outcomes import Outcome
from routing.rollouts.models import RolloutVerdict

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 5.0
DISPATCH_GRACE_MS = 2000  # a slot this late is still sent (a beat tick can be late)
COMPLETE_ANSWERS = (Outcome.OK, Outcome.WRONG_ANSWER)


class SlotBusy(Exception):
    """Another worker holds an unexpired lease on the slot; try again after `retry_in_s`."""

    def __init__(self, retry_in_s):
        super().__init__(f"slot is being probed elsewhere; retry in {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


def now_ms():
    return int(time.time() * 1000)


def claim(target, slot, now=None):
    """Take the lease on (target, slot). Return True when this caller must probe, False
    when the slot is already done; raise SlotBusy while someone else holds the lease."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=target.timeout_s + LEASE_MARGIN_S)
    try:
        with transaction.atomic():  # the common case: nobody has seen this slot yet
            ProbeSlot.objects.create(target_id=target.pk, slot=slot, lease_until=lease, attempts=1)
        return True
    except IntegrityError:
        pass
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    claimable = ProbeSlot.objects.filter(free, target_id=target.pk, slot=slot, done=False)
    if claimable.update(lease_until=lease, attempts=F("attempts") + 1):
        return True
    row = ProbeSlot.objects.get(target_id=target.pk, slot=slot)
    if row.done:
        return False
    raise SlotBusy(max((row.lease_until - now).total_seconds(), 0.1))


def run_probe(target_id, slot=None):
    """Probe the target for `slot` (epoch ms; now when None) unless that slot was done.

    Returns the saved ProbeResult, or None when the target is gone or the slot
    already has its result. Raises SlotBusy while another worker holds it.
    """
    target = ProbeTarget.objects.select_related("deployment__provider", "api_key").filter(pk=target_id).first()
    if target is None:
        return None
    slot = now_ms() if slot is None else int(slot)
    if not with_db_retries(claim, target, slot):
        return None
    started_at = timezone.now()
    key, measurement = measure_target(target, slot)
    result = with_db_retries(record, target, slot, key, measurement, started_at)
    if result is not None:
        transaction.on_commit(lambda: publish(result))
    return result


def with_db_retries(func, *args, attempts=4):
    """Call func, again after a short pause when the database was locked or dropped the
    connection (SQLite under concurrent writers, a PostgreSQL restart). Not inside a transaction."""
    for attempt in range(attempts):
        try:
            return func(*args)
        except OperationalError:
            if attempt == attempts - 1 or transaction.get_connection().in_atomic_block:
                raise
            close_old_connections()
            time.sleep(0.05 * 2**attempt)


def measure_target(target, slot):
    """Return (key used or None, Measurement) for the probe of `target` in `slot`."""
    try:
        key = target.pick_key(slot)
        request = measure.request_for(target, key)
    except NoUsableKey as exc:
        limited = target.deployment.provider.keys.filter(state=KeyState.RATE_LIMITED).exists()
        return None, measure.Measurement(outcome=Outcome.RATE_LIMITED if limited else Outcome.BAD_KEY, error=str(exc))
    except SecretUnreadable as exc:
        return key, measure.Measurement(outcome=Outcome.BAD_KEY, error=str(exc))
    return key, measure.probe(request)


def record(target, slot, key, m, started_at):
    """Save the result, close the slot, count usage, roll up and judge health in one
    transaction. Returns the ProbeResult, or None if another worker saved this slot first."""
    deployment = target.deployment
    cost = deployment.price_for(m.tokens_in, m.tokens_out)
    try:
        with transaction.atomic():
            result = ProbeResult.objects.create(
                target=target, deployment=deployment, api_key=key, slot=slot, started_at=started_at,
                lag_ms=started_at.timestamp() * 1000 - slot, outcome=m.outcome, status_code=m.status_code,
                ttfb_ms=m.ttfb_ms, ttft_ms=m.ttft_ms, total_ms=m.total_ms, tokens_per_s=m.tokens_per_s,
                tokens_in=m.tokens_in, tokens_out=m.tokens_out, cost=cost, completed=m.completed,
                finish_reason=m.finish_reason, model_reported=m.model_reported[:200], model_swapped=m.model_swapped,
                retry_after_s=m.retry_after_s, error=m.error[:300],
            )
            ProbeSlot.objects.filter(target_id=target.pk, slot=slot).update(done=True)
            _roll_up(target, result)
            health.after_probe(target.pk, result)
            # Last, so the provider-wide usage row stays locked for the shortest time.
            count_usage(deployment.provider_id, started_at, m.tokens_in + m.tokens_out, cost)
    except IntegrityError:
        log.info("slot %s of probe target %s was recorded by another worker", slot, target.pk)
        return None
    return result


def count_usage(provider_id, when, tokens, cost):
    """Add one probe (or key re-check) and its tokens and cost to the provider's usage of the day."""
    counted = {"probes": F("probes") + 1, "tokens": F("tokens") + tokens, "cost": F("cost") + cost}
    if not ProbeUsage.objects.filter(provider_id=provider_id, day=when.date()).update(**counted):
        ProbeUsage.objects.get_or_create(provider_id=provider_id, day=when.date())
        ProbeUsage.objects.filter(provider_id=provider_id, day=when.date()).update(**counted)


def _roll_up(target, result):
    complete = result.outcome in COMPLETE_ANSWERS
    aggregator = Aggregator(Source.PROBE)
    aggregator.add(
        target.deployment_id, api_key_id=target.api_key_id, when=result.started_at, outcome=result.outcome,
        latency_ms=result.total_ms if complete else None, ttft_ms=result.ttft_ms,
        tokens_in=result.tokens_in, tokens_out=result.tokens_out, tps=result.tokens_per_s, cost=result.cost,
    )
    save_deltas(aggregator.drain())


def publish(result):
    live.probe_result(live.ProbeResult(
        target=result.target_id, deployment=result.deployment.name,
        api_key=result.api_key.label if result.api_key_id else None, outcome=result.outcome,
        latency_ms=result.total_ms, ttft_ms=result.ttft_ms,
        tps=measurable_speed(result.tokens_per_s, result.tokens_out),
        model_swapped=result.model_swapped, at=result.started_at.isoformat(), recorded_at=timezone.now().isoformat(),
    ))


# --- which targets are due -------------------------------------------------------


def schedulable_targets():
    """Return [(target id, effective interval s, dispatched slot)] for every target that should be probed now.

    A provider whose daily probe budget is spent gets its intervals multiplied by the budget's slowdown.
    """
    slowdown = spent_budget_slowdowns(timezone.now().date())
    rows = ProbeTarget.objects.filter(enabled=True, deployment__enabled=True, deployment__provider__enabled=True)
    fields = ("pk", "interval_s", "deployment__provider_id", "dispatched_slot")
    return [(pk, interval * slowdown.get(provider_id, 1), dispatched)
            for pk, interval, provider_id, dispatched in rows.values_list(*fields)]


def spent_budget_slowdowns(day):
    """Return {provider id: slowdown factor} for providers whose probe budget for `day` is spent."""
    usage = {u.provider_id: u for u in ProbeUsage.objects.filter(day=day)}
    return {b.provider_id: b.slowdown for b in ProbeBudget.objects.all() if b.spent_by(usage.get(b.provider_id))}


def plan_dispatch(horizon_s, now=None):
    """Return [(target id, slot, interval s)] due within `horizon_s` that this caller now owns.

    Each slot is handed out once, whatever the number of dispatchers: the
    target's `dispatched_slot` only moves forward, by a conditional UPDATE.
    """
    now = now if now is not None else now_ms()
    planned = []
    for target_id, interval, dispatched in schedulable_targets():
        start = max(now - DISPATCH_GRACE_MS, (dispatched or 0) + 1)
        for slot in slots.slots_between(target_id, interval, start, now + int(horizon_s * 1000)):
            newer = Q(dispatched_slot__isnull=True) | Q(dispatched_slot__lt=slot)
            if ProbeTarget.objects.filter(newer, pk=target_id).update(dispatched_slot=slot):
                planned.append((target_id, slot, interval))
    return planned


def prune(now=None):
    """Delete raw results, claims, rollups and usage past their retention, and rollouts' old verdicts.
    Returns {kind: rows deleted}."""
    now = now or timezone.now()
    raw_cutoff = now - timedelta(days=settings.PROBE_RAW_RETENTION_DAYS)
    rollup_cutoff = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    return {
        "results": ProbeResult.objects.filter(started_at__lt=raw_cutoff).delete()[0],
        "slots": ProbeSlot.objects.filter(created_at__lt=now - timedelta(days=1)).delete()[0],
        "rollups": Rollup.objects.filter(minute__lt=rollup_cutoff).delete()[0],
        "usage": ProbeUsage.objects.filter(day__lt=rollup_cutoff.date()).delete()[0],
        "rollout_verdicts": RolloutVerdict.objects.prune(settings.ROLLOUT_VERDICTS_KEPT),
    }
