"""Provider keys: rotation, a key refused (401) on two requests is marked invalid (audited), a 403 is the
request's, a 429 cools the key."""

import json
import threading
import time
from collections import Counter

import pytest

from routing.models import ApiKey, AuditEvent, Event, EventKind, KeyState
from routing.simulator import Simulator, SimulatorServer
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, wait_until

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


def test_a_key_the_upstream_refuses_on_two_requests_is_marked_invalid_audited_and_not_used_again(
        serve_gateway, admin_api):
    with SimulatorServer(Simulator(keys={GOOD})) as strict:
        provider = make_provider(strict, keys=(BAD, GOOD))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        gateway = serve_gateway()
        first = post_chat(gateway, key, "r")
        assert first.status_code == 200 and first.headers["x-weathervane-attempts"] == "2"
        gateway.gateway.recorder.flush()
        assert ApiKey.objects.get(label="key1").state == KeyState.ACTIVE  # one 401 only makes it suspect
        for _ in range(4):
            assert post_chat(gateway, key, "r").status_code == 200
        # The second request's 401 confirms it; after that it is never sent again.
        assert [a.key for a in strict.simulator.attempts()] == ["…0001", "…0002", "…0001"] + ["…0002"] * 4
        gateway.stop()  # flushes what it recorded; no gateway thread touches the database after this

    bad = ApiKey.objects.get(label="key1")
    assert bad.state == KeyState.INVALID and "401" in bad.state_reason
    assert admin_api.get(f"/api/v1/keys/{bad.pk}/").json()["state"] == "invalid"
    audit = AuditEvent.objects.get(actor="system:gateway", object_type="apikey", object_id=str(bad.pk))
    assert audit.before["state"] == "active" and audit.after["state"] == "invalid" and "401" in audit.reason
    assert BAD not in json.dumps([audit.before, audit.after, audit.reason])
    assert Event.objects.filter(kind=EventKind.KEY_INVALID, api_key=bad).count() == 1
    assert ApiKey.objects.get(label="key2").state == KeyState.ACTIVE


def test_one_request_never_disables_more_than_one_key(serve_gateway):
    with SimulatorServer(Simulator(keys={GOOD})) as strict:
        provider = make_provider(strict, keys=("sk-bad-secret-00001", "sk-bad-secret-00002", GOOD))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        gateway = serve_gateway()
        assert post_chat(gateway, key, "r").status_code == 200  # both bad keys become suspect, neither invalid
        gateway.gateway.recorder.flush()
        assert set(ApiKey.objects.values_list("state", flat=True)) == {KeyState.ACTIVE}
        assert post_chat(gateway, key, "r").status_code == 200  # this request may confirm one of them
        gateway.stop()
    assert ApiKey.objects.filter(state=KeyState.INVALID).count() == 1


class Forbidden:
    """An upstream that answers every request 403, as providers do for moderation or model access."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b'{"error": {"message": "This request was flagged by moderation.", "type": "invalid_request_error"}}'
        await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def test_a_403_is_passed_to_the_client_and_leaves_every_key_active(serve_gateway):
    from routing.loopback import ThreadedServer

    with ThreadedServer(Forbidden()) as upstream:
        provider = make_provider(upstream, keys=("sk-key-one-00001", "sk-key-two-00002"))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        gateway = serve_gateway()
        for _ in range(3):
            response = post_chat(gateway, key, "r")
            assert response.status_code == 403 and "moderation" in response.json()["error"]["message"]
            assert response.headers["x-weathervane-attempts"] == "1"
        gateway.stop()
    assert set(ApiKey.objects.values_list("state", flat=True)) == {KeyState.ACTIVE}
    assert not Event.objects.filter(kind=EventKind.KEY_INVALID).exists()


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

    def clear_after_the_first_429():  # the retry waits >= 0.3 s, ample time to see the first attempt
        wait_until(lambda: sim.simulator.attempts("hiccup"), timeout=10, step=0.002)
        sim.simulator.configure("hiccup", rate_429=0.0)

    threading.Thread(target=clear_after_the_first_429, daemon=True).start()
    response = post_chat(gateway, key, "r")
    assert response.status_code == 200 and response.headers["x-weathervane-attempts"] == "2"
    assert time.monotonic() - started >= 0.3  # it honoured the Retry-After
    assert len(sim.simulator.attempts("hiccup")) == 2


FLAKY = "sk-flaky-secret-0003"


def suspicion_known(gateway, key_id, suspect=True):
    """Return True once the gateway's snapshot holds the key as (not) suspect, as the database says."""
    return wait_until(lambda: gateway.gateway.store.current.keys[key_id].suspect is suspect)


