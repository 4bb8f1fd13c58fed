"""The rollout controller: the gates a human presses and the tick that moves a rollout by itself.

Every change of state goes through `_transition` (a RolloutTransition row, a
timeline Event, a live message after commit); every weight change goes through
routing.weights.apply_weights with the rollout's own actor, so it is validated,
audited and published like a slider move.

A tick first claims the rollout with a conditional UPDATE (a lease and a tick
counter), then does its work in one transaction on the locked row: two
overlapping ticks never both advance, and a tick killed midway rolls back whole;
its lease expires after LEASE_S and the next tick starts from the stored state.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from dashboard import live
from probes import rollups, runner
from probes.models import ProbeResult, ProbeTarget, Source
from routing.audit import record
from routing.gateway import snapshot
from routing.models import AuditAction, Event, EventKind
from routing.outcomes import Outcome
from routing.weights import WeightsInvalid, apply_weights

from . import analysis
from .models import ACTIVE_STATES, Rollout, RolloutState, RolloutTransition, RolloutVerdict

LEASE_S = 60
TICKING_STATES = (RolloutState.PREFLIGHT, RolloutState.RUNNING, RolloutState.ROLLING_BACK)
S = RolloutState


class GateRefused(Exception):
    """The gate does not apply to the rollout in its present state (answered 409)."""


GATES = {
    "start": (S.DRAFT,),
    "approve": (S.AWAITING_APPROVAL,),
    "pause": (S.RUNNING, S.AWAITING_APPROVAL),  # not a preflight: resuming would skip it; abort ends one
    "resume": (S.PAUSED,),
    "promote": (S.RUNNING, S.PAUSED, S.AWAITING_APPROVAL),
    "abort": (S.PREFLIGHT, S.RUNNING, S.PAUSED, S.AWAITING_APPROVAL),
    "retry": (S.ROLLED_BACK, S.ABORTED),
}


# --- weights ---------------------------------------------------------------------------------


def step_weights(baseline, canary, weight):
    """Return the split with `weight` on `canary` and the rest shared as in `baseline` (largest remainder).

    With weight 0 this is the rollback split: the canary drained, the other targets in their baseline proportion
    (the baseline itself when the canary started at 0).
    """
    others = {name: w for name, w in baseline.items() if name != canary}
    total = sum(others.values())
    remaining = 100 - weight
    exact = {name: remaining * w / total for name, w in others.items()}
    split = {name: int(value) for name, value in exact.items()}
    left = remaining - sum(split.values())
    for name in sorted(others, key=lambda n: (split[n] - exact[n], n))[:left]:
        split[name] += 1
    return {**split, canary: weight}


def _set_canary(rollout, weight, reason):
    """Give the canary `weight` through the one audited path; a split already in force is left alone."""
    split = step_weights(rollout.baseline, rollout.canary.name, weight)
    if rollout.route.weights() != split:
        apply_weights(rollout.route, split, reason=reason[:1000], actor=rollout.actor)


# --- transitions and gates -------------------------------------------------------------------


def _transition(rollout, to_state, *, actor, reason, evidence=None):
    """Move `rollout` to `to_state`, saving it, its RolloutTransition and a timeline Event."""
    from_state = rollout.state
    rollout.state = to_state
    rollout.save()
    transition = RolloutTransition.objects.create(
        rollout=rollout, from_state=from_state, to_state=to_state, step=rollout.step, actor=actor,
        reason=reason, evidence=evidence or {})
    message = f"{rollout}: {S(from_state).label} → {S(to_state).label}: {reason}"
    event = Event.objects.create(kind=EventKind.ROLLOUT, route=rollout.route, deployment=rollout.canary,
                                 message=message[:500], data=transition_payload(transition))
    transaction.on_commit(lambda: _publish(rollout, transition, event))
    transaction.on_commit(snapshot.announce_change)  # a shadow step begins or ends with a state or step
    return transition


def transition_payload(transition):
    """Return a transition as the API, the timeline and live messages show it (the one builder)."""
    return {"rollout": transition.rollout_id, "from": transition.from_state, "to": transition.to_state,
            "step": transition.step, "actor": transition.actor, "reason": transition.reason,
            "evidence": transition.evidence, "at": transition.at.isoformat()}


def _publish(rollout, transition, event):
    live.rollout_changed(live.RolloutChanged(
        rollout=rollout.pk, route=rollout.route.name, canary=rollout.canary.name, state=rollout.state,
        step=rollout.step, actor=transition.actor, reason=transition.reason, at=transition.at.isoformat()))
    live.timeline_event(event)


def gate(rollout_id, name, *, reason, actor, user=None):
    """Press gate `name` (a key of GATES) on a rollout; return the rollout.

    Raises GateRefused when the gate does not apply in the rollout's state
    (nothing changes), WeightsInvalid when the split cannot be set.
    """
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().select_related("route", "canary").get(pk=rollout_id)
        if rollout.state not in GATES[name]:
            raise GateRefused(f"{rollout} is {S(rollout.state).label.lower()}; {name} does not apply.")
        before = rollout.state
        evidence = _latest_evidence(rollout)
        GATE_ACTIONS[name](rollout, actor, reason)
        record(action=AuditAction.ROLLOUT, obj=rollout, actor=actor, user=user, reason=reason,
               before={"state": before}, after={"state": rollout.state, "step": rollout.step, "gate": name,
                                                "evidence": evidence})
    return rollout


def _latest_evidence(rollout):
    verdict = rollout.verdicts.first()
    return {"verdict": verdict.verdict, "sentence": verdict.sentence, "step": verdict.step} if verdict else {}


def _start(rollout, actor, reason):
    _refuse_if_taken(rollout)
    rollout.baseline = rollout.route.weights()
    rollout.step, rollout.carried, rollout.thresholds = 0, {}, {}
    rollout.preflight_started_at = timezone.now()
    _transition(rollout, S.PREFLIGHT, actor=actor, reason=reason)


def _refuse_if_taken(rollout):
    taken = Rollout.objects.filter(Q(route_id=rollout.route_id) | Q(canary_id=rollout.canary_id),
                                   state__in=ACTIVE_STATES).exclude(pk=rollout.pk).first()
    if taken is not None:
        raise GateRefused(f"{taken} is {S(taken.state).label.lower()}; one rollout per route and canary at a time.")


def _approve(rollout, actor, reason):
    _enter_step(rollout, rollout.step + 1, actor=actor, reason=reason)


def _pause(rollout, actor, reason):
    _transition(rollout, S.PAUSED, actor=actor, reason=reason)


def _resume(rollout, actor, reason):
    # The step starts afresh: its window, dwell and timeout count from now.
    _enter_step(rollout, rollout.step, actor=actor, reason=reason)


def _promote(rollout, actor, reason):
    _set_canary(rollout, rollout.final_weight, reason)
    _transition(rollout, S.PROMOTED, actor=actor, reason=reason)


def _abort(rollout, actor, reason):
    _roll_back(rollout, S.ABORTED, actor=actor, reason=reason)


GATE_ACTIONS = {"start": _start, "approve": _approve, "pause": _pause, "resume": _resume, "promote": _promote,
                "abort": _abort, "retry": _start}


def _enter_step(rollout, index, *, actor, reason, evidence=None):
    """Begin plan step `index`: a pause awaits approval, a weight is applied; past the end, promote."""
    rollout.step = min(index, len(rollout.plan) - 1)
    if index >= len(rollout.plan):
        _set_canary(rollout, rollout.final_weight, reason)
        return _transition(rollout, S.PROMOTED, actor=actor, reason=reason, evidence=evidence)
    step = rollout.plan[index]
    if step.get("pause"):
        return _transition(rollout, S.AWAITING_APPROVAL, actor=actor, reason=reason, evidence=evidence)
    _set_canary(rollout, step.get("weight", 0), reason)  # a shadow step: the canary answers no client
    rollout.step_started_at, rollout.thresholds = timezone.now(), {}
    return _transition(rollout, S.RUNNING, actor=actor, reason=reason, evidence=evidence)


def _roll_back(rollout, final_state, *, actor, reason, evidence=None):
    """Drain the canary (baseline split restored) and end in `final_state`; a split that cannot be set
    leaves the rollout rolling back, for the next tick to try again."""
    if rollout.state != S.ROLLING_BACK:
        _transition(rollout, S.ROLLING_BACK, actor=actor, reason=reason, evidence=evidence)
    with transaction.atomic():
        try:
            _set_canary(rollout, 0, reason)
        except WeightsInvalid:
            return None
    return _transition(rollout, final_state, actor=actor, reason=reason, evidence=evidence)


# --- the tick --------------------------------------------------------------------------------


def claim(rollout_id, now):
    """Take the tick lease; return the claimed tick number, or None when another tick holds it or none is due."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    rows = Rollout.objects.filter(free, pk=rollout_id, state__in=TICKING_STATES)
    if not rows.update(ticks=F("ticks") + 1, lease_until=now + timedelta(seconds=LEASE_S)):
        return None
    return Rollout.objects.values_list("ticks", flat=True).get(pk=rollout_id)


