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
# The defaults (window 30, at least 10 probes for a rate, degraded above 15 % and up again at 5 % or less,
# down after 4 hard failures, up after 4 successes), with a latency threshold the tests can reach.
T = Thresholds(latency_ms=500)
slots = itertools.count(10_000, 1000)
# One character a probe: "." answered, "x" a hard failure (5xx), "r" a 429 (soft), "s" answered slowly.
OUTCOMES = {".": (Outcome.OK, 100), "x": (Outcome.SERVER_ERROR, 30), "r": (Outcome.RATE_LIMITED, 20),
            "s": (Outcome.OK, 900)}


def feed(probes, state=HealthState.UNKNOWN, thresholds=T, verdict=None):
    """Run judge over a string of probes (see OUTCOMES); return (the states it went through, the last Verdict)."""
    failures = successes = 0
    recent = []
    if verdict is not None:
        state, failures, successes, recent = verdict.state, verdict.failures, verdict.successes, verdict.recent
    states = []
    for char in probes:
        outcome, total_ms = OUTCOMES[char]
        verdict = judge(state, failures, successes, recent, outcome, total_ms, thresholds)
        state, failures, successes, recent = verdict.state, verdict.failures, verdict.successes, verdict.recent
        states.append(state)
    return states, verdict


def changes(states):
    return [b for a, b in zip([HealthState.UNKNOWN, *states], states, strict=False) if a != b]


def test_the_reason_counts_one_success_or_failure_in_the_singular():
    first = judge(HealthState.UNKNOWN, 0, 0, [], Outcome.OK, 100, T)
    assert first.reason == "1 consecutive success"
    second = judge(first.state, first.failures, first.successes, first.recent, Outcome.OK, 100, T)
    assert second.reason == "2 consecutive successes"
    strict = Thresholds(down_after=1, up_after=1, latency_ms=500)
    verdict = judge(HealthState.UP, 0, 2, [], Outcome.TIMEOUT, None, strict, "timeout (no answer within 10 s)")
    assert verdict.reason == "1 consecutive failure, last: timeout (no answer within 10 s)"


def test_a_steady_25_percent_error_rate_reads_as_degraded_without_flapping():
    states, verdict = feed("x...r..." * 15)  # one probe in four fails, 5xx and 429 in turn: 120 probes, an hour
    # Unknown until the first answer, up while fewer than 10 probes are in, then degraded (3 of 10 failed) for good.
    assert states == ["unknown"] + ["up"] * 8 + ["degraded"] * 111
    assert changes(states) == ["up", "degraded"]
    assert verdict.reason == "errors: 7 of the last 30 probes failed"


def test_a_clean_run_recovers_only_once_the_window_is_clean():
    _, degraded = feed("x...r..." * 15)
    states, verdict = feed("." * 30, verdict=degraded)
    # The window's last 30 held 7 failures (every 4th probe); up needs at most 1 of 30 (5 %): the 23rd clean probe.
    assert states == ["degraded"] * 22 + ["up"] * 8
    assert verdict.reason == "33 consecutive successes"  # the pattern ended with 3
    _, recovering = feed("." * 22, verdict=degraded)
    assert recovering.reason == "recovering: 2 of the last 30 probes failed, up again at 1 or fewer " \
                                "with 4 consecutive successes"


def test_a_rate_between_the_exit_and_the_entry_thresholds_keeps_the_state_it_is_in():
    ten_percent = "x........." * 6
    up, _ = feed("." * 10 + ten_percent)
    assert set(up[10:]) == {"up"}
    _, degraded = feed("x...r..." * 15)
    stays, _ = feed(ten_percent, verdict=degraded)
    assert set(stays) == {"degraded"}


