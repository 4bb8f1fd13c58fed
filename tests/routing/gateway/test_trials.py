"""A recovered deployment gets its traffic back within seconds, whether or not clients send anything: while its
circuit is open, the gateway tests it with one-token trials of its own, never with a client's request."""

import re
import time

import httpx
import pytest

from routing.gateway.breaker import BreakerPolicy, Breakers
from routing.models import CircuitState, Deployment, DeploymentCircuit, RouteFallback
from tests.routing.gateway.helpers import client_key, make_provider, make_route, scrape, wait_until

BODY = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def opened(trials=True):
    """Return (breakers, clock, reported changes) with deployment 1's circuit just opened by 5 failures."""
    clock, changes = Clock(), []
    breakers = Breakers(BreakerPolicy(cooldown_s=1.0, max_cooldown_s=4.0),
                        on_change=lambda *change: changes.append(change[1]), clock=clock)
    breakers.trials = trials
    for _ in range(5):
        breakers.failure(1, "HTTP 503")
    return breakers, clock, changes


def test_while_the_gateway_sends_trials_no_client_request_goes_to_an_open_circuit():
    breakers, clock, changes = opened()
    assert changes == [CircuitState.OPEN]
    clock.now += 10  # long past the cooldown
    assert not breakers.available(1)
    breakers.begin(1)  # a request of panic mode: it goes, but it is no trial
    assert breakers.state(1) == CircuitState.OPEN and changes == [CircuitState.OPEN]
    assert breakers.due_trials() == [1]


def test_failed_trials_keep_the_circuit_open_quietly_cooling_down_twice_as_long_up_to_the_cap():
    breakers, clock, changes = opened()
    waits = []
    for _ in range(5):
        breakers.trial_failed(1, "HTTP 503")
        start = clock.now
        while not breakers.due_trials():
            clock.now += 0.5
        waits.append(clock.now - start)
    assert waits == [2.0, 4.0, 4.0, 4.0, 4.0]
    assert breakers.state(1) == CircuitState.OPEN and changes == [CircuitState.OPEN]  # no event per trial


def test_a_trial_that_succeeds_closes_the_circuit_and_resets_the_cooldown():
    breakers, clock, changes = opened()
    breakers.trial_failed(1, "HTTP 503")
    breakers.success(1)
    assert breakers.available(1) and changes == [CircuitState.OPEN, CircuitState.CLOSED]
    for _ in range(5):
        breakers.failure(1, "HTTP 503")
    clock.now += 1.0
    assert breakers.due_trials() == [1]  # the first cooldown again, not the doubled one


def test_an_inconclusive_trial_hands_over_to_the_next_client_request():
    breakers, clock, changes = opened()
    clock.now += 1.0
    breakers.trial_inconclusive(1, "rate_limited")
    assert breakers.state(1) == CircuitState.HALF_OPEN and changes[-1] == CircuitState.HALF_OPEN
    assert breakers.available(1)
    breakers.begin(1)
    assert not breakers.available(1)  # one trial at a time
    breakers.success(1)
    assert breakers.state(1) == CircuitState.CLOSED


def test_without_the_gateway_trials_a_cooled_down_circuit_lets_one_request_through():
    breakers, clock, changes = opened(trials=False)
    clock.now += 1.0
    assert breakers.available(1)
    breakers.begin(1)
    assert breakers.state(1) == CircuitState.HALF_OPEN and not breakers.available(1)


# --- end to end --------------------------------------------------------------------------------

def client_attempts(sim, model):
    return [a for a in sim.simulator.attempts(model) if a.max_tokens != 1]


def trial_attempts(sim, model):
    return [a for a in sim.simulator.attempts(model) if a.max_tokens == 1 and a.stream]


def trials_counted(metrics, result):
    """Return weathervane_gateway_circuit_trials_total of the primary for `result` in a /metrics text."""
    found = re.search(rf'circuit_trials_total{{deployment="primary",result="{result}"}} (\S+)', metrics)
    return float(found[1]) if found else 0.0


