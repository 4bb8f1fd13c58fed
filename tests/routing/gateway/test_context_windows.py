"""Context windows: targets too small for a request are skipped before the call, an upstream's
context-length error fails over to a larger window (never to the same deployment) and never counts
against the deployment, and a request no window can hold is a 400 in OpenAI's shape."""

import pytest

from probes.models import Rollup
from routing.gateway.breaker import BreakerPolicy
from routing.models import Deployment, Event, EventKind, RouteFallback, WindowSource
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LONG = [{"role": "user", "content": "x" * 200}]  # about 50 tokens


@pytest.fixture
def windowed(sim, serve_gateway):
    """start(targets {name: (model, weight)}, windows {name: tokens}, fallbacks [(name, model)]) -> (gateway, key)."""

    def start(targets, windows, fallbacks=(), **options):
        provider = make_provider(sim, read_timeout=0.5)
        route = make_route("r", provider, targets)
        for position, (name, model) in enumerate(fallbacks, start=1):
            deployment = Deployment.objects.create(name=name, provider=provider, upstream_model=model)
            RouteFallback.objects.create(route=route, deployment=deployment, position=position)
        for name, window in windows.items():
            Deployment.objects.filter(name=name).update(context_window=window)
        key = client_key()
        return serve_gateway(**options), key

    sim.simulator.configure("small-model")
    sim.simulator.configure("large-model")
    sim.simulator.configure("tight", context_window=20)  # the provider counts more than the gateway estimated
    return start


def models_seen(sim):
    return [attempt.model for attempt in sim.simulator.attempts()]


def test_a_target_whose_window_cannot_hold_the_request_is_skipped_before_the_call(sim, windowed):
    gateway, key = windowed({"small": ("small-model", 50), "large": ("large-model", 50)},
                            {"small": 100, "large": 1000})

    responses = [post_chat(gateway, key, "r", max_tokens=200) for _ in range(8)]

    assert [(r.status_code, r.headers["x-weathervane-deployment"]) for r in responses] == [(200, "large")] * 8
    assert models_seen(sim) == ["large-model"] * 8
    assert all(r.headers["x-weathervane-attempts"] == "1" for r in responses)


def test_a_request_that_fits_still_uses_every_target(sim, windowed):
    gateway, key = windowed({"small": ("small-model", 50), "large": ("large-model", 50)},
                            {"small": 100, "large": 1000})

    for _ in range(20):
        assert post_chat(gateway, key, "r", max_tokens=8).status_code == 200

    assert {"small-model", "large-model"} == set(models_seen(sim))


def test_max_tokens_beyond_every_window_is_a_400_before_any_upstream_call(sim, windowed):
    gateway, key = windowed({"small": ("small-model", 50), "large": ("large-model", 50)},
                            {"small": 100, "large": 150}, fallbacks=[("spare", "large-model")])
    Deployment.objects.filter(name="spare").update(context_window=120)
    gateway.gateway.store.load()

    response = post_chat(gateway, key, "r", max_tokens=500)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("context_length_exceeded", "max_tokens",
                                                              "invalid_request_error")
    assert "500 in max_tokens" in error["message"] and "150 tokens (large)" in error["message"]
    assert sim.simulator.attempts() == []


def test_a_prompt_too_long_for_every_window_is_a_400_naming_the_messages(sim, windowed):
    gateway, key = windowed({"small": ("small-model", 100)}, {"small": 40})

    response = post_chat(gateway, key, "r", max_tokens=5, messages=LONG)

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("context_length_exceeded",
                                                                                     "messages")
    assert sim.simulator.attempts() == []


def test_a_target_with_an_unknown_window_is_tried(sim, windowed):
    gateway, key = windowed({"small": ("small-model", 100)}, {}, fallbacks=[])

    assert post_chat(gateway, key, "r", max_tokens=5000).status_code == 200
    assert models_seen(sim) == ["small-model"]


def test_an_upstream_context_error_fails_over_to_a_larger_window_and_never_to_an_equal_one(sim, windowed):
    # The deployment says 4,096 tokens, the provider refuses at 20: only a known, larger window may hold it.
    gateway, key = windowed({"primary": ("tight", 100)}, {"primary": 4096},
                            fallbacks=[("same", "small-model"), ("roomy", "large-model")])
    Deployment.objects.filter(name="same").update(context_window=4096)
    Deployment.objects.filter(name="roomy").update(context_window=8192)
    gateway.gateway.store.load()

    response = post_chat(gateway, key, "r", max_tokens=8, messages=LONG)

    assert response.status_code == 200, response.text
    assert response.headers["x-weathervane-deployment"] == "roomy"
    assert response.headers["x-weathervane-fallback"] == "roomy"
    assert models_seen(sim) == ["tight", "large-model"]  # refused once, never resent, the equal window skipped
    assert sim.simulator.attempts("tight")[0].outcome == "context_length"


