"""Health of each probe target: up, degraded or down, and what a probe means for its key.

`judge` is the pure state machine; `after_probe` applies it to a target and a
saved ProbeResult, storing an Event for every change and pushing it live. Key
states change through `ApiKey.change_state`, the rule the gateway uses too;
"down by probes" is `ProbeTarget.down_deployment_ids`.

The judge has hysteresis, so a target changes state when its behaviour does,
not at every unlucky probe: it looks at a window of the last probes, says
nothing about an error rate before a minimum sample, enters "degraded" above
one rate and leaves it only at a much lower one after a run of successes, and
goes down on a run of hard failures (or a very high rate of them). The README
(probes, "Health") states the rule with its defaults.
"""

import statistics
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard import live
from probes.models import HealthState, ProbeTarget
from routing.models import ApiKey, DeploymentCircuit, Event, EventKind, KeyState
from routing.outcomes import Outcome
from routing.signals import config_changed

ACTOR = "system:probes"
LATENCY_SAMPLES = 5  # successful probes whose median latency is judged
MIN_LATENCY_SAMPLES = 3
LATENCY_RECOVERY = 0.8  # slow until the median is back under this share of the threshold
DEFAULT_RATE_LIMIT_S = 30.0
# Failures in which the deployment did answer: evidence of "degraded", never of "down".
SOFT_FAILURES = frozenset({Outcome.RATE_LIMITED, Outcome.WRONG_ANSWER})


@dataclass(frozen=True)
class Thresholds:
    down_after: int = 4
    up_after: int = 4
    latency_ms: float = 5000
    error_rate: float = 0.15
    recovered_rate: float = 0.05
    down_rate: float = 0.7
    window: int = 30
    min_samples: int = 10

    @classmethod
    def from_settings(cls, latency_ms=None):
        """Return the site's thresholds (WEATHERVANE_PROBE_*), with `latency_ms` when given."""
        return cls(
            down_after=settings.PROBE_DOWN_AFTER, up_after=settings.PROBE_UP_AFTER,
            latency_ms=latency_ms or settings.PROBE_DEGRADED_LATENCY_MS, error_rate=settings.PROBE_DEGRADED_ERROR_RATE,
            recovered_rate=settings.PROBE_RECOVERED_ERROR_RATE, down_rate=settings.PROBE_DOWN_ERROR_RATE,
            window=settings.PROBE_WINDOW, min_samples=settings.PROBE_MIN_SAMPLES,
        )

    @classmethod
    def for_target(cls, target):
        return cls.from_settings(latency_ms=target.latency_threshold_ms())


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str
    failures: int
    successes: int
    recent: list


def judge(state, failures, successes, recent, outcome, total_ms, thresholds, detail=None):
    """Return the Verdict after one more probe that ended with `outcome` in `total_ms`.

    `recent` is the window, entries [ok 0/1, total ms, hard failure 0/1]; `detail`
    describes the outcome in a reason (default: the outcome). Down after
    `down_after` hard failures with no success between them, or a `down_rate`
    of them; up again only after `up_after` successes in a row (a 429 or a
    wrong answer is a soft failure: degraded evidence only). The down spell is judged once: its
    probes (and the run that started it) stay out of the window, so what follows
    is judged against the behaviour before it. Degraded above `error_rate` (once
    `min_samples` are in) or while slow; up again only at `recovered_rate` or
    less, after `up_after` successes in a row.
    """
    ok = outcome == Outcome.OK
    failures, successes = (0, successes + 1) if ok else (failures + 1, 0)
    entry = [1 if ok else 0, round(total_ms or 0), 0 if ok or outcome in SOFT_FAILURES else 1]
    detail = detail or str(outcome)
    if state == HealthState.DOWN:
        if successes < thresholds.up_after:
            return Verdict(HealthState.DOWN, "", failures, successes, recent)
        state = HealthState.DEGRADED  # back, and up only if the window before the outage says so
    recent = [*recent, entry][-thresholds.window:]
    down = down_reason(recent, thresholds, detail)
    if down:
        return Verdict(HealthState.DOWN, down, failures, successes, recent[:len(recent) - failed_run(recent)[0]])
    reason = degraded_reason(recent, thresholds)
    if state == HealthState.DEGRADED and not reason:
        reason = still_degraded_reason(recent, successes, thresholds)
    if reason:
        return Verdict(HealthState.DEGRADED, reason, failures, successes, recent)
    if state == HealthState.UNKNOWN and not ok:
        return Verdict(HealthState.UNKNOWN, "", failures, successes, recent)
    return Verdict(HealthState.UP, consecutive(successes, "success", "successes") if successes else "probes succeed",
                   failures, successes, recent)


