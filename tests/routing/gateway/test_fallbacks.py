"""Fallback chains: tried in order only after every weighted target failed or has an open circuit,
judged from the simulator's attempt log (what each upstream saw) and from what the client received."""

import orjson
import pytest

from routing.gateway.breaker import BreakerPolicy
from routing.models import Deployment, RequestLog, RouteFallback
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = 8
FULL_TEXT = "".join(f"tok{i} " for i in range(TOKENS))


def add_fallbacks(route, provider, models):
    """Append {deployment name: upstream model} to the fallback chain of `route`, in order."""
    for position, (name, model) in enumerate(models.items(), start=1):
        deployment, _ = Deployment.objects.get_or_create(name=name, defaults={"provider": provider,
                                                                              "upstream_model": model})
        RouteFallback.objects.create(route=route, deployment=deployment, position=position)


@pytest.fixture
def chained(sim, serve_gateway):
    """start(targets, fallbacks, **gateway options) -> (gateway, key); targets {name: (model, weight)}."""

    def start(targets, fallbacks, **options):
        provider = make_provider(sim, read_timeout=0.5)
        route = make_route("r", provider, targets)
        add_fallbacks(route, provider, fallbacks)
        key = client_key()
        return serve_gateway(**options), key

    sim.simulator.configure("down", error_rate=1.0)
    sim.simulator.configure("down-too", error_rate=1.0)
    sim.simulator.configure("spare")
    return start


def models_seen(sim):
    return [attempt.model for attempt in sim.simulator.attempts()]


def test_a_100_0_route_with_a_failing_primary_answers_from_its_fallback(sim, chained):
    gateway, key = chained({"primary": ("down", 100), "backup": ("spare", 0)}, {"backup": "spare"})

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == FULL_TEXT
    assert response.headers["x-weathervane-deployment"] == "backup"
    assert response.headers["x-weathervane-fallback"] == "backup"
    assert response.headers["x-weathervane-attempts"] == "3"
    assert models_seen(sim) == ["down", "down", "spare"]  # the primary retried once, then the fallback


def test_a_silent_primary_fails_over_to_the_fallback_at_its_first_timeout(sim, chained):
    gateway, key = chained({"primary": ("fault-silence", 100)}, {"backup": "spare"})

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "backup"
    assert models_seen(sim) == ["fault-silence", "spare"]  # a silent target is not waited on twice


def test_fallbacks_are_tried_in_their_order(sim, chained):
    gateway, key = chained({"primary": ("down", 100)}, {"first": "down-too", "second": "spare"})

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "second"
    assert models_seen(sim) == ["down", "down", "down-too", "down-too", "spare"]


def test_the_chain_respects_the_attempt_cap(sim, chained):
    gateway, key = chained({"primary": ("down", 100)}, {"first": "down-too", "second": "spare"}, max_attempts=3)

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 502 and "x-weathervane-fallback" not in response.headers
    assert models_seen(sim) == ["down", "down", "down-too"]  # the second fallback was never reached


def test_healthy_weighted_targets_leave_the_fallback_idle(sim, chained):
    gateway, key = chained({"primary": ("fast", 60), "secondary": ("fast", 40)}, {"backup": "spare"})

    responses = [post_chat(gateway, key, "r", max_tokens=TOKENS) for _ in range(10)]

    assert [(r.status_code, r.headers.get("x-weathervane-fallback")) for r in responses] == [(200, None)] * 10, [
        r.text for r in responses]
    assert "spare" not in models_seen(sim)


def test_a_weight_0_target_outside_the_chain_never_gets_traffic_even_when_all_else_failed(sim, chained):
    gateway, key = chained({"primary": ("down", 100), "drained": ("spare", 0)}, {})

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 502
    assert models_seen(sim) == ["down", "down"]


def test_an_open_circuit_sends_requests_straight_to_the_fallback(sim, chained):
    gateway, key = chained({"primary": ("down", 100)}, {"backup": "spare"},
                           breaker=BreakerPolicy(consecutive=2, cooldown_s=60.0, max_cooldown_s=60.0))

    first = post_chat(gateway, key, "r", max_tokens=TOKENS)  # two failures open the primary's circuit
    second = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert first.headers["x-weathervane-fallback"] == second.headers["x-weathervane-fallback"] == "backup"
    assert second.headers["x-weathervane-attempts"] == "1"
    assert models_seen(sim) == ["down", "down", "spare", "spare"]


def test_a_stream_from_a_fallback_is_whole_and_says_so(sim, chained):
    gateway, key = chained({"primary": ("down", 100)}, {"backup": "spare"})

    response = post_chat(gateway, key, "r", stream=True, max_tokens=TOKENS)

    assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "backup"
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == FULL_TEXT


def test_answers_from_fallbacks_are_counted_in_the_metrics(sim, chained, metrics_token):
    gateway, key = chained({"primary": ("down", 100)}, {"backup": "spare"})

    for _ in range(2):
        assert post_chat(gateway, key, "r", max_tokens=TOKENS).status_code == 200

    line = 'weathervane_gateway_fallback_answers_total{deployment="backup",route="r"} 2.0'
    assert wait_until(lambda: line in scrape(gateway).text)


def test_the_request_log_says_which_fallback_served(sim, chained):
    gateway, key = chained({"primary": ("down", 100)}, {"backup": "spare"}, log_sample=1.0)

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 200
    row = wait_until(lambda: RequestLog.objects.filter(request_id=response.headers["x-request-id"]).first())
    assert row is not None and row.fallback == "backup" and row.deployment.name == "backup"
    assert [(t["deployment"], t["fallback"]) for t in row.tried] == [("primary", None), ("primary", None),
                                                                      ("backup", 1)]


def test_a_direct_answer_carries_no_fallback_header(sim, chained):
    gateway, key = chained({"primary": ("spare", 100)}, {"backup": "fast"})

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 200, response.text
    assert response.headers["x-weathervane-deployment"] == "primary"
    assert "x-weathervane-fallback" not in response.headers


def test_a_disabled_fallback_is_passed_over_for_the_next_one(sim, chained):
    sim.simulator.configure("switched-off")
    gateway, key = chained({"primary": ("down", 100)}, {"off": "switched-off", "backup": "spare"})
    Deployment.objects.filter(name="off").update(enabled=False)
    gateway.gateway.store.load()

    response = post_chat(gateway, key, "r", max_tokens=TOKENS)

    assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "backup"
    assert models_seen(sim) == ["down", "down", "spare"]
