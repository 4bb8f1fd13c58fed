"""The rollout state machine: gates, preflight, ticks that step, promote, hold, pause and roll back."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from routing.models import AuditEvent, Event, EventKind
from routing.outcomes import Outcome
from routing.rollouts import controller
from routing.rollouts.controller import GateRefused, gate, step_weights, tick
from routing.rollouts.models import Rollout, RolloutState
from routing.weights import weights_history

from .helpers import age, draft, probe_results, traffic, world

pytestmark = pytest.mark.django_db
S = RolloutState


def started(w, **fields):
    rollout = draft(w, **fields)
    gate(rollout.pk, "start", reason="ship the new model", actor="admin")
    return Rollout.objects.get(pk=rollout.pk)


def running(w, **fields):
    rollout = started(w, **fields)
    probe_results(w.canary, [Outcome.OK] * rollout.preflight_probes)
    assert tick(rollout.pk) == S.RUNNING
    return Rollout.objects.get(pk=rollout.pk)


def states(rollout):
    return [(t.from_state, t.to_state) for t in rollout.transitions.all()]


def test_step_weights_give_the_canary_its_weight_and_share_the_rest_as_the_baseline():
    assert step_weights({"a": 60, "b": 40, "c": 0}, "c", 25) == {"a": 45, "b": 30, "c": 25}
    assert step_weights({"a": 1, "b": 1, "c": 0}, "c", 5) == {"a": 48, "b": 47, "c": 5}
    assert step_weights({"a": 70, "b": 30, "c": 0}, "c", 0) == {"a": 70, "b": 30, "c": 0}


def test_start_captures_the_baseline_and_records_who_and_why():
    w = world()
    rollout = started(w)
    assert rollout.state == S.PREFLIGHT
    assert rollout.baseline == {"canary": 0, "stable": 100}
    transition = rollout.transitions.get()
    assert (transition.from_state, transition.to_state, transition.actor) == (S.DRAFT, S.PREFLIGHT, "admin")
    assert transition.reason == "ship the new model"
    assert AuditEvent.objects.filter(object_type="rollout", actor="admin", reason="ship the new model").exists()
    assert Event.objects.filter(kind=EventKind.ROLLOUT, route=w.route).exists()
    assert w.route.weights() == {"canary": 0, "stable": 100}  # preflight gives no weight


def test_a_canary_that_fails_preflight_never_gets_a_weight():
    w = world()  # the canary's provider is at a closed port: the tick's own probe fails
    rollout = started(w)
    probe_results(w.canary, [Outcome.OK])
    assert tick(rollout.pk) == S.ABORTED
    rollout.refresh_from_db()
    assert rollout.transitions.last().reason.startswith("preflight failed: probe Connect error")
    assert w.route.weights() == {"canary": 0, "stable": 100}
    assert not weights_history(w.route).exists()


def test_a_canary_that_passes_preflight_gets_the_first_step_through_the_audited_path():
    w = world()
    rollout = running(w)
    assert rollout.step == 0
    assert w.route.weights() == {"canary": 10, "stable": 90}
    change = weights_history(w.route).get()
    assert change.actor == f"rollout:{rollout.pk}"
    assert change.reason == "preflight passed: 3 of 3 probes ok"


def test_a_healthy_canary_steps_up_and_is_promoted_at_the_end():
    w = world()
    rollout = running(w)
    traffic(w.route, w.canary, 1500)
    traffic(w.route, w.stable, 13500)
    assert tick(rollout.pk) == S.RUNNING
    rollout.refresh_from_db()
    assert rollout.step == 1
    assert w.route.weights() == {"canary": 50, "stable": 50}
    assert rollout.transitions.last().reason.startswith("step 1 (10%) passed: every guard within")
    assert rollout.carried  # the passed step's evidence goes on to the next
    traffic(w.route, w.canary, 1500)
    traffic(w.route, w.stable, 1500)
    assert tick(rollout.pk) == S.PROMOTED
    assert w.route.weights() == {"canary": 50, "stable": 50}


def test_a_failing_canary_is_rolled_back_at_once_with_the_verdict_as_reason():
    w = world()
    rollout = running(w)
    traffic(w.route, w.canary, 200, errors=40, minutes=3)
    traffic(w.route, w.stable, 1800, errors=18, minutes=3)
    assert tick(rollout.pk) == S.ROLLED_BACK
    rollout.refresh_from_db()
    assert w.route.weights() == {"canary": 0, "stable": 100}
    verdict = rollout.verdicts.get()
    assert verdict.verdict == "fail"
    assert verdict.sentence.startswith("canary errors 40 of 200 (20.0 %) vs baseline 18 of 1,800 (1.0 %)")
    assert verdict.sentence.endswith(": rolling back")
    assert states(rollout)[-2:] == [(S.RUNNING, S.ROLLING_BACK), (S.ROLLING_BACK, S.ROLLED_BACK)]
    assert weights_history(w.route).first().reason == verdict.sentence
    assert rollout.transitions.last().evidence["metrics"][0]["evidence"]["canary"]["events"] == 40


def test_client_errors_never_count_against_the_canary():
    w = world()
    rollout = running(w)
    traffic(w.route, w.canary, 200, errors=40, error_kind=Outcome.CLIENT_CLOSED)
    traffic(w.route, w.stable, 1800)
    assert tick(rollout.pk) != S.ROLLED_BACK


def test_too_few_canary_requests_hold_the_step_and_its_timeout_pauses_for_a_human():
    w = world()
    rollout = running(w, step_timeout_s=600)
    traffic(w.route, w.canary, 20)
    traffic(w.route, w.stable, 180)
    assert tick(rollout.pk) == S.RUNNING
    rollout.refresh_from_db()
    assert rollout.step == 0
    assert rollout.verdicts.get().verdict == "inconclusive"
    assert tick(rollout.pk, now=timezone.now() + timedelta(seconds=601)) == S.PAUSED
    rollout.refresh_from_db()
    reason = rollout.transitions.last().reason
    assert reason.startswith("step 1 timed out after 600 s undecided: ")
    assert reason.endswith("canary drained until a human resumes, promotes or aborts")
    assert w.route.weights() == {"canary": 0, "stable": 100}  # never left serving while nobody knows
    gate(rollout.pk, "resume", reason="more traffic now", actor="admin")
    assert w.route.weights() == {"canary": 10, "stable": 90}  # the step starts afresh


def test_a_pause_step_awaits_approval_and_approve_moves_on():
    w = world()
    plan = [{"weight": 10, "min_dwell_s": 0, "min_requests": 0}, {"pause": True},
            {"weight": 40, "min_dwell_s": 0, "min_requests": 0}]
    rollout = running(w, plan=plan, min_canary_requests=50)
    traffic(w.route, w.canary, 1500)
    traffic(w.route, w.stable, 13500)
    assert tick(rollout.pk) == S.AWAITING_APPROVAL
    assert tick(rollout.pk) is None  # nothing to tick while it waits
    gate(rollout.pk, "approve", reason="numbers look right", actor="admin")
    rollout.refresh_from_db()
    assert (rollout.state, rollout.step) == (S.RUNNING, 2)
    assert w.route.weights() == {"canary": 40, "stable": 60}


def test_pause_resume_promote_now_abort_and_retry():
    w = world()
    rollout = running(w)
    gate(rollout.pk, "pause", reason="lunch", actor="admin")
    assert tick(rollout.pk) is None
    gate(rollout.pk, "resume", reason="back", actor="admin")
    gate(rollout.pk, "promote", reason="we are sure", actor="admin")
    assert w.route.weights() == {"canary": 50, "stable": 50}
    rollout.refresh_from_db()
    assert rollout.state == S.PROMOTED
    with pytest.raises(GateRefused):
        gate(rollout.pk, "abort", reason="too late", actor="admin")

    other = running(world_two(w))
    gate(other.pk, "abort", reason="wrong model", actor="admin")
    other.refresh_from_db()
    assert other.state == S.ABORTED
    assert other.route.weights() == {"canary2": 0, "stable2": 100}
    assert weights_history(other.route).count() == 2  # its first step and the rollback, nothing for a no-op
    gate(other.pk, "retry", reason="fixed the model", actor="admin")
    other.refresh_from_db()
    assert other.state == S.PREFLIGHT
    assert [a.after["gate"] for a in AuditEvent.objects.filter(object_type="rollout").order_by("id")] == [
        "start", "pause", "resume", "promote", "start", "abort", "retry"]


def world_two(first):
    from types import SimpleNamespace

    from routing.models import Deployment, Route, RouteTarget

    w = SimpleNamespace(provider=first.provider)
    stable = Deployment.objects.create(name="stable2", provider=w.provider, upstream_model="m")
    canary = Deployment.objects.create(name="canary2", provider=w.provider, upstream_model="m")
    route = Route.objects.create(name="chat2")
    RouteTarget.objects.create(route=route, deployment=stable, weight=100)
    RouteTarget.objects.create(route=route, deployment=canary, weight=0)
    w.route, w.stable, w.canary = route, stable, canary
    return w


@pytest.mark.parametrize("name", ["approve", "pause", "resume", "promote", "abort", "retry"])
def test_a_gate_that_does_not_apply_changes_nothing(name):
    w = world()
    rollout = draft(w)
    with pytest.raises(GateRefused):
        gate(rollout.pk, name, reason="why not", actor="admin")
    rollout.refresh_from_db()
    assert rollout.state == S.DRAFT
    assert not rollout.transitions.exists()
    assert not AuditEvent.objects.filter(object_type="rollout").exists()


def test_overlapping_ticks_claim_once():
    w = world()
    rollout = started(w)
    now = timezone.now()
    assert controller.claim(rollout.pk, now) == 1
    assert controller.claim(rollout.pk, now) is None
    assert tick(rollout.pk, now) is None  # the other tick still holds the lease
    assert Rollout.objects.get(pk=rollout.pk).state == S.PREFLIGHT


def test_a_tick_killed_midway_leaves_the_rollout_as_it_was_and_the_next_tick_goes_on(monkeypatch):
    w = world()
    rollout = started(w)
    probe_results(w.canary, [Outcome.OK] * 3)

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(controller, "_set_canary", killed)
    with pytest.raises(SystemExit):
        tick(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.state == S.PREFLIGHT
    assert states(rollout) == [(S.DRAFT, S.PREFLIGHT)]
    assert w.route.weights() == {"canary": 0, "stable": 100}
    monkeypatch.undo()
    assert tick(rollout.pk) is None  # its lease still stands
    assert tick(rollout.pk, now=timezone.now() + timedelta(seconds=controller.LEASE_S + 1)) == S.RUNNING
    assert states(Rollout.objects.get(pk=rollout.pk)) == [(S.DRAFT, S.PREFLIGHT), (S.PREFLIGHT, S.RUNNING)]


def test_one_active_rollout_per_route_and_per_canary():
    w = world()
    started(w)
    with pytest.raises(IntegrityError), transaction.atomic():
        draft(w, state=S.RUNNING)
    draft(w)  # another draft is fine


def test_a_preflight_cannot_be_paused_so_no_resume_ever_skips_it():
    w = world()
    rollout = started(w)
    with pytest.raises(GateRefused):
        gate(rollout.pk, "pause", reason="wait", actor="admin")
    assert Rollout.objects.get(pk=rollout.pk).state == S.PREFLIGHT
    assert w.route.weights() == {"canary": 0, "stable": 100}


def test_a_retried_rollout_preflights_again_and_starts_from_its_first_step():
    w = world()
    rollout = running(w)
    traffic(w.route, w.canary, 200, errors=40, minutes=3)
    traffic(w.route, w.stable, 1800, errors=18, minutes=3)
    assert tick(rollout.pk) == S.ROLLED_BACK
    gate(rollout.pk, "retry", reason="fixed", actor="admin")
    probe_results(w.canary, [Outcome.OK] * 3)
    # The minute the first attempt ended in holds its failing canary traffic: the new attempt's first step begins
    # after it, or it would be rolled back on the old attempt's failures.
    ended = rollout.transitions.filter(to_state=S.ROLLED_BACK).get().at
    assert tick(rollout.pk, now=ended) == S.PREFLIGHT
    assert tick(rollout.pk, now=ended.replace(second=0, microsecond=0) + timedelta(minutes=1)) == S.RUNNING
    rollout.refresh_from_db()
    assert (rollout.step, rollout.carried) == (0, {})
    assert w.route.weights() == {"canary": 10, "stable": 90}


def test_a_step_that_begins_mid_minute_counts_that_minute_s_traffic_after_its_start():
    from probes import rollups
    from probes.models import Source

    w = world()
    rollout = running(w)
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=2)
    Rollout.objects.filter(pk=rollout.pk).update(step_started_at=minute + timedelta(seconds=30))
    agg = rollups.Aggregator(Source.TRAFFIC)
    for deployment, requests in ((w.canary, 120), (w.stable, 900)):
        for _ in range(requests):
            agg.add(deployment.pk, route_id=w.route.pk, when=minute + timedelta(seconds=40), outcome=Outcome.OK,
                    latency_ms=100.0)
    rollups.save_deltas(agg.drain())
    tick(rollout.pk, now=minute + timedelta(seconds=50))
    verdict = Rollout.objects.get(pk=rollout.pk).verdicts.get()
    assert (verdict.canary_requests, verdict.baseline_requests) == (120, 900)  # not waiting for the next minute


def test_a_shadow_step_gives_the_canary_no_weight_and_is_judged_on_the_mirrored_requests():
    from probes import rollups
    from probes.models import Source

    w = world()
    plan = [{"shadow": 20, "min_dwell_s": 0, "min_requests": 100}, {"weight": 50, "min_dwell_s": 0, "min_requests": 0}]
    guards = [{"metric": "errors", "allowed": 0.02}, {"metric": "ttft_p95", "allowed": 0.1}]
    rollout = running(w, plan=plan, guards=guards)
    assert w.route.weights() == {"canary": 0, "stable": 100}
    traffic(w.route, w.stable, 500)  # real traffic: not what a shadow step compares
    assert tick(rollout.pk) == S.RUNNING
    assert Rollout.objects.get(pk=rollout.pk).verdicts.get().canary_requests == 0
    agg = rollups.Aggregator(Source.SHADOW)
    for deployment in (w.canary, w.stable):  # each mirrored request once per arm, no time to first token
        for _ in range(1500):
            agg.add(deployment.pk, route_id=w.route.pk, outcome=Outcome.OK, latency_ms=100.0)
    rollups.save_deltas(agg.drain())
    assert tick(rollout.pk) == S.RUNNING
    rollout.refresh_from_db()
    assert rollout.step == 1 and w.route.weights() == {"canary": 50, "stable": 50}
    passed = rollout.transitions.last()
    assert passed.reason.startswith("step 1 (shadow 20%) passed: every guard within its allowed regression (1 of 1)")


def test_a_plan_ending_at_100_percent_promotes_when_it_gets_there_with_no_baseline_left_to_judge():
    w = world()
    plan = [{"weight": 10, "min_dwell_s": 0, "min_requests": 0}, {"weight": 100}]
    rollout = running(w, plan=plan)
    traffic(w.route, w.canary, 1500)
    traffic(w.route, w.stable, 13500)
    assert tick(rollout.pk) == S.PROMOTED
    assert w.route.weights() == {"canary": 100, "stable": 0}
    assert tick(rollout.pk) is None  # nothing left to tick, nothing divided by an empty baseline


def test_one_rollouts_error_never_stops_the_others_ticks(monkeypatch, caplog):
    first = world()
    second = world_two(first)
    broken, healthy = running(first), running(second)
    real = controller.judge_step

    def judge_step(rollout):
        if rollout.pk == broken.pk:
            raise ZeroDivisionError("as a 100 % step once did")
        return real(rollout)

    monkeypatch.setattr(controller, "judge_step", judge_step)
    traffic(second.route, second.canary, 200, errors=40, minutes=3)
    traffic(second.route, second.stable, 1800, errors=18, minutes=3)
    assert controller.tick_all() == 1
    assert Rollout.objects.get(pk=healthy.pk).state == S.ROLLED_BACK
    assert Rollout.objects.get(pk=broken.pk).state == S.RUNNING  # its lease expires; the next tick retries it
    assert f"rollout {broken.pk}: tick failed" in caplog.text


def test_a_bad_minute_on_the_canarys_provider_holds_the_step_and_says_incident_once(
        django_capture_on_commit_callbacks, monkeypatch):
    published = []
    monkeypatch.setattr(controller.live, "timeline_event", published.append)
    w = world()
    rollout = running(w)
    traffic(w.route, w.canary, 100, errors=50)  # this minute: half the canary's requests fail
    traffic(w.route, w.stable, 900, errors=9)
    age(rollout)
    traffic(w.route, w.canary, 100, errors=1)
    traffic(w.route, w.stable, 900, errors=9)
    with django_capture_on_commit_callbacks(execute=True):
        assert tick(rollout.pk) == S.RUNNING
        assert tick(rollout.pk) == S.RUNNING
    assert len([e for e in published if "canary provider incident" in e.message]) == 1  # pushed live, once
    incidents = Event.objects.filter(kind=EventKind.ROLLOUT, message__contains="canary provider incident")
    assert incidents.count() == 1
    assert rollout.verdicts.first().evidence["incident"] is True
    assert w.route.weights() == {"canary": 10, "stable": 90}


def test_decide_moves_on_only_after_the_dwell_and_the_minimum_requests():
    from routing.rollouts.analysis import Judgement, Verdict

    now = timezone.now()
    rollout = Rollout(plan=[{"weight": 10, "min_dwell_s": 120, "min_requests": 500}], step=0,
                      step_started_at=now, step_timeout_s=600)
    passed, held = Judgement(Verdict.PASS, "", []), Judgement(Verdict.INCONCLUSIVE, "", [])
    assert controller.decide(rollout, passed, 1000, now + timedelta(seconds=60)) == controller.Decision.HOLD
    assert controller.decide(rollout, passed, 400, now + timedelta(seconds=130)) == controller.Decision.HOLD
    assert controller.decide(rollout, passed, 600, now + timedelta(seconds=130)) == controller.Decision.NEXT_STEP
    assert controller.decide(rollout, held, 600, now + timedelta(seconds=600)) == controller.Decision.TIMED_OUT
    failed = Judgement(Verdict.FAIL, "", [])
    assert controller.decide(rollout, failed, 1, now) == controller.Decision.ROLL_BACK


def test_while_a_rollout_runs_session_ids_are_ignored_so_each_request_draws_its_arm():
    from routing.gateway import snapshot

    w = world()
    assert snapshot.build().routes["chat"].sticky
    rollout = running(w)
    assert not snapshot.build().routes["chat"].sticky  # sticky users would give the arms different users
    gate(rollout.pk, "abort", reason="enough", actor="admin")
    assert snapshot.build().routes["chat"].sticky


def test_a_step_before_the_promotion_passes_at_the_looser_level_and_hands_its_evidence_on():
    from probes.rollups import RollupDelta
    from routing.rollouts import analysis

    def minutes(requests, errors):
        return [RollupDelta(count=requests, ok=requests - errors, errors={"server_error": errors})] * 3

    # An identical canary, e = 6.74 within +0.5 pp: enough for 10 % -> 25 %, not for the promotion.
    window = analysis.StepWindow(minutes(1000, 10), minutes(9000, 90))
    guards = [analysis.Guard(analysis.Metric.ERRORS, allowed=0.005)]
    plan = [{"weight": 10}, {"weight": 25}, {"weight": 100}]
    rollout = Rollout(plan=plan, guards=[{"metric": "errors", "allowed": 0.005}], alpha=0.01, step=0, carried={})
    first = controller.judge_window(rollout, window, guards)
    assert first.verdict == analysis.Verdict.PASS
    rollout.carried, rollout.step = controller.next_carried(first), 1
    assert controller.carried_pass_evidence(rollout)[analysis.Metric.ERRORS] == pytest.approx(1.908, abs=0.01)
    # At the promoting step the same traffic again makes the product 6.74^2 = 45 >= 20, and its own 6.74 is more
    # than sqrt(20): promoted. Without the first step's evidence it would hold.
    assert controller.judge_window(rollout, window, guards).verdict == analysis.Verdict.PASS
    rollout.carried = {}
    assert controller.judge_window(rollout, window, guards).verdict == analysis.Verdict.INCONCLUSIVE
