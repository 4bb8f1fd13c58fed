"""What each condition kind sees: state sources (health, circuits, keys, rollouts, budgets, silent probes) and
thresholds over rollups, with rules narrowed by their labels."""

from datetime import timedelta
from decimal import Decimal

import pytest

from dashboard.alerts import engine, sources
from dashboard.alerts.models import Alert
from probes import rollups
from probes.models import ProbeBudget, ProbeTarget, ProbeUsage, Source
from routing.models import CircuitState, DeploymentCircuit, KeyState
from routing.outcomes import Outcome
from routing.rollouts.models import Rollout, RolloutState, RolloutTransition

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db


def observed(rule, now):
    return sorted((o.labels.get("deployment") or o.labels.get("route") or o.labels.get("provider") or "*", o.summary)
                  for o in sources.observe([rule], now)[rule.pk])


def traffic(deployment, minute, outcomes, ttft_ms=None, route=None, cost="0", source=Source.TRAFFIC):
    delta = rollups.RollupDelta(rollups.minute_of(minute), source, deployment.pk, None, route.pk if route else None)
    for outcome in outcomes:
        delta.add(outcome, latency_ms=100, ttft_ms=ttft_ms, cost=Decimal(cost))
    rollups.save_delta(delta)


def test_a_deployment_that_is_down_or_degraded_holds_with_its_reason(world, clock):
    set_health(world.canary, "degraded", "errors: 3 of the last 10 probes failed")
    down = make_rule(params={"states": ["down"]})
    either = make_rule("unhealthy", params={"states": ["down", "degraded"]})
    assert observed(down, clock()) == []
    assert observed(either, clock()) == [("canary", "canary is degraded: errors: 3 of the last 10 probes failed")]


def test_rule_labels_narrow_the_subjects_and_free_labels_travel_with_the_alert(world, policy, sent, clock):
    set_health(world.canary, "down")
    set_health(world.stable, "down")
    make_rule(labels={"deployment": "stable", "team": "ml"})
    engine.tick(clock())
    alert = Alert.objects.get()
    assert alert.labels == {"provider": "sim", "deployment": "stable", "health": "down", "team": "ml",
                            "alertname": "deployment down", "severity": "critical", "kind": "deployment_health"}


def test_an_open_circuit_holds_until_it_closes(world, policy, sent, clock):
    rule = make_rule("circuit", kind="circuit_open", params={})
    circuit = DeploymentCircuit.objects.create(deployment=world.canary, state=CircuitState.OPEN, reason="5 failures")
    assert observed(rule, clock()) == [("canary", "circuit of canary is open: 5 failures")]
    engine.tick(clock())
    circuit.state = CircuitState.CLOSED
    circuit.save()
    engine.tick(clock.advance(5))
    assert Alert.objects.get().state == "resolved"


def test_keys_invalid_or_still_rate_limited(world, clock):
    rule = make_rule("keys", kind="key_state", params={})
    world.key.state, world.key.state_reason = KeyState.RATE_LIMITED, "probe got HTTP 429"
    world.key.rate_limited_until = clock() + timedelta(seconds=30)
    world.key.save()
    assert observed(rule, clock()) == [("sim", "key sim/primary is rate-limited: probe got HTTP 429")]
    assert observed(rule, clock() + timedelta(seconds=31)) == []  # the cooling is over
    world.key.state = KeyState.INVALID
    world.key.save()
    assert [s for _, s in observed(rule, clock())] == ["key sim/primary is invalid: probe got HTTP 429"]


def rollout_in(world, state, at, from_state=RolloutState.RUNNING, reason="errors +3 pp"):
    rollout = Rollout.objects.create(route=world.route, canary=world.canary, plan=[{"weight": 50}], guards=[],
                                     state=state)
    RolloutTransition.objects.create(rollout=rollout, from_state=from_state, to_state=state, actor="rollout:1",
                                     reason=reason, at=at)
    return rollout


def test_rollout_outcomes_hold_for_their_hold_time_and_approval_while_it_waits(world, clock):
    rule = make_rule("rollouts", kind="rollout", params={"states": ["rolled_back", "awaiting_approval"],
                                                         "hold_s": 600})
    rolled_back = rollout_in(world, RolloutState.ROLLED_BACK, clock())
    assert observed(rule, clock()) == [("canary", f"{rolled_back}: rolled back: errors +3 pp")]
    assert observed(rule, clock() + timedelta(seconds=601)) == []
    rolled_back.delete()
    rollout_in(world, RolloutState.AWAITING_APPROVAL, clock() - timedelta(days=3))
    assert [s.split(": ", 1)[1] for _, s in observed(rule, clock())] == ["awaiting approval: a human's approval is "
                                                                         "needed"]


