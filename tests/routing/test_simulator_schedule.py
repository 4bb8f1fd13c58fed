"""Rehearsal: a simulated model changes its behaviour on a schedule, timed by an injected clock."""

import httpx
import pytest

from routing.management.commands.simulate import read_config
from routing.simulator import Change, Personality, Simulator, SimulatorServer, personality_from

HELLO = [{"role": "user", "content": "hi"}]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_change_applies_from_its_start_and_multiplies_latency():
    base = Personality(latency_median_ms=400, latency_p99_ms=1200, error_rate=0.01,
                       schedule=[Change(after_s=180, latency_scale=1.5, error_rate_delta=0.02)])
    assert base.at(179.9) == base
    later = base.at(180)
    assert (later.latency_median_ms, later.latency_p99_ms) == (600, 1800)
    assert later.error_rate == pytest.approx(0.03)
    assert later.schedule == ()


def test_an_outage_window_recovers_and_rates_stay_within_bounds():
    flaky = personality_from({"base": "flaky", "schedule": [{"after_s": 60, "until_s": 120, "error_rate_delta": 1}]})
    assert flaky.at(59).error_rate == 0.15
    assert flaky.at(60).error_rate == pytest.approx(0.9)  # everything not already a 429
    assert flaky.at(120).error_rate == 0.15


@pytest.mark.parametrize(("change", "message"), [
    ({"after_s": -1}, "after_s"), ({"after_s": 10, "until_s": 5}, "until_s"),
    ({"after_s": 0, "latency_scale": 0}, "latency_scale"), ({"after_s": 0, "error_rate_delta": 2}, "error_rate_delta"),
    ({"after_s": 0, "colour": "red"}, "colour"), ({"latency_scale": 2}, "after_s"),
])
def test_a_schedule_that_makes_no_sense_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        personality_from({"schedule": [change]})


@pytest.fixture
def clocked():
    clock = FakeClock()
    canary = {"schedule": [{"after_s": 60, "until_s": 120, "error_rate_delta": 1},
                           {"after_s": 180, "latency_scale": 1.5}], "latency_median_ms": 200}
    with SimulatorServer(Simulator(models={"canary": canary}, seed=1, clock=clock)) as server:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer sk-x"}, timeout=5) as client:
            yield clock, server, client


def _status(client):
    return client.post("/chat/completions", json={"model": "canary", "messages": HELLO}).status_code


def test_a_served_model_fails_for_its_window_then_recovers(clocked):
    clock, _, client = clocked
    assert _status(client) == 200
    clock.now = 60
    assert {_status(client), _status(client)} == {500, 503}
    clock.now = 120
    assert _status(client) == 200


def test_a_served_model_slows_down_on_schedule(clocked):
    clock, _, client = clocked
    clock.now = 180
    response = client.post("/chat/completions", json={"model": "canary", "messages": HELLO})
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.3


def test_putting_a_model_over_http_restarts_its_schedule(clocked):
    clock, server, client = clocked
    clock.now = 1000
    body = {"base": "fast", "schedule": [{"after_s": 30, "error_rate_delta": 1}]}
    put = httpx.put(f"{server.base_url.removesuffix('/v1')}/_sim/models/canary", json=body, timeout=5)
    assert put.status_code == 200
    assert put.json()["schedule"] == [{"after_s": 30, "until_s": None, "latency_scale": 1.0,
                                       "error_rate_delta": 1, "rate_429_delta": 0.0}]
    assert _status(client) == 200
    clock.now = 1030
    assert _status(client) in (500, 503)


def test_a_bad_schedule_over_http_is_refused_and_changes_nothing(clocked):
    _, server, client = clocked
    bad = {"schedule": [{"after_s": 5, "until_s": 1}]}
    put = httpx.put(f"{server.base_url.removesuffix('/v1')}/_sim/models/canary", json=bad, timeout=5)
    assert put.status_code == 400
    assert "until_s" in put.json()["error"]["message"]
    assert _status(client) == 200


def test_manage_py_simulate_reads_a_schedule_from_its_config(tmp_path):
    config = tmp_path / "sim.json"
    config.write_text('{"tail-gpt": {"base": "heavy-tailed", "schedule": [{"after_s": 180, "latency_scale": 1.5}]}}')
    personality = read_config(str(config))["tail-gpt"]
    assert personality.at(180).latency_median_ms == 90
