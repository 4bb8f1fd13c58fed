"""Health from probes: the state machine, events, key states, the gateway's query and the budget."""

import itertools
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from probes import health
from probes.health import Thresholds, judge
from probes.models import HealthState, ProbeBudget, ProbeTarget, ProbeUsage
from probes.runner import run_probe, schedulable_targets
from routing.models import AuditEvent, Event, EventKind, KeyState
from routing.outcomes import Outcome
from tests.probes.conftest import BAD_KEY, GOOD_KEY

pytestmark = pytest.mark.timeout(60)
T = Thresholds(down_after=3, up_after=2, latency_ms=500, error_rate=0.2)
slots = itertools.count(10_000, 1000)


def feed(outcomes, state=HealthState.UNKNOWN, latency=100):
    """Run judge over a list of True/False outcomes; return the states it went through."""
    failures = successes = 0
    recent, states = [], []
    for ok in outcomes:
        verdict = judge(state, failures, successes, recent, ok, latency, "ok" if ok else "server_error", T)
        state, failures, successes, recent = verdict.state, verdict.failures, verdict.successes, verdict.recent
        states.append(state)
    return states


def test_the_reason_counts_one_success_or_failure_in_the_singular():
    first = judge(HealthState.UNKNOWN, 0, 0, [], True, 100, "ok", T)
    assert first.reason == "1 consecutive success"
    second = judge(first.state, first.failures, first.successes, first.recent, True, 100, "ok", T)
    assert second.reason == "2 consecutive successes"
    strict = Thresholds(down_after=1, up_after=1, latency_ms=500, error_rate=0.2)
    verdict = judge(HealthState.UP, 0, 2, [], False, 100, "timeout", strict)
    assert verdict.reason == "1 consecutive failure, last: timeout"


def test_three_consecutive_failures_make_a_target_down_and_two_successes_bring_it_back():
    assert feed([True, False, False, False, True, True]) == ["up", "up", "up", "down", "down", "up"]


def test_a_rising_error_rate_degrades_before_anything_is_down():
    states = feed([True, True, False, True, False, True, False])
    assert states[-1] == "degraded" and "down" not in states


def test_slow_answers_degrade_and_fast_ones_recover():
    assert feed([True, True], latency=900) == ["up", "degraded"]
    assert feed([True] * 6, state=HealthState.DEGRADED, latency=100)[-1] == "up"


def probe(target, times=1):
    for _ in range(times):
        result = run_probe(target.pk, slot=next(slots))
    target.refresh_from_db()
    return result


def test_a_failing_deployment_goes_down_is_announced_and_recovers(make_target, simulator,
                                                                  django_capture_on_commit_callbacks):
    simulator.simulator.configure("wobbly", error_rate=1.0)
    target = make_target("wobbly")
    with mock.patch("dashboard.live.health_changed") as published, django_capture_on_commit_callbacks(execute=True):
        probe(target, 3)
    assert target.health == HealthState.DOWN and "3 consecutive failures" in target.health_reason
    assert ProbeTarget.down_deployment_ids() == {target.deployment_id}
    assert published.call_args.args[0].state == "down"
    event = Event.objects.filter(kind=EventKind.HEALTH).first()
    assert event.deployment_id == target.deployment_id and "down" in event.message

    simulator.simulator.configure("wobbly", error_rate=0.0)
    probe(target, 1)
    assert target.health == HealthState.DOWN  # one success is not enough
    probe(target, 1)
    assert target.health == HealthState.UP and ProbeTarget.down_deployment_ids() == set()


def test_a_flaky_model_is_degraded_by_its_error_rate(make_target, simulator):
    simulator.simulator.configure("half-broken", error_rate=0.5)
    target = make_target("half-broken")
    states = set()
    for _ in range(12):
        probe(target)
        states.add(target.health)
    assert HealthState.DEGRADED in states


def test_a_slow_model_is_degraded(make_target):
    target = make_target("fixed-150", degraded_latency_ms=50)
    probe(target, 2)
    assert target.health == HealthState.DEGRADED and "slow" in target.health_reason


def test_a_paused_target_never_counts_as_down(make_target, simulator):
    simulator.simulator.configure("dead", error_rate=1.0)
    target = make_target("dead")
    probe(target, 3)
    ProbeTarget.objects.filter(pk=target.pk).update(enabled=False)
    assert ProbeTarget.down_deployment_ids() == set()