def test_context_length_errors_never_count_against_the_deployment(sim, windowed):
    gateway, key = windowed({"primary": ("tight", 100)}, {}, fallbacks=[("roomy", "large-model")],
                            breaker=BreakerPolicy(consecutive=1))
    Deployment.objects.filter(name="roomy").update(context_window=8192)
    gateway.gateway.store.load()

    for _ in range(5):
        assert post_chat(gateway, key, "r", max_tokens=8, messages=LONG).status_code == 200

    # Refused once (one counted failure would open its circuit); its window, learned then, skips it after.
    assert models_seen(sim) == ["tight"] + ["large-model"] * 5
    primary = Deployment.objects.get(name="primary")
    assert gateway.gateway.breakers.state(primary.pk) == "closed"
    assert wait_until(lambda: Rollup.objects.filter(deployment__name="roomy", count=5).exists())
    assert not Rollup.objects.filter(deployment=primary).exists()


def test_an_upstream_context_error_without_a_larger_window_is_a_400_saying_so(sim, windowed):
    gateway, key = windowed({"primary": ("tight", 100)}, {}, fallbacks=[("smaller", "small-model")])
    Deployment.objects.filter(name="smaller").update(context_window=10)
    gateway.gateway.store.load()

    response = post_chat(gateway, key, "r", max_tokens=8, messages=LONG)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert "no other target has a larger context window" in error["message"]
    assert "maximum context length is 20 tokens" in error["message"]  # what the upstream said
    assert models_seen(sim) == ["tight"]


# --- windows nobody typed (issue 20, item 3) ------------------------------------------


@pytest.fixture
def untyped(sim, serve_gateway):
    """A route "primary 100, one fallback in its chain", no window typed anywhere; the primary's provider
    refuses above 40 tokens. Returns (gateway, key); serve_gateway options pass through."""

    def start(**options):
        sim.simulator.configure("narrow", context_window=40)
        sim.simulator.configure("wide")
        provider = make_provider(sim, read_timeout=0.5)
        route = make_route("r", provider, {"primary": ("narrow", 100)})
        backup = Deployment.objects.create(name="backup", provider=provider, upstream_model="wide")
        RouteFallback.objects.create(route=route, deployment=backup, position=1)
        return serve_gateway(**options), client_key()

    return start


def test_with_no_window_typed_a_prompt_too_long_for_the_primary_is_answered_by_the_fallback(sim, untyped):
    gateway, key = untyped()

    response = post_chat(gateway, key, "r", max_tokens=8, messages=LONG)

    assert response.status_code == 200, response.text
    assert response.headers["x-weathervane-fallback"] == "backup"
    assert models_seen(sim) == ["narrow", "wide"]  # the primary refused once and was never sent it again


def test_the_providers_error_teaches_the_primarys_window_so_the_next_long_prompt_skips_it(sim, untyped):
    gateway, key = untyped(flush_interval_s=60)  # nothing saved yet: the process uses what it learned at once

    post_chat(gateway, key, "r", max_tokens=8, messages=LONG)
    again = post_chat(gateway, key, "r", max_tokens=8, messages=LONG)
    short = post_chat(gateway, key, "r", max_tokens=8)

    assert again.status_code == 200 and again.headers["x-weathervane-deployment"] == "backup"
    assert again.headers["x-weathervane-attempts"] == "1"  # no wasted upstream call
    assert short.headers["x-weathervane-deployment"] == "primary"  # a prompt that fits still goes there
    assert models_seen(sim) == ["narrow", "wide", "wide", "narrow"]
    gateway.gateway.recorder.flush()
    primary = Deployment.objects.get(name="primary")
    assert primary.window() == (40, WindowSource.LEARNED)
    assert "maximum context length is 40 tokens" in primary.learned_window_error
    event = Event.objects.get(kind=EventKind.CONTEXT_WINDOW, deployment=primary)
    assert "40 tokens" in event.message


def test_a_learned_window_comes_back_from_the_database_in_every_gateway(sim, untyped, serve_gateway):
    first, key = untyped()
    post_chat(first, key, "r", max_tokens=8, messages=LONG)
    assert wait_until(lambda: Deployment.objects.get(name="primary").learned_window == 40)
    second = serve_gateway()  # a process that never saw the error

    response = post_chat(second, key, "r", max_tokens=8, messages=LONG)

    assert response.headers["x-weathervane-attempts"] == "1"
    assert models_seen(sim) == ["narrow", "wide", "wide"]


def test_a_typed_window_wins_over_the_one_the_provider_stated(sim, untyped):
    gateway, key = untyped()
    Deployment.objects.filter(name="primary").update(context_window=4096)
    gateway.gateway.store.load()

    for _ in range(2):
        assert post_chat(gateway, key, "r", max_tokens=8, messages=LONG).status_code == 200

    assert models_seen(sim) == ["narrow", "wide"] * 2  # the typed 4,096 still sends it there
    assert wait_until(lambda: Deployment.objects.get(name="primary").learned_window == 40)
    assert Deployment.objects.get(name="primary").window() == (4096, WindowSource.TYPED)
    assert Event.objects.filter(kind=EventKind.CONTEXT_WINDOW).count() == 1
