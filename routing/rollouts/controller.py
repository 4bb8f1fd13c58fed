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

import logging
from datetime import timedelta
from enum import StrEnum

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

log = logging.getLogger(__name__)

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
    rollout.step, rollout.carried = 0, {}
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
    if step.get("weight") == 100:  # no baseline is left to compare: reaching 100 % is the promotion
        _set_canary(rollout, 100, reason)
        return _transition(rollout, S.PROMOTED, actor=actor, reason=reason, evidence=evidence)
    _set_canary(rollout, step.get("weight", 0), reason)  # a shadow step: the canary answers no client
    rollout.step_started_at = timezone.now()
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
    """Tick every rollout that has work (preflight, running, rolling back); return how many were claimed.

    One rollout's error is logged and never stops the others' ticks (its lease lets the next tick retry it).
    """
    claimed = 0
    for pk in list(Rollout.objects.filter(state__in=TICKING_STATES).values_list("pk", flat=True)):
        try:
            claimed += tick(pk, now) is not None
        except Exception:
            log.exception("rollout %s: tick failed", pk)
    return claimed


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
    if len(results) >= rollout.preflight_probes and _past_last_attempt(rollout, now):
        reason = f"preflight passed: {len(results)} of {rollout.preflight_probes} probes ok"
        return _enter_step(rollout, 0, actor=rollout.actor, reason=reason, evidence=evidence)
    return None


def _past_last_attempt(rollout, now):
    """Whether a retried rollout's first step may begin: not in the minute its earlier attempt ended in. The
    verdicts read whole minutes of rollups, so that minute holds the earlier attempt's canary traffic (the one
    that was rolled back), which the new attempt must not be judged on."""
    ended = rollout.transitions.filter(to_state__in=(S.ROLLED_BACK, S.ABORTED)).order_by("at").last()
    return ended is None or now >= ended.at.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _tick_rolling_back(rollout, now):
    last = rollout.transitions.filter(to_state=S.ROLLING_BACK).last()
    _roll_back(rollout, S.ROLLED_BACK, actor=rollout.actor, reason=last.reason if last else "rolling back")


def is_shadow(step):
    return bool(step and step.get("shadow"))


REFERENCE = timedelta(minutes=analysis.REFERENCE_MINUTES)
UNSTREAMED = (analysis.Metric.TTFT_P95, analysis.Metric.TPOT_P95)


def step_window(rollout, since, source=Source.TRAFFIC):
    """Return the StepWindow of the route's own traffic (or shadow requests) since `since`: per-minute deltas of
    the canary and of every other target (the baseline), and the baseline's minutes since REFERENCE before
    `since` as its reference. Rollups are per minute, so the window starts at the minute `since` falls in.
    """
    start = rollups.minute_of(since)
    canary, baseline, reference = {}, {}, {}
    for row in rollups.select_rows(source=source, since=start - REFERENCE, route_id=rollout.route_id):
        delta = rollups.RollupDelta.of_row(row)
        is_canary = row.deployment_id == rollout.canary_id
        if not is_canary:
            reference.setdefault(row.minute, rollups.RollupDelta()).merge(delta)
        if row.minute >= start:
            arm = canary if is_canary else baseline
            arm.setdefault(row.minute, rollups.RollupDelta()).merge(delta)
    minutes = sorted(set(canary) | set(baseline))
    return analysis.StepWindow([canary.get(m) or rollups.RollupDelta() for m in minutes],
                               [baseline.get(m) or rollups.RollupDelta() for m in minutes],
                               [reference[m] for m in sorted(reference)])


def judge_step(rollout):
    """Return (Judgement, StepWindow) of the current step so far.

    A shadow step compares the mirrored requests (the canary's answers with the primary's to the same
    requests); mirrors are not streamed, so first-token and per-token guards wait for the first weighted step.
    """
    guards = [analysis.Guard(**g) for g in rollout.guards]
    source = Source.TRAFFIC
    if is_shadow(rollout.current):
        source = Source.SHADOW
        guards = [g for g in guards if g.metric not in UNSTREAMED] or guards
    window = step_window(rollout, rollout.step_started_at, source)
    return judge_window(rollout, window, guards), window


def judge_window(rollout, window, guards):
    """Return the Judgement of the current step's window: the rollout's alpha and minimum sample, the evidence
    its earlier steps carried, and the pass level of this step (analysis.pass_alpha_of)."""
    return analysis.judge(window, guards, alpha=rollout.alpha, min_canary_requests=rollout.min_canary_requests,
                          carried=carried_evidence(rollout), carried_pass=carried_pass_evidence(rollout),
                          pass_alpha=analysis.pass_alpha_of(rollout.plan, rollout.step))


