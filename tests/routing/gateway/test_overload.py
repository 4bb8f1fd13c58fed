"""A 503 with Retry-After is honoured like a 429's: the deployment is left alone for the advised time (within the
caps) and the request goes elsewhere, or waits it out when nothing else is left and the wait fits."""

import random
import time

import pytest

from routing.models import Deployment
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat

pytestmark = pytest.mark.django_db(transaction=True)


class FirstChoice(random.Random):
    """Always picks the first target by weight (deployments are ordered by name)."""

    def random(self):
        return 0.0


def test_an_overloaded_deployment_is_left_alone_for_its_retry_after(sim, serve_gateway):
    sim.simulator.configure("busy", error_rate=1.0, overload_retry_after_s=20)
    provider = make_provider(sim)
    make_route("r", provider, {"a-busy": ("busy", 50), "b-ok": ("fast", 50)})
    key = client_key()
    gateway = serve_gateway(rng=FirstChoice())
    first = post_chat(gateway, key, "r")
    assert first.status_code == 200 and first.headers["x-weathervane-deployment"] == "b-ok"
    assert first.headers["x-weathervane-attempts"] == "2"  # no retry into the deployment that asked for 20 s
    for _ in range(3):  # the next requests would pick a-busy first: it rests, so they go to b-ok at once
        later = post_chat(gateway, key, "r")
        assert later.headers["x-weathervane-deployment"] == "b-ok" and later.headers["x-weathervane-attempts"] == "1"
    assert len(sim.simulator.attempts("busy")) == 1


def test_with_no_other_target_a_short_retry_after_is_waited_out(sim, serve_gateway):
    # Overloaded for the first 1.5 s, asking for 2 s each time; then it answers.
    sim.simulator.configure("recovering", overload_retry_after_s=2,
                            schedule=[{"after_s": 0, "until_s": 1.5, "error_rate_delta": 1}])
    provider = make_provider(sim)
    make_route("r", provider, {"only": ("recovering", 100)})
    key = client_key()
    gateway = serve_gateway()
    started = time.monotonic()
    answered = post_chat(gateway, key, "r")
    assert answered.status_code == 200 and answered.headers["x-weathervane-attempts"] == "2"
    assert time.monotonic() - started >= 2.0  # waited as asked (a jittered backoff retries within 50 ms)
    seen = sim.simulator.attempts("recovering")
    assert len(seen) == 2 and seen[1].time - seen[0].time >= 2.0


def test_a_retry_after_beyond_the_longest_wait_fails_at_once_without_a_retry(sim, serve_gateway):
    sim.simulator.configure("down-a-while", error_rate=1.0, overload_retry_after_s=600)
    provider = make_provider(sim)
    make_route("r", provider, {"only": ("down-a-while", 100)})
    key = client_key()
    gateway = serve_gateway()
    refused = post_chat(gateway, key, "r")
    assert refused.status_code == 502
    assert len(sim.simulator.attempts("down-a-while")) == 1
    # The deployment rests at most the breaker's longest cooldown (4 s), not the 600 s it asked for.
    resting = gateway.gateway.proxy.resting[Deployment.objects.get(name="only").pk]
    assert resting - time.monotonic() <= 4


def test_a_fallback_is_another_target_a_503_does_not_wait_for(sim, serve_gateway):
    from routing.models import Route, RouteFallback

    sim.simulator.configure("busy", error_rate=1.0, overload_retry_after_s=2)  # short enough to be waited out
    provider = make_provider(sim)
    make_route("r", provider, {"primary": ("busy", 100), "backup": ("fast", 0)})
    RouteFallback.objects.create(route=Route.objects.get(name="r"), deployment=Deployment.objects.get(name="backup"))
    key = client_key()
    gateway = serve_gateway()
    answered = post_chat(gateway, key, "r")
    assert answered.status_code == 200 and answered.headers["x-weathervane-fallback"] == "backup"
    assert answered.headers["x-weathervane-attempts"] == "2"  # no retry into the primary that asked for 2 s
    assert len(sim.simulator.attempts("busy")) == 1