def tick(rollout_id, now=None):
    """Claim and run one tick of a rollout; return its state afterwards, or None when not claimed."""
    now = now or timezone.now()
    number = claim(rollout_id, now)
    if number is None:
        return None
    _probe_if_preflight(rollout_id)
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().select_related("route", "canary").get(pk=rollout_id)
        if rollout.ticks == number and rollout.state in TICKING_STATES:
            TICK_ACTIONS[rollout.state](rollout, now)
        Rollout.objects.filter(pk=rollout_id, ticks=number).update(lease_until=None)
    return Rollout.objects.values_list("state", flat=True).get(pk=rollout_id)


def tick_all(now=None):
    """Tick every rollout that has work (preflight, running, rolling back); return how many were claimed."""
    ids = Rollout.objects.filter(state__in=TICKING_STATES).values_list("pk", flat=True)
    return sum(tick(pk, now) is not None for pk in list(ids))


def _preflight_targets(rollout_id):
    rollout = Rollout.objects.get(pk=rollout_id)
    return ProbeTarget.objects.filter(deployment_id=rollout.canary_id, enabled=True).order_by("api_key_id", "pk")


def _probe_if_preflight(rollout_id):
    """Run one probe of the canary while a preflight needs more.

    Outside the tick's transaction: a probe waits on the network.
    """
    rollout = Rollout.objects.filter(pk=rollout_id, state=S.PREFLIGHT).first()
    if rollout is None or len(_preflight_results(rollout)) >= rollout.preflight_probes:
        return
    target = _preflight_targets(rollout_id).first()
    if target is not None:
        try:
            runner.run_probe(target.pk)
        except runner.SlotBusy:
            pass


