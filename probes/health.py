"""Health of each probe target: up, degraded or down, and what a probe means for its key.

`judge` is the pure state machine; `after_probe` applies it to a target and a
saved ProbeResult, storing an Event for every change and pushing it live. Key
states change through `ApiKey.change_state`, the rule the gateway uses too;
"down by probes" is `ProbeTarget.down_deployment_ids`.
"""

import statistics
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard import live
from probes.models import RECENT_SIZE, HealthState, ProbeTarget
from routing.models import ApiKey, DeploymentCircuit, Event, EventKind, KeyState
from routing.outcomes import Outcome
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
        reason = f"{consecutive(failures, 'failure', 'failures')}, last: {outcome}"
        return Verdict(HealthState.DOWN, reason, failures, successes, recent)
    if state == HealthState.DOWN:
        if successes < thresholds.up_after:
            return Verdict(HealthState.DOWN, "", failures, successes, recent)
        recent = recent[-successes:]
    reason = degraded_reason(recent, thresholds)
    if reason:
        return Verdict(HealthState.DEGRADED, reason, failures, successes, recent)
    if state == HealthState.UNKNOWN and not ok:
        return Verdict(HealthState.UNKNOWN, "", failures, successes, recent)
    return Verdict(HealthState.UP, consecutive(successes, "success", "successes") if successes else "probes succeed",
                   failures, successes, recent)


def consecutive(count, one, many):
    """Return "1 consecutive success", "3 consecutive successes"."""
    return f"{count} consecutive {one if count == 1 else many}"


def degraded_reason(recent, thresholds):
    """Return why the recent results count as degraded, or "" when they do not."""
    failed = sum(1 for ok, _ in recent if not ok)
    if len(recent) >= MIN_SAMPLES_FOR_ERROR_RATE and failed / len(recent) > thresholds.error_rate:
        return f"errors: {failed} of the last {len(recent)} probes failed"
    latencies = [ms for ok, ms in recent if ok][-LATENCY_SAMPLES:]
    if len(latencies) >= 2 and statistics.median(latencies) > thresholds.latency_ms:
        return (f"slow: median {statistics.median(latencies):.0f} ms over the last {len(latencies)} probes "
                f"(threshold {thresholds.latency_ms:.0f} ms)")
    return ""


def after_probe(target_id, result):
    """Update the target's health and its key's state from a saved ProbeResult, inside the caller's transaction."""
    targets = ProbeTarget.objects.select_for_update(of=("self",)).select_related("deployment", "api_key")
    target = targets.get(pk=target_id)
    ok = result.outcome == Outcome.OK
    verdict = judge(target.health, target.consecutive_failures, target.consecutive_successes, target.recent,
                    ok, result.total_ms, _describe(result), Thresholds.for_target(target))
    previous = target.health
    _save_verdict(target, verdict, result)
    if verdict.state != previous:
        _announce_health(target, previous, verdict)
    if result.api_key_id:
        apply_to_key(result.api_key, result)
    if ok:
        DeploymentCircuit.probe_succeeded(target.deployment_id)
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
    event = Event.objects.create(kind=EventKind.HEALTH, deployment=target.deployment, api_key=target.api_key,
                                 message=message,
                                 data={"target": target.pk, "from": previous, "to": verdict.state,
                                       "reason": verdict.reason})
    payload = live.HealthChanged(deployment=target.deployment.name, state=verdict.state, reason=verdict.reason,
                                 api_key=target.api_key.label if target.api_key_id else None, target=target.pk,
                                 at=event.created_at.isoformat())
    transaction.on_commit(lambda: live.health_changed(payload))
    transaction.on_commit(lambda: live.timeline_event(event))
    if HealthState.DOWN in (previous, verdict.state):
        config_changed()  # the gateway's snapshot reads ProbeTarget.down_deployment_ids()


# --- keys ------------------------------------------------------------------------


def apply_to_key(key, result):
    """Mark the key invalid on a bad-key outcome, rate-limited on a 429, active (and trusted) again on success.

    A probe is a request of its own: its 401 confirms a key the gateway holds as suspect (probes.rechecks).
    """
    if result.outcome == Outcome.BAD_KEY:
        ApiKey.change_state(key.pk, KeyState.INVALID, f"probe got {result.error or 'HTTP 401'}", ACTOR)
    elif result.outcome == Outcome.RATE_LIMITED and result.status_code == 429:
        wait = result.retry_after_s if result.retry_after_s is not None else DEFAULT_RATE_LIMIT_S
        ApiKey.change_state(key.pk, KeyState.RATE_LIMITED, "probe got HTTP 429", ACTOR,
                            until=timezone.now() + timedelta(seconds=wait))
    elif result.outcome == Outcome.OK:
        ApiKey.change_state(key.pk, KeyState.ACTIVE, "probe succeeded", ACTOR)
        ApiKey.clear_suspicion(key.pk, "a probe with it succeeded", ACTOR)