def primary_with_fallback(sim):
    provider = make_provider(sim)
    route = make_route("r", provider, {"primary": ("outage", 100)})
    backup = Deployment.objects.create(name="backup", provider=provider, upstream_model="fast")
    RouteFallback.objects.create(route=route, deployment=backup, position=1)
    return Deployment.objects.get(name="primary")


@pytest.mark.django_db(transaction=True)
def test_a_recovered_primary_closes_its_circuit_without_any_client_request(sim, serve_gateway, metrics_token):
    sim.simulator.configure("outage", error_rate=1.0, error_status=503)
    primary = primary_with_fallback(sim)
    key = client_key()
    gateway = serve_gateway(retries_per_target=0)
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    for _ in range(5):
        response = httpx.post(f"{gateway.base_url}/chat/completions", json=BODY, headers=auth)
        assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "backup"
    breakers = gateway.gateway.breakers
    assert breakers.state(primary.pk) == CircuitState.OPEN
    sent = len(client_attempts(sim, "outage"))

    time.sleep(3.0)  # the outage goes on, clients are quiet: only the gateway's trials reach the primary
    failed_trials = len(trial_attempts(sim, "outage"))
    assert 1 <= failed_trials <= 3  # after 1 s, then 2 s later: a token every few seconds, no more
    assert breakers.state(primary.pk) == CircuitState.OPEN

    sim.simulator.configure("outage", error_rate=0.0)
    recovered = time.monotonic()
    assert wait_until(lambda: breakers.state(primary.pk) == CircuitState.CLOSED, timeout=6.0)
    assert time.monotonic() - recovered < 5.0  # within one capped cooldown (4 s) and a trial
    assert len(client_attempts(sim, "outage")) == sent  # no client request was spent on a trial
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=BODY, headers=auth)
    assert response.headers["x-weathervane-deployment"] == "primary"
    assert "x-weathervane-fallback" not in response.headers
    assert wait_until(lambda: DeploymentCircuit.objects.filter(deployment=primary,
                                                               state=CircuitState.CLOSED).exists())
    metrics = scrape(gateway).text
    assert trials_counted(metrics, "failed") >= failed_trials and trials_counted(metrics, "closed") == 1


@pytest.mark.django_db(transaction=True)
def test_a_silent_primary_is_tried_within_its_first_token_timeout_and_stays_open(sim, serve_gateway, settings):
    settings.GATEWAY_FIRST_TOKEN_TIMEOUT_S = 0.5
    sim.simulator.configure("outage", fault="silence")
    primary = primary_with_fallback(sim)
    key = client_key()
    gateway = serve_gateway(retries_per_target=0)
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    for _ in range(5):
        response = httpx.post(f"{gateway.base_url}/chat/completions", json={**BODY, "stream": True}, headers=auth)
        assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "backup"
    assert gateway.gateway.breakers.state(primary.pk) == CircuitState.OPEN
    assert wait_until(lambda: trial_attempts(sim, "outage"), timeout=3.0)
    time.sleep(1.0)  # the trial's 0.5 s first-token timeout has passed
    breaker = gateway.gateway.breakers.by_deployment[primary.pk]
    assert breaker.state == CircuitState.OPEN
    assert breaker.cooldown >= 2.0  # the trial timed out and counted as a failure: the next one waits longer


@pytest.mark.django_db(transaction=True)
def test_a_trial_answered_by_a_429_makes_the_next_client_request_the_trial(sim, serve_gateway):
    sim.simulator.configure("outage", error_rate=1.0, error_status=503)
    primary = primary_with_fallback(sim)
    key = client_key()
    gateway = serve_gateway(retries_per_target=0)
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    for _ in range(5):
        httpx.post(f"{gateway.base_url}/chat/completions", json=BODY, headers=auth)
    sim.simulator.configure("outage", error_rate=0.0, rate_429=1.0, retry_after_s=None)
    breakers = gateway.gateway.breakers
    assert wait_until(lambda: breakers.state(primary.pk) == CircuitState.HALF_OPEN, timeout=3.0)
    sim.simulator.configure("outage", rate_429=0.0)
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=BODY, headers=auth)
    assert response.status_code == 200 and response.headers["x-weathervane-deployment"] == "primary"
    assert breakers.state(primary.pk) == CircuitState.CLOSED