def carried_evidence(rollout):
    """Return {Metric: failure log e-value of earlier steps} (rows store [log_fail, log_pass]; some a bare
    log_fail)."""
    return {analysis.Metric(m): float(v[0] if isinstance(v, list) else v) for m, v in rollout.carried.items()}


def carried_pass_evidence(rollout):
    """Return {Metric: pass log e-value of the earlier, passed steps} (none for rows that stored only log_fail)."""
    return {analysis.Metric(m): float(v[1]) for m, v in rollout.carried.items() if isinstance(v, list)}


class Decision(StrEnum):
    """What a look at a running step decides (the controller's tick and the verdict bench share it)."""

    ROLL_BACK = "roll_back"
    NEXT_STEP = "next_step"
    TIMED_OUT = "timed_out"
    HOLD = "hold"


def decide(rollout, judgement, canary_requests, now):
    """Return the Decision for a running step: fail rolls back; a pass after the step's dwell and minimum
    requests moves on; past the step timeout the canary is drained and a human asked; otherwise hold."""
    if judgement.verdict == analysis.Verdict.FAIL:
        return Decision.ROLL_BACK
    step = rollout.current
    elapsed = (now - rollout.step_started_at).total_seconds()
    if (judgement.verdict == analysis.Verdict.PASS and elapsed >= step.get("min_dwell_s", 0)
            and canary_requests >= step.get("min_requests", 0)):
        return Decision.NEXT_STEP
    if elapsed >= rollout.step_timeout_s:
        return Decision.TIMED_OUT
    return Decision.HOLD


def next_carried(judgement):
    """Return the evidence a passed step hands to the next, {metric: [log_fail, log_pass]}: failure evidence
    never below none (an e-detector over steps), and the pass evidence of the steps so far."""
    return {str(m.metric): [max(m.log_fail, 0.0), max(m.log_pass, 0.0)] for m in judgement.metrics}


def _tick_running(rollout, now):
    judgement, window = judge_step(rollout)
    evidence = judgement.as_dict()
    canary_requests, baseline_requests = window.requests()
    _store_verdict(rollout, judgement, canary_requests, baseline_requests)
    decision = decide(rollout, judgement, canary_requests, now)
    if decision == Decision.ROLL_BACK:
        return _roll_back(rollout, S.ROLLED_BACK, actor=rollout.actor, reason=judgement.sentence, evidence=evidence)
    if judgement.incident:
        _note_incident(rollout, judgement)
    step = rollout.current
    if decision == Decision.NEXT_STEP:
        rollout.carried = next_carried(judgement)
        reason = f"step {rollout.step + 1} ({step_label(step)}) passed: {judgement.sentence}"
        return _enter_step(rollout, rollout.step + 1, actor=rollout.actor, reason=reason, evidence=evidence)
    if decision == Decision.TIMED_OUT:
        reason = (f"step {rollout.step + 1} timed out after {rollout.step_timeout_s} s undecided: "
                  f"{judgement.sentence}; canary drained until a human resumes, promotes or aborts")
        _set_canary(rollout, 0, reason)
        return _transition(rollout, S.PAUSED, actor=rollout.actor, reason=reason, evidence=evidence)
    rollout.save()
    return None


def _note_incident(rollout, judgement):
    """Put "canary provider incident" on the timeline once per step (the step holds; nothing is proven)."""
    already = Event.objects.filter(kind=EventKind.ROLLOUT, route=rollout.route, deployment=rollout.canary,
                                   created_at__gte=rollout.step_started_at,
                                   message__contains="canary provider incident").exists()
    if not already:
        message = f"{rollout}: canary provider incident at step {rollout.step + 1}, holding: {judgement.sentence}"
        event = Event.objects.create(kind=EventKind.ROLLOUT, route=rollout.route, deployment=rollout.canary,
                                     message=message[:500], data={"rollout": rollout.pk, "incident": True})
        transaction.on_commit(lambda: live.timeline_event(event))


def step_label(step):
    return f"shadow {step['shadow']}%" if is_shadow(step) else f"{step['weight']}%"


def _store_verdict(rollout, judgement, canary_requests, baseline_requests):
    last = rollout.verdicts.filter(step=rollout.step).first()
    if last and (last.canary_requests, last.baseline_requests) == (canary_requests, baseline_requests):
        return last  # no new traffic: the same verdict again adds nothing to the history
    return RolloutVerdict.objects.create(
        rollout=rollout, step=rollout.step, verdict=judgement.verdict, sentence=judgement.sentence,
        evidence=judgement.as_dict(), canary_requests=canary_requests, baseline_requests=baseline_requests)


TICK_ACTIONS = {S.PREFLIGHT: _tick_preflight, S.RUNNING: _tick_running, S.ROLLING_BACK: _tick_rolling_back}


def active_rollout(route_id):
    """Return the route's active rollout, or None."""
    return Rollout.objects.filter(route_id=route_id, state__in=ACTIVE_STATES).first()
