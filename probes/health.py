"""Health of each probe target: up, degraded or down, and what a probe means for its key.

`judge` is the pure state machine; `after_probe` applies it to a target and a
saved ProbeResult, storing an Event for every change and pushing it live.
`down_deployment_ids` is the cheap query the gateway reads when it rebuilds
its snapshot.
"""

import statistics
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard import live
from probes.models import RECENT_SIZE, HealthState, Outcome, ProbeTarget
from routing import audit
from routing.models import AuditAction, Event, EventKind, KeyState
from routing.signals import config_changed

ACTOR = "system:probes"
MIN_SAMPLES_FOR_ERROR_RATE = 4
LATENCY_SAMPLES = 5
DEFAULT_RATE_LIMIT_S = 30.0


@dataclass(frozen=True)
class Thresholds:
    down_after: int = 3
    up_after: int = 2
    latency_ms: float = 5000
    error_rate: float = 0.2

    @classmethod
    def for_target(cls, target):
        return cls(settings.PROBE_DOWN_AFTER, settings.PROBE_UP_AFTER, target.latency_threshold_ms(),
                   settings.PROBE_DEGRADED_ERROR_RATE)


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str
    failures: int
    successes: int
    recent: list


def judge(state, failures, successes, recent, ok, total_ms, outcome, thresholds):
    """Return the Verdict after one more probe (ok or not, its total time and outcome).

    Down after `down_after` consecutive failures; once down, up again only
    after `up_after` consecutive successes (the error window then restarts);
    otherwise degraded while slow or failing too often, else up.
    """
    recent = [*recent, [1 if ok else 0, round(total_ms or 0)]][-RECENT_SIZE:]
    failures, successes = (0, successes + 1) if ok else (failures + 1, 0)
    if failures >= thresholds.down_after:
        return Verdict(HealthState.DOWN, f"{failures} consecutive failures, last: {outcome}", failures, successes, recent)
    if state == HealthState.DOWN:
        if successes < thresholds.up_after:
            return Verdict(HealthState.DOWN, "", failures, successes, recent)
        recent = recent[-successes:]
    reason = degraded_reason(recent, thresholds)
    if reason:
        return Verdict(HealthState.DEGRADED, reason, failures, successes, recent)
    if state == HealthState.UNKNOWN and not ok:
        return Verdict(HealthState.UNKNOWN, "", failures, successes, recent)
    return Verdict(HealthState.UP, f"{successes} consecutive successes" if successes else "probes succeed",
                   failures, successes, recent)


def degraded_reason(recent, thresholds):
    """Return why the recent results count as degraded, or "" when they do not."""
    failed = sum(1 for ok, _ in recent if not ok)
    if len(recent) >= MIN_SAMPLES_FOR_ERROR_RATE and failed / len(recent) > thresholds.error_rate:
        return f"errors: {failed} of the last {len(recent)} probes failed"
    latencies = [ms for ok, ms in recent if ok][-LATENCY_SAMPLES:]
    if len(latencies) >= 2 and statistics.median(latencies) > thresholds.latency_ms:
        return f"slow: median {statistics.median(latencies):.0f} ms over the last {len(latencies)} probes (threshold {thresholds.latency_ms:.0f} ms)"
    return ""


def after_probe(target_id, result):
    """Update the target's health and its key's state from a saved ProbeResult, inside the caller's transaction."""
    target = ProbeTarget.objects.select_for_update(of=("self",)).select_related("deployment", "api_key").get(pk=target_id)
    ok = result.outcome == Outcome.OK
    verdict = judge(target.health, target.consecutive_failures, target.consecutive_successes, target.recent,
                    ok, result.total_ms, _describe(result), Thresholds.for_target(target))
    previous = target.health
    _save_verdict(target, verdict, result)
    if verdict.state != previous:
        _announce_health(target, previous, verdict)
    if result.api_key_id:
        apply_to_key(result.api_key, result)
    return verdict


def _describe(result):
    return f"{result.outcome} ({result.error})" if result.error else str(result.outcome)


