"""Bounded concurrency per provider: Provider.max_concurrency in flight per gateway process; over it a request
waits briefly for a slot, then fails over, never counted against the deployment; slots always come back."""

import asyncio
import random
import threading

import httpx
import pytest

from routing.models import Deployment, Provider
from tests.routing.gateway.helpers import (
    client_key,
    make_provider,
    make_route,
    post_chat,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)
API = "/api/v1"


class FirstChoice(random.Random):
    """Always picks the first target by weight (deployments are ordered by name)."""

    def random(self):
        return 0.0


def sample(gateway, name, provider):
    """Return the value of `name{provider="…"}` in the gateway's /metrics, or None."""
    for line in scrape(gateway).text.splitlines():
        if line.startswith(f'{name}{{provider="{provider}"}} '):
            return float(line.split()[1])
    return None


def in_background(function, *args, **kwargs):
    """Run function(*args, **kwargs) in a thread; return (thread, list that gets its result)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, result


def limited_world(sim, limit=1, spare=True):
    """A route whose first target ("a-held") is at a provider with `limit`, the other ("b-spare") at another one."""
    sim.simulator.configure("slow", latency_median_ms=1500)
    held = make_provider(sim, "limited")
    Provider.objects.filter(pk=held.pk).update(max_concurrency=limit)
    weights = {"a-held": ("slow", 50)}
    route = make_route("r", held, weights)
    if spare:
        other = make_provider(sim, "roomy", keys=("sk-test-key-0002",))
        route.targets.create(deployment=Deployment.objects.create(name="b-spare", provider=other,
                                                                  upstream_model="fast"), weight=50)
    return route


def test_over_the_limit_a_request_waits_briefly_then_fails_over_without_blaming_the_deployment(
        sim, serve_gateway, metrics_token):
    limited_world(sim)
    key = client_key()
    gateway = serve_gateway(rng=FirstChoice(), concurrency_wait_s=0.2)
    first, first_result = in_background(post_chat, gateway, key, "r")
    assert wait_until(lambda: len(sim.simulator.attempts("slow")) == 1)  # it holds the provider's only slot
    second = post_chat(gateway, key, "r")
    assert second.status_code == 200
    assert second.headers["x-weathervane-deployment"] == "b-spare"
    assert second.headers["x-weathervane-attempts"] == "1"  # waiting for a slot is not an upstream attempt
    first.join(10)
    assert first_result[0].status_code == 200 and first_result[0].headers["x-weathervane-deployment"] == "a-held"
    assert len(sim.simulator.attempts("slow")) == 1  # the provider never saw more than its limit
    breaker = gateway.gateway.breakers.by_deployment.get(Deployment.objects.get(name="a-held").pk)
    assert breaker is None or breaker.consecutive == 0  # no_capacity is not the deployment's failure
    assert sample(gateway, "weathervane_gateway_provider_concurrency_waits_total", "limited") == 1
    assert sample(gateway, "weathervane_gateway_provider_concurrency_overflows_total", "limited") == 1
    assert sample(gateway, "weathervane_gateway_provider_in_flight", "limited") == 0
    assert sample(gateway, "weathervane_gateway_provider_in_flight", "roomy") is None  # unlimited: not counted


def test_a_request_that_waits_gets_the_slot_freed_before_its_wait_ends(sim, serve_gateway, metrics_token):
    limited_world(sim, spare=False)  # the first request takes 1.5 s
    key = client_key()
    gateway = serve_gateway(concurrency_wait_s=8.0)
    first, first_result = in_background(post_chat, gateway, key, "r")
    assert wait_until(lambda: len(sim.simulator.attempts("slow")) == 1)
    second = post_chat(gateway, key, "r")
    first.join(10)
    assert [first_result[0].status_code, second.status_code] == [200, 200]
    assert sample(gateway, "weathervane_gateway_provider_concurrency_waits_total", "limited") == 1
    assert sample(gateway, "weathervane_gateway_provider_concurrency_overflows_total", "limited") is None
    assert sample(gateway, "weathervane_gateway_provider_in_flight", "limited") == 0


def test_with_every_slot_taken_and_no_other_target_the_client_gets_503_no_capacity(sim, serve_gateway):
    limited_world(sim, spare=False)
    key = client_key()
    gateway = serve_gateway(concurrency_wait_s=0.1)
    first, _ = in_background(post_chat, gateway, key, "r")
    assert wait_until(lambda: len(sim.simulator.attempts("slow")) == 1)
    refused = post_chat(gateway, key, "r")
    first.join(10)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "no_capacity" and "1 requests in flight" in error["message"]


def test_slots_come_back_after_a_deadline_and_a_client_that_goes_away(sim, serve_gateway, metrics_token):
    limited_world(sim, limit=2, spare=False)
    sim.simulator.configure("slow", latency_median_ms=3000)
    sim.simulator.configure("dribble", tokens_per_s=5, output_tokens=50)
    make_route("stream", Provider.objects.get(name="limited"), {"c-dribble": ("dribble", 100)})
    key = client_key()
    gateway = serve_gateway()
    late = post_chat(gateway, key, "r", headers={"x-weathervane-deadline": "0.3"})
    assert late.status_code == 504
    body = {"model": "stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", headers=auth, json=body) as streamed:
        assert streamed.status_code == 200
        lines = streamed.iter_lines()
        assert any("tok1 " in line for line in lines)  # the stream is under way; the client leaves soon
        assert sample(gateway, "weathervane_gateway_provider_in_flight", "limited") == 1
    assert wait_until(lambda: sample(gateway, "weathervane_gateway_provider_in_flight", "limited") == 0)


def test_max_concurrency_is_set_over_the_api_and_validated(admin_api):
    created = admin_api.post(f"{API}/providers/", {"name": "acme", "base_url": "http://127.0.0.1:9/v1",
                                                   "max_concurrency": 8}, format="json")
    assert created.status_code == 201 and created.json()["max_concurrency"] == 8
    for bad in (0, -1, "many", 1.5, True):
        refused = admin_api.patch(f"{API}/providers/acme", {"max_concurrency": bad}, format="json")
        assert refused.status_code == 400 and "max_concurrency" in refused.json(), bad
    assert Provider.objects.get(name="acme").max_concurrency == 8
    cleared = admin_api.patch(f"{API}/providers/acme", {"max_concurrency": None}, format="json")
    assert cleared.status_code == 200 and Provider.objects.get(name="acme").max_concurrency is None


# --- the slots themselves, on one event loop ---------------------------------------------------------------


class Limited:
    provider, max_concurrency = "p", 1


def test_a_waiter_cancelled_while_waiting_leaves_no_slot_taken():
    from routing.gateway.concurrency import ProviderSlots

    async def scenario():
        slots, target = ProviderSlots(wait_s=10), Limited()
        loop = asyncio.get_running_loop()
        assert await slots.take(target, loop.time() + 10)
        waiter = asyncio.ensure_future(slots.take(target, loop.time() + 10))
        await asyncio.sleep(0)
        waiter.cancel()  # e.g. the client went away while it waited
        await asyncio.gather(waiter, return_exceptions=True)
        slots.give_back(target)
        return slots.in_flight["p"], await slots.take(target, loop.time() + 10)

    assert asyncio.run(scenario()) == (0, True)


def test_a_freed_slot_goes_to_the_longest_waiting_request():
    from routing.gateway.concurrency import ProviderSlots

    async def scenario():
        slots, target = ProviderSlots(wait_s=10), Limited()
        deadline = asyncio.get_running_loop().time() + 10
        await slots.take(target, deadline)
        first = asyncio.ensure_future(slots.take(target, deadline))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(slots.take(target, deadline))
        await asyncio.sleep(0)
        slots.give_back(target)
        await asyncio.sleep(0)
        return first.done() and first.result(), second.done(), slots.in_flight["p"]

    assert asyncio.run(scenario()) == (True, False, 1)