def test_a_rejected_key_is_marked_invalid_and_audited_without_its_secret(make_target):
    target = make_target("instant", keys=(GOOD_KEY, BAD_KEY), per_key=BAD_KEY)
    result = probe(target)
    assert result.outcome == Outcome.BAD_KEY
    key = target.api_key
    key.refresh_from_db()
    assert key.state == KeyState.INVALID and not key.usable()
    audit = AuditEvent.objects.get(object_type="apikey", action="key_state")
    assert audit.actor == "system:probes" and audit.after["state"] == "invalid"
    rows = str(list(AuditEvent.objects.values())) + str(list(Event.objects.values()))
    assert BAD_KEY not in rows and BAD_KEY[-8:] not in rows
    assert Event.objects.filter(kind=EventKind.KEY_INVALID, api_key=key).exists()


def test_the_rotating_target_skips_an_invalid_key(make_target):
    target = make_target("instant", keys=(GOOD_KEY, BAD_KEY))
    results = [probe(target) for _ in range(4)]
    assert [r.outcome for r in results].count(Outcome.BAD_KEY) == 1  # found once, then left out
    assert results[-1].outcome == Outcome.OK and results[-1].api_key.label == "key-0"


def test_a_429ing_key_is_rate_limited_until_its_retry_after(make_target, simulator):
    simulator.simulator.configure("busy", rate_429=1.0, retry_after_s=30)
    target = make_target("busy")
    result = probe(target)
    key = result.api_key
    key.refresh_from_db()
    assert key.state == KeyState.RATE_LIMITED
    assert timedelta(seconds=25) < key.rate_limited_until - timezone.now() <= timedelta(seconds=31)
    assert Event.objects.filter(kind=EventKind.KEY_RATE_LIMITED, api_key=key).exists()
    # While its only key waits, the probe makes no call and says why.
    calls = len(simulator.simulator.attempts("busy"))
    assert probe(target).outcome == Outcome.RATE_LIMITED and len(simulator.simulator.attempts("busy")) == calls


def test_a_rate_limited_key_is_active_again_after_a_success(make_target, simulator):
    simulator.simulator.configure("brief", rate_429=1.0, retry_after_s=0)
    target = make_target("brief")
    key = probe(target).api_key
    simulator.simulator.configure("brief", rate_429=0.0)
    probe(target)
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE


def test_a_probe_never_re_enables_a_key_that_staff_disabled_while_it_ran(make_target, simulator, monkeypatch):
    from probes import measure
    from routing.models import ApiKey

    simulator.simulator.configure("brief", rate_429=1.0, retry_after_s=0)
    target = make_target("brief")
    key = probe(target).api_key
    simulator.simulator.configure("brief", rate_429=0.0)
    real_probe = measure.probe

    def staff_disables_meanwhile(request):
        measured = real_probe(request)
        ApiKey.objects.filter(pk=key.pk).update(state=KeyState.DISABLED, state_reason="disabled by alice")
        return measured

    monkeypatch.setattr(measure, "probe", staff_disables_meanwhile)
    assert probe(target).outcome == Outcome.OK
    key.refresh_from_db()
    assert (key.state, key.state_reason) == (KeyState.DISABLED, "disabled by alice")
    assert not Event.objects.filter(kind=EventKind.KEY_ACTIVE, api_key=key).exists()


def test_a_spent_daily_budget_slows_probing_down(make_target):
    target = make_target("instant", interval_s=10)
    provider = target.deployment.provider
    ProbeBudget.objects.create(provider=provider, daily_tokens=20, slowdown=6)
    assert dict((pk, i) for pk, i, _ in schedulable_targets())[target.pk] == 10
    probe(target, 3)  # 8 tokens out + a few in, each
    assert ProbeUsage.objects.get(provider=provider).tokens >= 20
    assert dict((pk, i) for pk, i, _ in schedulable_targets())[target.pk] == 60


def test_thresholds_come_from_the_target_or_the_settings(make_target, settings):
    settings.PROBE_DEGRADED_LATENCY_MS = 1234
    target = make_target("instant")
    assert health.Thresholds.for_target(target).latency_ms == 1234
    target.degraded_latency_ms = 99
    assert health.Thresholds.for_target(target).latency_ms == 99


def test_a_successful_probe_half_opens_an_open_circuit_for_every_gateway(make_target):
    from routing.models import CircuitState, DeploymentCircuit

    target = make_target("fixed-150")
    circuit = DeploymentCircuit.objects.create(deployment=target.deployment, state=CircuitState.OPEN,
                                               reason="5 failures")
    probe(target)
    circuit.refresh_from_db()
    assert circuit.state == CircuitState.HALF_OPEN and "probe succeeded" in circuit.reason
    assert Event.objects.filter(kind=EventKind.CIRCUIT_HALF_OPEN, deployment=target.deployment).exists()
    probe(target)  # a closed or half-open circuit is left alone
    assert Event.objects.filter(kind=EventKind.CIRCUIT_HALF_OPEN).count() == 1
