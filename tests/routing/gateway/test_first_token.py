"""The gateway applies each deployment's own first-token timeout: learned from its measured first tokens, it
fails a silent primary over long before the read timeout, and lets a slow thinker finish once it is known."""

import time

import pytest

from routing import first_token
from routing.models import Deployment
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, wait_until
from tests.routing.gateway.test_faults import session_going_first_to, sse_payloads, streamed_text
from tests.routing.test_first_token import measure

pytestmark = pytest.mark.django_db(transaction=True)

WEIGHTS = {"primary": 50, "healthy": 50}


@pytest.fixture
def learning(settings, monkeypatch):
    settings.GATEWAY_FIRST_TOKEN_MULTIPLE = 4.0
    settings.GATEWAY_FIRST_TOKEN_FLOOR_S = 0.2
    settings.GATEWAY_FIRST_TOKEN_CEILING_S = 30.0
    settings.GATEWAY_FIRST_TOKEN_MIN_SAMPLES = 5
    monkeypatch.setattr(first_token, "LEARN_EVERY_S", 0.2)
    return settings


def start(sim, serve_gateway, model, read_timeout=10.0):
    provider = make_provider(sim, read_timeout=read_timeout)
    make_route("r", provider, {"primary": (model, 50), "healthy": ("fast", 50)})
    key = client_key()  # before the gateway starts: its first snapshot knows the key
    return serve_gateway(deadline_s=5.0), key, session_going_first_to("primary", WEIGHTS)


def ask(gateway, key, session):
    started = time.monotonic()
    response = post_chat(gateway, key, "r", stream=True, max_tokens=8, headers={"x-session-id": session})
    assert response.status_code == 200, response.text
    assert sse_payloads(response.text)[-1] == "[DONE]"
    assert streamed_text(sse_payloads(response.text)) == "".join(f"tok{i} " for i in range(8))
    return response.headers["x-weathervane-deployment"], time.monotonic() - started


def timeout_of(gateway, name):
    deployment = Deployment.objects.get(name=name)
    return gateway.gateway.store.current.first_token[deployment.pk]


def test_a_silent_primary_fails_over_after_its_learned_timeout_not_the_read_timeout(sim, serve_gateway, learning):
    gateway, key, session = start(sim, serve_gateway, "fault-silence")
    measure(Deployment.objects.get(name="primary"), 100.0, 10)  # it used to answer in 100 ms
    assert wait_until(lambda: timeout_of(gateway, "primary").source == "learned")
    assert timeout_of(gateway, "primary").seconds == pytest.approx(0.4, abs=0.01)

    served, elapsed = ask(gateway, key, session)
    assert served == "healthy"  # with the 10 s read timeout alone, the 5 s deadline would have struck first
    assert len(sim.simulator.attempts("fault-silence")) == 1
    assert elapsed < 2.5


def test_a_deployment_known_to_think_longer_than_the_default_is_not_cut_off(sim, serve_gateway, learning):
    learning.GATEWAY_FIRST_TOKEN_TIMEOUT_S = 0.5
    sim.simulator.configure("thinker", fault="slow_first_token", fault_delay_s=1.0)
    gateway, key, session = start(sim, serve_gateway, "thinker", read_timeout=0.8)

    assert timeout_of(gateway, "primary").source == "default"
    assert ask(gateway, key, session)[0] == "healthy"  # 1 s of thinking: over the 0.5 s default

    measure(Deployment.objects.get(name="primary"), 1_000.0, 10)  # its probes measured 1 s first tokens
    assert wait_until(lambda: timeout_of(gateway, "primary").source == "learned")
    assert timeout_of(gateway, "primary").seconds == pytest.approx(4.0, rel=0.02)
    # The thinker answers itself now: neither the old default nor its provider's 0.8 s read timeout cut it off.
    assert ask(gateway, key, session)[0] == "primary"


def test_an_override_applies_at_once_whatever_was_learned(sim, serve_gateway, learning):
    sim.simulator.configure("thinker", fault="slow_first_token", fault_delay_s=1.0)
    gateway, key, session = start(sim, serve_gateway, "thinker")
    measure(Deployment.objects.get(name="primary"), 2_000.0, 10)
    assert wait_until(lambda: timeout_of(gateway, "primary").source == "learned")
    assert ask(gateway, key, session)[0] == "primary"

    Deployment.objects.filter(name="primary").update(first_token_timeout=0.5)
    gateway.gateway.store.load()
    assert timeout_of(gateway, "primary").source == "override"
    assert ask(gateway, key, session)[0] == "healthy"