def test_a_failed_preflight_is_told_apart_from_an_abort(world, clock):
    rule = make_rule("preflight", kind="rollout", params={"states": ["preflight_failed"]})
    rollout_in(world, RolloutState.ABORTED, clock(), from_state=RolloutState.RUNNING, reason="staff aborted")
    assert observed(rule, clock()) == []
    Rollout.objects.all().delete()
    rollout_in(world, RolloutState.ABORTED, clock(), from_state=RolloutState.PREFLIGHT, reason="preflight failed")
    assert len(observed(rule, clock())) == 1


def test_a_spent_probe_budget(world, clock):
    rule = make_rule("budget", kind="probe_budget", params={})
    ProbeBudget.objects.create(provider=world.provider, daily_tokens=100, slowdown=10)
    ProbeUsage.objects.create(provider=world.provider, day=clock().date(), tokens=99)
    assert observed(rule, clock()) == []
    ProbeUsage.objects.filter(provider=world.provider).update(tokens=100)
    assert observed(rule, clock()) == [("sim", "probe budget of sim is spent today; probes run 10x slower")]


def test_probes_that_stopped_reporting(world, clock):
    rule = make_rule("silent", kind="no_data", params={"intervals": 3})
    ProbeTarget.objects.update(interval_s=30, last_probe_at=clock() - timedelta(seconds=89))
    ProbeTarget.objects.filter(deployment=world.canary).update(last_probe_at=clock() - timedelta(seconds=91))
    assert [name for name, _ in observed(rule, clock())] == ["canary"]
    ProbeTarget.objects.filter(deployment=world.canary).update(enabled=False)  # paused: not expected to report
    assert observed(rule, clock()) == []


def test_p95_time_to_first_token_over_the_window(world, clock):
    rule = make_rule("slow", kind="ttft_p95", params={"threshold_ms": 2000, "window_s": 300})
    traffic(world.canary, clock() - timedelta(minutes=10), [Outcome.OK] * 20, ttft_ms=9000)  # outside the window
    traffic(world.stable, clock() - timedelta(minutes=2), [Outcome.OK] * 20, ttft_ms=500)
    assert observed(rule, clock()) == []
    traffic(world.canary, clock() - timedelta(minutes=1), [Outcome.OK] * 20, ttft_ms=2500, source=Source.PROBE)
    [(name, summary)] = observed(rule, clock())
    assert name == "canary" and "p95 TTFT" in summary and "> 2000 ms over 5 min" in summary


def test_error_rate_of_a_route_needs_enough_requests(world, clock):
    rule = make_rule("errors", kind="error_rate", params={"threshold": 0.05, "window_s": 600, "min_count": 20})
    traffic(world.stable, clock() - timedelta(minutes=3), [Outcome.OK] * 9 + [Outcome.SERVER_ERROR], route=world.route)
    assert observed(rule, clock()) == []  # 10 % of 10 requests: too few to judge
    traffic(world.canary, clock() - timedelta(minutes=1), [Outcome.OK] * 10, route=world.route)
    assert observed(rule, clock()) == []  # 1 of 20 is 5 %: not above it
    traffic(world.canary, clock(), [Outcome.SERVER_ERROR], route=world.route)
    assert observed(rule, clock()) == [("chat", "chat deployment error rate 9.5% > 5.0% over 10 min (2 of 21)")]


def test_error_rate_counts_the_deployments_failures_only(world, clock):
    """A client's 400s, deadlines and disconnects and a key's 429s make no provider look broken."""
    rule = make_rule("errors", kind="error_rate", params={"threshold": 0.05, "window_s": 600, "min_count": 20,
                                                         "scope": "deployment"})
    theirs = [Outcome.CLIENT_ERROR, Outcome.CLIENT_DEADLINE, Outcome.CLIENT_CLOSED, Outcome.RATE_LIMITED] * 10
    traffic(world.canary, clock() - timedelta(minutes=1), [Outcome.OK] * 10 + theirs, route=world.route)
    assert observed(rule, clock()) == []
    traffic(world.canary, clock(), [Outcome.TIMEOUT, Outcome.TRUNCATED, Outcome.MALFORMED], route=world.route)
    assert observed(rule, clock()) == [("canary", "canary deployment error rate 5.7% > 5.0% over 10 min (3 of 53)")]


def test_spend_today_in_total_and_per_route(world, clock):
    total = make_rule("spend", kind="spend_today", params={"limit": 10})
    per_route = make_rule("route spend", kind="spend_today", params={"limit": 4, "scope": "route"})
    traffic(world.stable, clock() - timedelta(days=1), [Outcome.OK], route=world.route, cost="50")  # yesterday
    traffic(world.stable, clock(), [Outcome.OK], route=world.route, cost="6")
    assert observed(total, clock()) == []
    assert observed(per_route, clock()) == [("chat", "chat spent 6.00 today (UTC) > limit 4")]
    traffic(world.canary, clock(), [Outcome.OK], route=world.route, cost="5")
    assert observed(total, clock()) == [("*", "all traffic spent 11.00 today (UTC) > limit 10")]