def _preflight_results(rollout):
    return list(ProbeResult.objects.filter(deployment_id=rollout.canary_id,
                                           started_at__gte=rollout.preflight_started_at).order_by("started_at"))


def _tick_preflight(rollout, now):
    results = _preflight_results(rollout)
    failed = [r for r in results if r.outcome != Outcome.OK]
    evidence = {"probes": [{"outcome": r.outcome, "at": r.started_at.isoformat(), "ms": r.total_ms,
                            "error": r.error} for r in results]}
    if failed:
        reason = f"preflight failed: probe {failed[0].get_outcome_display()} {failed[0].error}".strip()
        return _transition(rollout, S.ABORTED, actor=rollout.actor, reason=reason, evidence=evidence)
    if len(results) >= rollout.preflight_probes:
        reason = f"preflight passed: {len(results)} of {rollout.preflight_probes} probes ok"
        return _enter_step(rollout, 0, actor=rollout.actor, reason=reason, evidence=evidence)
    return None


def _tick_rolling_back(rollout, now):
    last = rollout.transitions.filter(to_state=S.ROLLING_BACK).last()
    _roll_back(rollout, S.ROLLED_BACK, actor=rollout.actor, reason=last.reason if last else "rolling back")


def is_shadow(step):
    return bool(step and step.get("shadow"))