def test_no_error_rate_counts_before_the_minimum_sample():
    states, _ = feed("x..x..x..")  # a third failed, but only 9 probes are in
    assert "degraded" not in states and states[-1] == "up"
    states, _ = feed("x..x..x...")
    assert states[-1] == "degraded"
    few = Thresholds(latency_ms=500, min_samples=20)
    assert set(feed("x..x..x..." * 2, thresholds=few)[0][:19]) == {"unknown", "up"}


def test_a_hard_outage_goes_down_on_the_fourth_failure_and_back_up_after_four_successes():
    _, up = feed("." * 20)
    states, down = feed("xxxx", verdict=up)
    assert states == ["up", "up", "up", "down"]
    assert down.reason == "4 consecutive failures, last: server_error"
    states, back = feed("...x....", verdict=down)  # a failure restarts the run of successes
    assert states == ["down"] * 7 + ["up"]
    # The down spell stays out of the window: what follows is judged like the clean run before it.
    assert all(entry[0] for entry in back.recent) and feed("x", verdict=back)[0] == ["up"]


def test_a_429_neither_counts_towards_down_nor_breaks_the_run_and_an_answer_does():
    _, up = feed("." * 20)
    assert feed("xrxrxx", verdict=up)[0][-1] == "down"
    assert "down" not in feed("xxx.xxx.xxx.", verdict=up)[0]
    states, _ = feed("r" * 40, verdict=up)  # a provider that only answers 429: degraded, never down
    assert set(states) == {"up", "degraded"} and states[-1] == "degraded"


def test_a_very_high_rate_of_hard_failures_is_down_without_a_long_run():
    states, verdict = feed("xxx.xxx.xx")  # never 4 in a row, but 8 of the 10 probes failed (70 % or more)
    assert states == ["unknown"] * 3 + ["up"] * 6 + ["down"]
    assert verdict.reason == "8 of the last 10 probes failed, last: server_error"


def test_a_window_stored_before_the_hard_failure_flag_reads_its_failures_as_hard():
    stored = [[1, 100]] * 7 + [[0, 30]] * 3  # what the previous judge kept: [ok, ms]
    verdict = judge(HealthState.DEGRADED, 3, 0, stored, Outcome.TIMEOUT, None, T)
    assert verdict.state == HealthState.DOWN and verdict.reason == "4 consecutive failures, last: timeout"


def test_a_flaky_target_that_goes_down_comes_back_degraded_not_up():
    _, flaky = feed("x...r..." * 15)
    states, _ = feed("xxxx....", verdict=flaky)
    assert states == ["degraded"] * 3 + ["down"] * 4 + ["degraded"]  # its errors before the outage still count


def test_slow_answers_degrade_and_fast_ones_recover_after_the_run():
    assert feed("sss")[0] == ["up", "up", "degraded"]  # the median of at least 3 answers
    _, slow = feed("sssss")
    states, verdict = feed("....", verdict=slow)
    # Slow answers are successes, so the run is there: up once the median of the last 5 is fast (3 fast ones).
    assert states == ["degraded", "degraded", "up", "up"]
    states, _ = feed("sssss" + "r...", verdict=slow)  # a 429 restarts the run of successes
    assert states[-4:] == ["degraded"] * 4


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
        assert target.health == HealthState.UNKNOWN  # three failures are not an outage yet
        probe(target, 1)
    assert target.health == HealthState.DOWN and "4 consecutive failures" in target.health_reason
    assert ProbeTarget.down_deployment_ids() == {target.deployment_id}
    assert published.call_args.args[0].state == "down"
    event = Event.objects.filter(kind=EventKind.HEALTH).first()
    assert event.deployment_id == target.deployment_id and "down" in event.message

    simulator.simulator.configure("wobbly", error_rate=0.0)
    probe(target, 3)
    assert target.health == HealthState.DOWN  # three successes are not a sustained good run
    probe(target, 1)
    assert target.health == HealthState.UP and ProbeTarget.down_deployment_ids() == set()


