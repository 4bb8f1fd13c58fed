"""Provider keys: rotation, a 401 marks a key invalid (audited), a 429 cools it."""

import json
import threading
import time
from collections import Counter

import pytest

from routing.models import ApiKey, AuditEvent, Event, EventKind, KeyState
from routing.simulator import Simulator, SimulatorServer
from tests.routing.gateway_fixtures import client_key, make_provider, make_route, post_chat, serve_gateway, sim, wait_until  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

GOOD, BAD = "sk-good-secret-0002", "sk-bad-secret-00001"


def test_requests_rotate_over_the_providers_keys(sim, serve_gateway):
    provider = make_provider(sim, keys=("sk-rotate-aaaa", "sk-rotate-bbbb", "sk-rotate-cccc"))
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway()
    for _ in range(6):
        assert post_chat(gateway, key, "r").status_code == 200
    assert Counter(a.key for a in sim.simulator.attempts()) == {"…aaaa": 2, "…bbbb": 2, "…cccc": 2}


def test_a_key_the_upstream_refuses_is_marked_invalid_audited_and_not_used_again(serve_gateway, admin_api):
    with SimulatorServer(Simulator(keys={GOOD})) as strict:
        provider = make_provider(strict, keys=(BAD, GOOD))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        gateway = serve_gateway()
        first = post_chat(gateway, key, "r")
        assert first.status_code == 200 and first.headers["x-weathervane-attempts"] == "2"
        for _ in range(4):
            assert post_chat(gateway, key, "r").status_code == 200
        assert [a.key for a in strict.simulator.attempts()] == ["…0001"] + ["…0002"] * 5
        gateway.stop()  # flushes what it recorded; no gateway thread touches the database after this

    bad = ApiKey.objects.get(label="key1")
    assert bad.state == KeyState.INVALID and "401" in bad.state_reason
    assert admin_api.get(f"/api/v1/keys/{bad.pk}/").json()["state"] == "invalid"
    audit = AuditEvent.objects.get(actor="system:gateway", object_type="apikey", object_id=str(bad.pk))
    assert audit.before["state"] == "active" and audit.after["state"] == "invalid" and "401" in audit.reason
    assert BAD not in json.dumps([audit.before, audit.after, audit.reason])
    assert Event.objects.filter(kind=EventKind.KEY_INVALID, api_key=bad).count() == 1
    assert ApiKey.objects.get(label="key2").state == KeyState.ACTIVE


def test_a_429_cools_the_key_until_its_retry_after(sim, serve_gateway):
    sim.simulator.configure("busy", rate_429=1.0, retry_after_s=1.0)
    provider = make_provider(sim, keys=("sk-cooling-key-1",))
    make_route("r", provider, {"d": ("busy", 100)})
    key = client_key()
    gateway = serve_gateway(max_retry_wait_s=0.0)

    refused = post_chat(gateway, key, "r")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert len(sim.simulator.attempts("busy")) == 1
    sim.simulator.configure("busy", rate_429=0.0)
    still_cooling = post_chat(gateway, key, "r")
    assert still_cooling.status_code == 429 and 0 < int(still_cooling.headers["retry-after-ms"]) <= 1000
    assert len(sim.simulator.attempts("busy")) == 1  # the cooling key was not called

    assert wait_until(lambda: ApiKey.objects.get().state == KeyState.RATE_LIMITED)  # visible while it cools
    time.sleep(1.05)
    assert post_chat(gateway, key, "r").status_code == 200
    gateway.stop()
    assert ApiKey.objects.get().state == KeyState.ACTIVE
    assert [e.kind for e in Event.objects.order_by("id")] == [EventKind.KEY_RATE_LIMITED, EventKind.KEY_ACTIVE]


def test_a_429_waits_out_a_short_retry_after_when_no_other_key_is_left(sim, serve_gateway):
    sim.simulator.configure("hiccup", rate_429=0.0)
    provider = make_provider(sim, keys=("sk-single-key-01",))
    make_route("r", provider, {"d": ("hiccup", 100)})
    key = client_key()
    gateway = serve_gateway()
    sim.simulator.configure("hiccup", rate_429=1.0, retry_after_s=0.3)
    started = time.monotonic()
    threading.Timer(0.1, lambda: sim.simulator.configure("hiccup", rate_429=0.0)).start()
    response = post_chat(gateway, key, "r")
    assert response.status_code == 200 and response.headers["x-weathervane-attempts"] == "2"
    assert time.monotonic() - started >= 0.3  # it honoured the Retry-After
    assert len(sim.simulator.attempts("hiccup")) == 2