def consecutive(count, one, many):
    """Return "1 consecutive success", "3 consecutive successes"."""
    return f"{count} consecutive {one if count == 1 else many}"


def is_hard(entry):
    """Return True for a window entry of a hard failure (entries of two items predate the flag: any failure)."""
    return bool(entry[2]) if len(entry) > 2 else not entry[0]


def failed_run(recent):
    """Return (entries since the last success, hard failures among them): a 429 neither counts nor breaks a run."""
    run = hard = 0
    for entry in reversed(recent):
        if entry[0]:
            break
        run += 1
        hard += is_hard(entry)
    return run, hard


def down_reason(recent, thresholds, detail):
    """Return why the window counts as down, or "" when it does not."""
    _, run = failed_run(recent)
    if run >= thresholds.down_after:
        return f"{consecutive(run, 'failure', 'failures')}, last: {detail}"
    hard = sum(1 for entry in recent if is_hard(entry))
    if len(recent) >= thresholds.min_samples and run and hard / len(recent) >= thresholds.down_rate:
        return f"{hard} of the last {len(recent)} probes failed, last: {detail}"
    return ""


def degraded_reason(recent, thresholds):
    """Return why the window enters (or stays in) degraded, or "" when it does not."""
    failed = sum(1 for entry in recent if not entry[0])
    if len(recent) >= thresholds.min_samples and failed / len(recent) > thresholds.error_rate:
        return f"errors: {failed} of the last {len(recent)} probes failed"
    median = median_latency(recent)
    if median is not None and median > thresholds.latency_ms:
        return f"slow: median {median:.0f} ms over the last probes (threshold {thresholds.latency_ms:.0f} ms)"
    return ""


def still_degraded_reason(recent, successes, thresholds):
    """Return why a degraded target has not recovered yet, or "" once it has.

    Recovered: at most `recovered_rate` of the window failed, the last `up_after`
    probes succeeded and the median latency is back under LATENCY_RECOVERY of the threshold.
    """
    failed = sum(1 for entry in recent if not entry[0])
    allowed = int(thresholds.recovered_rate * len(recent) + 1e-9)
    median = median_latency(recent)
    if median is not None and median > LATENCY_RECOVERY * thresholds.latency_ms:
        return (f"recovering: median {median:.0f} ms, up again under "
                f"{LATENCY_RECOVERY * thresholds.latency_ms:.0f} ms")
    if failed > allowed or successes < thresholds.up_after:
        return (f"recovering: {failed} of the last {len(recent)} probes failed, up again at {allowed} or fewer "
                f"with {consecutive(thresholds.up_after, 'success', 'successes')}")
    return ""


def median_latency(recent):
    """Return the median latency of the last successful probes, or None before MIN_LATENCY_SAMPLES of them."""
    latencies = [entry[1] for entry in recent if entry[0]][-LATENCY_SAMPLES:]
    return statistics.median(latencies) if len(latencies) >= MIN_LATENCY_SAMPLES else None


def after_probe(target_id, result):
    """Update the target's health and its key's state from a saved ProbeResult, inside the caller's transaction."""
    targets = ProbeTarget.objects.select_for_update(of=("self",)).select_related("deployment", "api_key")
    target = targets.get(pk=target_id)
    ok = result.outcome == Outcome.OK
    verdict = judge(target.health, target.consecutive_failures, target.consecutive_successes, target.recent,
                    result.outcome, result.total_ms, Thresholds.for_target(target), _describe(result))
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