def scripted(monkeypatch, probes):
    """Make the probes answer as the string says (see OUTCOMES), one character per probe."""
    from probes import measure

    script = iter(probes)

    def answer(request):
        outcome, total_ms = OUTCOMES[next(script)]
        return measure.Measurement(outcome=outcome, total_ms=total_ms, status_code=200 if outcome == "ok" else 500,
                                   error="" if outcome == "ok" else "HTTP 500")

    monkeypatch.setattr(measure, "probe", answer)


def test_each_state_change_is_one_event_and_one_live_message_and_nothing_else_is(
        make_target, monkeypatch, django_capture_on_commit_callbacks):
    probes = "x...r..." * 5 + "xxxx" + "...." + "." * 30  # flaky for 40 probes, an outage, then clean
    scripted(monkeypatch, probes)
    target = make_target("instant")
    with mock.patch("dashboard.live.health_changed") as published, \
            mock.patch("probes.health.config_changed") as gateway_told, \
            django_capture_on_commit_callbacks(execute=True):
        probe(target, len(probes))
    events = list(Event.objects.filter(kind=EventKind.HEALTH).order_by("id"))
    moves = [(e.data["from"], e.data["to"]) for e in events]
    assert moves == [("unknown", "up"), ("up", "degraded"), ("degraded", "down"), ("down", "degraded"),
                     ("degraded", "up")]
    assert [call.args[0].state for call in published.call_args_list] == [to for _, to in moves]
    assert gateway_told.call_count == 2  # into and out of down: the gateway's snapshot changes
    down = events[2]
    assert down.deployment_id == target.deployment_id and down.message.startswith(f"{target} is down (was degraded)")
    assert down.data["reason"] == "4 consecutive failures, last: server_error (HTTP 500)"
    assert target.health == HealthState.UP and target.health_reason == "34 consecutive successes"


def test_a_flaky_model_reads_as_steadily_degraded(make_target, simulator):
    simulator.simulator.configure("flaky", error_rate=0.15, rate_429=0.1)  # the demo's flaky-gpt
    target = make_target("flaky")
    states = []
    for _ in range(60):  # half an hour of probes at the demo's cadence
        probe(target)
        states.append(target.health)
    assert states[-1] == HealthState.DEGRADED and "down" not in states
    assert Event.objects.filter(kind=EventKind.HEALTH, deployment=target.deployment).count() <= 3


def test_a_slow_model_is_degraded(make_target):
    target = make_target("fixed-150", degraded_latency_ms=50)
    probe(target, 3)
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
    settings.PROBE_WINDOW, settings.PROBE_MIN_SAMPLES, settings.PROBE_RECOVERED_ERROR_RATE = 40, 12, 0.02
    target = make_target("instant")
    thresholds = health.Thresholds.for_target(target)
    assert (thresholds.latency_ms, thresholds.window, thresholds.min_samples) == (1234, 40, 12)
    assert thresholds.recovered_rate == 0.02 and thresholds.down_after == settings.PROBE_DOWN_AFTER
    target.degraded_latency_ms = 99
    assert health.Thresholds.for_target(target).latency_ms == 99


@pytest.mark.parametrize(("variables", "named"), [
    ({"WEATHERVANE_PROBE_RECOVERED_ERROR_RATE": "0.3"},
     "WEATHERVANE_PROBE_RECOVERED_ERROR_RATE (0.3) must not be above WEATHERVANE_PROBE_DEGRADED_ERROR_RATE (0.15)"),
    ({"WEATHERVANE_PROBE_WINDOW": "8"},
     "WEATHERVANE_PROBE_MIN_SAMPLES (10) must not be above WEATHERVANE_PROBE_WINDOW (8)"),
])
def test_thresholds_that_leave_no_gap_stop_the_start_naming_the_variable(tmp_path, variables, named):
    from tests.dashboard.test_settings import manage

    result = manage("check", data_dir=tmp_path, **variables)
    assert result.returncode != 0 and named in result.stdout + result.stderr


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