def test_a_first_401_is_saved_as_suspicion_that_a_401_in_another_gateway_process_confirms(serve_gateway,
                                                                                            viewer_api):
    with SimulatorServer(Simulator(keys={GOOD})) as strict:
        provider = make_provider(strict, keys=(FLAKY, GOOD))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        first, second = serve_gateway(), serve_gateway()
        assert post_chat(first, key, "r").status_code == 200
        first.gateway.recorder.flush()
        flaky = ApiKey.objects.get(label="key1")
        assert flaky.state == KeyState.ACTIVE and flaky.suspect_since is not None
        suspect = Event.objects.get(kind=EventKind.KEY_SUSPECT, api_key=flaky)
        assert "401" in suspect.message and FLAKY not in suspect.message
        shown = viewer_api.get(f"/api/v1/keys/{flaky.pk}/").json()
        assert shown["state"] == "active" and shown["suspect_since"] is not None
        assert suspicion_known(second, flaky.pk)
        assert post_chat(second, key, "r").status_code == 200  # its first try is the flaky key: refused again
        second.stop()
    flaky.refresh_from_db()
    assert flaky.state == KeyState.INVALID and flaky.suspect_since is None
    assert AuditEvent.objects.filter(object_type="apikey", object_id=str(flaky.pk)).count() == 1


def test_a_probe_that_gets_through_with_a_suspect_key_clears_the_suspicion_in_every_gateway(serve_gateway, settings):
    from probes import rechecks

    settings.ALLOW_PRIVATE_UPSTREAMS = True  # the probe calls the loopback simulator
    strict = Simulator(keys={GOOD})
    with SimulatorServer(strict) as upstream:
        provider = make_provider(upstream, keys=(FLAKY, GOOD))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        gateway = serve_gateway()
        assert post_chat(gateway, key, "r").status_code == 200
        gateway.gateway.recorder.flush()
        flaky = ApiKey.objects.get(label="key1")
        assert suspicion_known(gateway, flaky.pk)

        strict.keys = frozenset({GOOD, FLAKY})  # the 401 was a hiccup
        assert rechecks.run_due() == 1
        assert ApiKey.objects.get(pk=flaky.pk).suspect_since is None
        assert suspicion_known(gateway, flaky.pk, suspect=False)
        strict.keys = frozenset({GOOD})  # another hiccup on another request: a first 401 again, not a second
        assert post_chat(gateway, key, "r").status_code == 200
        gateway.stop()
    # request 1: flaky refused, good; the probe; request 2: flaky refused, good
    assert [a.key for a in strict.attempts("fast")] == ["…0003", "…0002", "…0003", "…0003", "…0002"]
    flaky.refresh_from_db()
    assert flaky.state == KeyState.ACTIVE and flaky.suspect_since is not None
    assert not AuditEvent.objects.filter(object_type="apikey").exists()


def test_a_request_that_gets_through_with_a_suspect_key_clears_the_suspicion(serve_gateway):
    strict = Simulator(keys={GOOD})
    with SimulatorServer(strict) as upstream:
        provider = make_provider(upstream, keys=(FLAKY, GOOD))
        make_route("r", provider, {"d": ("fast", 100)})
        key = client_key()
        gateway = serve_gateway()
        assert post_chat(gateway, key, "r").status_code == 200
        gateway.gateway.recorder.flush()
        assert suspicion_known(gateway, ApiKey.objects.get(label="key1").pk)
        strict.keys = frozenset({GOOD, FLAKY})
        assert post_chat(gateway, key, "r").status_code == 200  # the flaky key's turn: it answers
        gateway.stop()
    flaky = ApiKey.objects.get(label="key1")
    assert flaky.state == KeyState.ACTIVE and flaky.suspect_since is None
    assert "no longer suspect" in Event.objects.filter(kind=EventKind.KEY_ACTIVE, api_key=flaky).get().message
