"""Failover under load and the circuit breaker, end to end."""

import asyncio

import httpx
import pytest

from routing.models import CircuitState, Deployment, DeploymentCircuit, Event, EventKind
from tests.routing.gateway.helpers import client_key, make_provider, make_route, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def client_attempts(sim, model):
    """Return the attempts of clients' requests at `model` (the gateway's circuit trials ask for one token)."""
    return [a for a in sim.simulator.attempts(model) if a.max_tokens == BODY["max_tokens"]]


async def fire(gateway, key, total, concurrency):
    """Send `total` requests, `concurrency` at a time; return their status codes in order of completion."""
    statuses = []
    queue = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=10,
                                 headers={"Authorization": f"Bearer {key.plaintext}"}) as client:
        async def worker():
            for _ in queue:
                response = await client.post("/chat/completions", json=BODY)
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_one_dead_target_costs_no_client_errors_and_its_circuit_opens(sim, serve_gateway, admin_api):
    sim.simulator.configure("dead", error_rate=1.0)
    provider = make_provider(sim)
    make_route("r", provider, {"dead-one": ("dead", 50), "live-one": ("fast", 50)})
    key = client_key()
    gateway = serve_gateway()

    first = asyncio.run(fire(gateway, key, 100, 20))
    dead_after_first_100 = len(client_attempts(sim, "dead"))
    rest = asyncio.run(fire(gateway, key, 900, 20))

    assert first + rest == [200] * 1000  # zero client-visible errors
    assert dead_after_first_100 <= 60  # the breaker opened early (5 failures in a row)
    assert len(client_attempts(sim, "dead")) == dead_after_first_100  # the gateway's own trials test it since
    assert len(sim.simulator.attempts("fast")) == 1000

    gateway.stop()
    # Open, either since the failures in a row or since a half-open trial failed again.
    circuit = DeploymentCircuit.objects.get(deployment__name="dead-one")
    assert circuit.state == CircuitState.OPEN and "HTTP 50" in circuit.reason  # a 500 or a 503
    opened = Event.objects.filter(kind=EventKind.CIRCUIT_OPEN, deployment__name="dead-one")
    assert any("5 consecutive failures" in event.message for event in opened)
    listed = admin_api.get("/api/v1/circuits/", {"deployment": "dead-one"}).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert rows[0]["state"] == "open" and rows[0]["reason"] == circuit.reason
    assert not DeploymentCircuit.objects.filter(deployment__name="live-one").exclude(state=CircuitState.CLOSED).exists()


def test_when_every_circuit_is_open_the_gateway_still_tries_by_weight(sim, serve_gateway):
    """Panic mode: with all circuits open, refusing everyone would outlast a recovery; so it tries."""
    sim.simulator.configure("flapping", error_rate=1.0)
    provider = make_provider(sim)
    make_route("r", provider, {"only": ("flapping", 100)})
    key = client_key()
    gateway = serve_gateway(retries_per_target=0)
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    for _ in range(6):  # opens the only circuit
        assert httpx.post(f"{gateway.base_url}/chat/completions", json=BODY, headers=auth).status_code == 502
    sim.simulator.configure("flapping", error_rate=0.0)
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=BODY, headers=auth)
    assert response.status_code == 200 and response.headers["x-weathervane-deployment"] == "only"
    gateway.stop()
    assert DeploymentCircuit.objects.get(deployment__name="only").state == CircuitState.CLOSED


def test_a_circuit_one_gateway_process_opened_is_open_in_the_others(sim, serve_gateway):
    sim.simulator.configure("dead", error_rate=1.0)
    provider = make_provider(sim)
    make_route("r", provider, {"dead-one": ("dead", 50), "live-one": ("fast", 50)})
    key = client_key()
    first, second = serve_gateway(), serve_gateway()
    dead = Deployment.objects.get(name="dead-one")
    asyncio.run(fire(first, key, 40, 4))  # opens the circuit in the first one
    assert first.gateway.breakers.state(dead.pk) == CircuitState.OPEN
    assert wait_until(lambda: second.gateway.breakers.state(dead.pk) == CircuitState.OPEN)
    before = len(client_attempts(sim, "dead"))
    assert asyncio.run(fire(second, key, 40, 4)) == [200] * 40
    assert len(client_attempts(sim, "dead")) == before  # no request of the second one went to it


def test_fifty_requests_with_a_tiny_client_deadline_leave_the_circuit_closed_and_the_error_rate_untouched(
        sim, serve_gateway):
    """A client's own deadline is the client's outcome: it must not open a circuit for the whole fleet."""
    from probes.models import Rollup

    sim.simulator.configure("thoughtful", latency_median_ms=300)
    provider = make_provider(sim)
    make_route("r", provider, {"slow": ("thoughtful", 100)})
    key = client_key()
    gateway = serve_gateway(deadline_s=10.0)
    statuses, codes = [], set()
    with httpx.Client(base_url=gateway.base_url, timeout=10,
                      headers={"Authorization": f"Bearer {key.plaintext}", "x-weathervane-deadline": "0.05"}) as client:
        for _ in range(50):
            response = client.post("/chat/completions", json=BODY)
            statuses.append(response.status_code)
            codes.add(response.json()["error"]["code"])
    assert set(statuses) == {504} and codes == {"client_deadline_exceeded"}
    deployment = Deployment.objects.get(name="slow")
    assert gateway.gateway.breakers.state(deployment.pk) == CircuitState.CLOSED
    gateway.stop()
    assert not DeploymentCircuit.objects.filter(state=CircuitState.OPEN).exists()
    assert not Rollup.objects.filter(deployment=deployment).exclude(errors={}).exists()  # no timeouts held against it
