"""Re-checking keys: an invalid key comes back by itself, a suspect one is confirmed or cleared.

Every enabled key that is invalid, or suspect (one 401 seen by the gateway),
has a KeyRecheck row saying when it is next tried: a suspect key at once, an
invalid one WEATHERVANE_KEY_RECHECK_BASE seconds after it became invalid,
then twice as long after each re-check that did not get through, at most
WEATHERVANE_KEY_RECHECK_MAX. Keys that staff disabled have no row and are
never sent anything. A re-check is the probes' own request (`measure.probe`)
cut to one output token, sent with that key to a deployment of its provider,
and counted in the provider's probe usage. It is claimed with a conditional
UPDATE of its lease, so one process re-checks a key at a time, whichever
runs the sweep (the embedded scheduler or Celery beat).

What it concludes goes through `ApiKey.change_state` (audited, an Event, pushed live):

- HTTP 200: the key works. An invalid key is active again; a suspect one is trusted again.
- 401 (bad key): a suspect key is confirmed invalid; an invalid one stays so and waits longer.
- anything else (a timeout, 5xx, 429, a 403): says nothing about the key, which waits longer.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from probes import measure
from probes.models import KeyRecheck, ProbeTarget
from probes.runner import count_usage
from routing.crypto import SecretUnreadable
from routing.models import ApiKey, KeyState
from routing.outcomes import Outcome

ACTOR = "system:probes"
MAX_TOKENS = 1
LEASE_S = 130  # longer than the longest probe timeout (120 s)
MAX_PER_SWEEP = 20


def delay_s(failures, base_s=None, max_s=None):
    """Return the seconds before the next re-check after `failures` failed ones in a row: base, 2 × base, 4 × base …
    at most max_s (the settings when not given)."""
    base_s = settings.KEY_RECHECK_BASE_S if base_s is None else base_s
    max_s = settings.KEY_RECHECK_MAX_S if max_s is None else max_s
    return min(base_s * 2 ** min(failures, 32), max_s)


def keys_to_recheck():
    """Return the keys re-checks are for: enabled, of an enabled provider, and invalid or suspect."""
    doubtful = Q(state=KeyState.INVALID) | Q(suspect_since__isnull=False)
    return ApiKey.objects.filter(doubtful, enabled=True, provider__enabled=True).exclude(state=KeyState.DISABLED)


def plan(now=None):
    """Bring the re-check rows in line with the keys; return the ids of keys whose re-check is due, oldest first."""
    now = now or timezone.now()
    wanted = keys_to_recheck()
    KeyRecheck.objects.exclude(api_key__in=wanted).delete()
    missing = wanted.filter(recheck__isnull=True).values_list("pk", "state", "state_since", "suspect_since")
    KeyRecheck.objects.bulk_create([KeyRecheck(api_key_id=pk, due_at=_first_due(state, since, suspect))
                                    for pk, state, since, suspect in missing], ignore_conflicts=True)
    # A new suspicion of a key whose row waits (an earlier re-check said nothing) is re-checked at once.
    unseen = Q(last_checked_at__isnull=True) | Q(last_checked_at__lt=F("api_key__suspect_since"))
    fresh = KeyRecheck.objects.filter(unseen, api_key__suspect_since__isnull=False, due_at__gt=now)
    KeyRecheck.objects.filter(pk__in=list(fresh.values_list("pk", flat=True))).update(due_at=now)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    due = KeyRecheck.objects.filter(free, due_at__lte=now).order_by("due_at")
    return list(due.values_list("api_key_id", flat=True)[:MAX_PER_SWEEP])


def _first_due(state, since, suspect_since):
    if state == KeyState.INVALID:
        return since + timedelta(seconds=delay_s(0))
    return suspect_since


def run_due(now=None):
    """Re-check every key that is due (the embedded scheduler's sweep); return how many were re-checked."""
    return sum(recheck(key_id, now) is not None for key_id in plan(now))


def recheck(key_id, now=None):
    """Re-check one key when its re-check is due and this caller wins the claim.

    Returns the Measurement, or None when it was not due, was claimed
    elsewhere, or the key needs no re-check any more.
    """
    now = now or timezone.now()
    if not _claim(key_id, now):
        return None
    key = keys_to_recheck().select_related("provider").filter(pk=key_id).first()  # staff may have disabled it
    target = key and _target_for(key)
    if target is None:
        _park(key_id, key, now)
        return None
    measurement = _measure(target, key)
    with transaction.atomic():
        _conclude(key, measurement, now)
        _count(target, measurement, now)
    return measurement


def _claim(key_id, now):
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    claimable = KeyRecheck.objects.filter(free, api_key_id=key_id, due_at__lte=now)
    return bool(claimable.update(lease_until=now + timedelta(seconds=LEASE_S)))


def _target_for(key):
    """Return the probe target whose request a re-check sends: the key's own, else its deployment's rotating one."""
    targets = ProbeTarget.objects.select_related("deployment__provider").filter(
        deployment__provider_id=key.provider_id, deployment__enabled=True).order_by("pk")
    return targets.filter(api_key=key).first() or targets.filter(api_key__isnull=True).first()


def _park(key_id, key, now):
    """No re-check possible: the key needs none any more, or its provider has no enabled deployment to try."""
    if key is None:
        KeyRecheck.objects.filter(api_key_id=key_id).delete()
        return
    KeyRecheck.objects.filter(api_key_id=key_id).update(
        lease_until=None, due_at=now + timedelta(seconds=delay_s(32)), last_checked_at=now,
        last_error="no enabled deployment of the provider to re-check the key with")


def _measure(target, key):
    try:
        request = measure.request_for(target, key)
    except SecretUnreadable as exc:
        return measure.Measurement(outcome=Outcome.BAD_KEY, error=str(exc))
    # One token, and no answer check: only whether the key gets through counts.
    request.payload["max_tokens"] = MAX_TOKENS
    request.expected_pattern = ""
    request.expected_json = None
    return measure.probe(request)


def _conclude(key, m, now):
    row = KeyRecheck.objects.select_for_update().filter(api_key=key).first()
    if row is None:  # the key needed no re-check any more while this one ran (e.g. a request got through with it)
        return
    row.lease_until = None
    row.last_checked_at = now
    row.last_outcome = m.outcome
    row.last_error = m.error[:300]
    if m.status_code == 200:
        if key.state == KeyState.INVALID:
            ApiKey.change_state(key.pk, KeyState.ACTIVE, "a re-check with the key succeeded", ACTOR)
        ApiKey.clear_suspicion(key.pk, "a probe with it succeeded", ACTOR)
        row.delete()
        return
    if m.outcome == Outcome.BAD_KEY and key.state != KeyState.INVALID:
        ApiKey.change_state(key.pk, KeyState.INVALID, f"a probe confirmed the 401: {m.error}", ACTOR)
        row.failures = 0
    else:
        row.failures += 1
    row.due_at = now + timedelta(seconds=delay_s(row.failures))
    row.save()


def _count(target, m, now):
    if m.total_ms is None:  # nothing was sent (the secret could not be read or sent)
        return
    deployment = target.deployment
    cost = deployment.price_for(m.tokens_in, m.tokens_out)
    count_usage(deployment.provider_id, now, m.tokens_in + m.tokens_out, cost)