def arm_totals(rollout, since, source=Source.TRAFFIC):
    """Return (canary, baseline) RollupDeltas of the route's own traffic (or shadow requests) since `since`.

    Every target other than the canary counts as baseline. Rollups are per minute,
    so the window starts at the minute the step began.
    """
    canary, baseline = rollups.RollupDelta(), rollups.RollupDelta()
    for row in rollups.select_rows(source=source, since=since, route_id=rollout.route_id):
        (canary if row.deployment_id == rollout.canary_id else baseline).merge(rollups.RollupDelta.of_row(row))
    return canary, baseline


def judge_step(rollout):
    """Return (Judgement, canary Arm, baseline Arm) of the current step's window so far.

    A shadow step compares the mirrored requests (the canary's answers with the primary's to the same
    requests); mirrors are not streamed, so a time-to-first-token guard waits for the first weighted step.
    """
    guards = [analysis.Guard(**g) for g in rollout.guards]
    source = Source.TRAFFIC
    if is_shadow(rollout.current):
        source = Source.SHADOW
        guards = [g for g in guards if g.metric != analysis.Metric.TTFT_P95] or guards
    canary_total, baseline_total = arm_totals(rollout, rollout.step_started_at, source)
    if not rollout.thresholds:
        frozen = analysis.step_thresholds(baseline_total)
        rollout.thresholds = {str(m): v for m, v in frozen.items() if v is not None}
    thresholds = {analysis.Metric(m): v for m, v in rollout.thresholds.items()}
    canary, baseline = analysis.arms_from_totals(canary_total, baseline_total, guards, thresholds)
    carried = {analysis.Metric(m): tuple(v) for m, v in rollout.carried.items()}
    judgement = analysis.judge(canary, baseline, guards, alpha=rollout.alpha,
                               min_canary_requests=rollout.min_canary_requests, carried=carried)
    return judgement, canary, baseline


def _tick_running(rollout, now):
    judgement, canary, baseline = judge_step(rollout)
    evidence = judgement.as_dict()
    _store_verdict(rollout, judgement, canary, baseline)
    if judgement.verdict == analysis.Verdict.FAIL:
        return _roll_back(rollout, S.ROLLED_BACK, actor=rollout.actor, reason=judgement.sentence, evidence=evidence)
    step = rollout.current
    dwelt = (now - rollout.step_started_at).total_seconds() >= step.get("min_dwell_s", 0)
    if judgement.verdict == analysis.Verdict.PASS and dwelt and canary.requests >= step.get("min_requests", 0):
        rollout.carried = {str(m.metric): [m.log_fail, m.log_pass] for m in judgement.metrics}
        reason = f"step {rollout.step + 1} ({step_label(step)}) passed: {judgement.sentence}"
        return _enter_step(rollout, rollout.step + 1, actor=rollout.actor, reason=reason, evidence=evidence)
    if (now - rollout.step_started_at).total_seconds() >= rollout.step_timeout_s:
        reason = f"step {rollout.step + 1} timed out after {rollout.step_timeout_s} s: {judgement.sentence}"
        return _transition(rollout, S.PAUSED, actor=rollout.actor, reason=reason, evidence=evidence)
    rollout.save()  # keeps the frozen thresholds
    return None


def step_label(step):
    return f"shadow {step['shadow']}%" if is_shadow(step) else f"{step['weight']}%"


def _store_verdict(rollout, judgement, canary, baseline):
    last = rollout.verdicts.filter(step=rollout.step).first()
    if last and (last.canary_requests, last.baseline_requests) == (canary.requests, baseline.requests):
        return last  # no new traffic: the same verdict again adds nothing to the history
    return RolloutVerdict.objects.create(
        rollout=rollout, step=rollout.step, verdict=judgement.verdict, sentence=judgement.sentence,
        evidence=judgement.as_dict(), canary_requests=canary.requests, baseline_requests=baseline.requests)


TICK_ACTIONS = {S.PREFLIGHT: _tick_preflight, S.RUNNING: _tick_running, S.ROLLING_BACK: _tick_rolling_back}


def active_rollout(route_id):
    """Return the route's active rollout, or None."""
    return Rollout.objects.filter(route_id=route_id, state__in=ACTIVE_STATES).first()