def _save_verdict(target, verdict, result):
    changed = verdict.state != target.health
    fields = {
        "consecutive_failures": verdict.failures, "consecutive_successes": verdict.successes, "recent": verdict.recent,
        "last_outcome": result.outcome, "last_error": result.error[:300], "last_probe_at": result.started_at,
    }
    if changed or (verdict.reason and verdict.state != HealthState.DOWN):
        fields["health_reason"] = verdict.reason[:300]
    if changed:
        fields.update(health=verdict.state, health_since=timezone.now())
    ProbeTarget.objects.filter(pk=target.pk).update(**fields)


def _announce_health(target, previous, verdict):
    message = f"{target} is {verdict.state} (was {previous}): {verdict.reason}"[:500]
    event = Event.objects.create(kind=EventKind.HEALTH, deployment=target.deployment, api_key=target.api_key, message=message,
                                 data={"target": target.pk, "from": previous, "to": verdict.state, "reason": verdict.reason})
    payload = {"deployment": target.deployment.name, "api_key": target.api_key.label if target.api_key_id else None,
               "state": verdict.state, "reason": verdict.reason, "target": target.pk, "at": timezone.now().isoformat()}
    transaction.on_commit(lambda: live.health_changed(payload))
    _timeline(EventKind.HEALTH, message, target.deployment, target.api_key, event.pk)
    if HealthState.DOWN in (previous, verdict.state):
        config_changed()  # the gateway's snapshot reads down_deployment_ids()


def _timeline(kind, message, deployment, api_key, event_id=None):
    payload = {"id": event_id, "kind": kind, "message": message, "deployment": deployment.name if deployment else None, "route": None,
               "api_key": api_key.label if api_key else None, "at": timezone.now().isoformat()}
    transaction.on_commit(lambda: live.timeline_event(payload))


# --- keys ------------------------------------------------------------------------


def apply_to_key(key, result):
    """Mark the key invalid on a bad-key outcome, rate-limited on a 429, active again on success.

    Judged on the key as it is now (locked until the caller's transaction ends), not as it was when the probe
    started: a key that staff disabled while the probe ran stays disabled.
    """
    key = type(key).objects.select_for_update().get(pk=key.pk)
    if key.state == KeyState.DISABLED:
        return
    if result.outcome == Outcome.BAD_KEY and key.state != KeyState.INVALID:
        _set_key_state(key, KeyState.INVALID, f"probe got {result.error or 'HTTP 401/403'}"[:300], None, EventKind.KEY_INVALID)
    elif result.outcome == Outcome.RATE_LIMITED and result.status_code == 429:
        until = timezone.now() + timedelta(seconds=result.retry_after_s if result.retry_after_s is not None else DEFAULT_RATE_LIMIT_S)
        if key.state != KeyState.RATE_LIMITED or not key.rate_limited_until or key.rate_limited_until < until:
            _set_key_state(key, KeyState.RATE_LIMITED, "probe got HTTP 429", until, EventKind.KEY_RATE_LIMITED)
    elif result.outcome == Outcome.OK and key.state in (KeyState.INVALID, KeyState.RATE_LIMITED):
        _set_key_state(key, KeyState.ACTIVE, "probe succeeded", None, EventKind.KEY_ACTIVE)


def _set_key_state(key, state, reason, until, event_kind):
    before = {"state": key.state, "rate_limited_until": _iso(key.rate_limited_until)}
    key.state, key.state_reason, key.state_since, key.rate_limited_until = state, reason, timezone.now(), until
    key.save(update_fields=["state", "state_reason", "state_since", "rate_limited_until", "updated_at"])
    after = {"state": state, "rate_limited_until": _iso(until)}
    if state != KeyState.RATE_LIMITED:  # 429s come and go; only lasting key states belong in the audit trail
        audit.record(action=AuditAction.KEY_STATE, obj=key, actor=ACTOR, before=before, after=after, reason=reason)
    message = f"key {key} is {state}: {reason}" + (f" until {until:%H:%M:%S}" if until else "")
    event = Event.objects.create(kind=event_kind, api_key=key, message=message[:500],
                                 data={"from": before["state"], "to": state, "until": after["rate_limited_until"]})
    _timeline(event_kind, message, None, key, event.pk)


def _iso(value):
    return value.isoformat() if value else None


# --- queries ---------------------------------------------------------------------


def down_deployment_ids():
    """Return the ids of deployments whose (enabled, rotating) probe target is down."""
    rows = ProbeTarget.objects.filter(api_key__isnull=True, enabled=True, health=HealthState.DOWN)
    return set(rows.values_list("deployment_id", flat=True))