def test_a_deleted_routes_spend_today_still_counts_under_its_name(world, clock):
    from routing import deletion

    per_route = make_rule("route spend", kind="spend_today", params={"limit": 4, "scope": "route"})
    traffic(world.stable, clock(), [Outcome.OK], route=world.route, cost="6")
    deletion.delete(world.route, actor="test")  # archived: its rollups stay, and so does the money they spent
    assert observed(per_route, clock()) == [("chat", "chat spent 6.00 today (UTC) > limit 4")]


def default_rule(name):
    from dashboard.alerts.defaults import RULES
    from dashboard.alerts.models import AlertRule

    return AlertRule.objects.create(**next(rule for rule in RULES if rule["name"] == name))


def test_by_default_a_paused_rollout_fires_with_why_and_resolves_when_it_resumes(world, policy, sent, clock):
    from routing.rollouts import controller

    default_rule("rollout paused or stuck")
    rollout = Rollout.objects.create(route=world.route, canary=world.canary, plan=[{"weight": 50}], guards=[],
                                     state=RolloutState.RUNNING, step_started_at=clock(),
                                     baseline={"stable": 90, "canary": 10})
    engine.tick(clock())
    assert not Alert.objects.exists()  # running inside its timeout: nothing to say
    controller.gate(rollout.pk, "pause", reason="step 1 timed out after 1800 s: undecided", actor="rollout:1")
    engine.tick(clock.advance(5))
    alert = Alert.objects.get()
    assert alert.state == "firing" and alert.labels["event"] == "paused" and alert.labels["route"] == "chat"
    assert alert.summary == f"{rollout}: paused: step 1 timed out after 1800 s: undecided"
    engine.tick(clock.advance(30))  # the policy's group wait
    assert [m.alerts[0].summary for m, _ in sent][-1] == alert.summary
    controller.gate(rollout.pk, "resume", reason="looked at it", actor="alice")
    Rollout.objects.filter(pk=rollout.pk).update(step_started_at=clock())
    engine.tick(clock.advance(5))
    assert Alert.objects.get().state == "resolved"


def test_by_default_a_running_step_past_its_timeout_that_no_tick_paused_fires_as_stuck(world, policy, clock):
    default_rule("rollout paused or stuck")
    started = clock() - timedelta(seconds=600 + sources.STUCK_GRACE_S - 1)
    Rollout.objects.create(route=world.route, canary=world.canary, plan=[{"weight": 50}], guards=[],
                           state=RolloutState.RUNNING, step_started_at=started, step_timeout_s=600)
    engine.tick(clock())
    assert not Alert.objects.exists()  # the next tick may still pause it
    engine.tick(clock.advance(120))
    alert = Alert.objects.get()
    assert alert.labels["event"] == "stuck" and alert.state == "firing"
    assert "step 1 is 179 s past its 600 s timeout and no tick has paused it" in alert.summary


def test_by_default_a_canary_provider_incident_fires_while_its_step_runs(world, policy, clock):
    from routing.rollouts import analysis, controller

    default_rule("rollout needs attention")
    rollout = Rollout.objects.create(route=world.route, canary=world.canary, plan=[{"weight": 50}], guards=[],
                                     state=RolloutState.RUNNING, step_started_at=clock() - timedelta(minutes=5),
                                     baseline={"stable": 90, "canary": 10})
    engine.tick(clock())
    assert not Alert.objects.exists()
    window = analysis.StepWindow(
        [rollups.RollupDelta(count=80, ok=80 - e, errors={"server_error": e}) for e in (1, 40, 1, 0, 1)],
        [rollups.RollupDelta(count=720, ok=713, errors={"server_error": 7})] * 5)
    judgement = analysis.judge(window, [analysis.Guard(analysis.Metric.ERRORS, allowed=0.005)])
    assert judgement.incident
    controller._note_incident(rollout, judgement)
    engine.tick(clock.advance(5))
    alert = Alert.objects.get()
    assert alert.labels["event"] == "canary_incident" and alert.state == "firing"
    assert alert.summary.startswith(f"{rollout}: canary incident: canary provider incident at step 1, holding")
    # The next step is another step: the incident was the last one's.
    from routing.models import Event

    noted = Event.objects.get(data__incident=True).created_at
    Rollout.objects.filter(pk=rollout.pk).update(step=1, step_started_at=noted + timedelta(seconds=1))
    engine.tick(clock.advance(5))
    assert Alert.objects.get().state == "resolved"
