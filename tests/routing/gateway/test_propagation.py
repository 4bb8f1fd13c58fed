"""Config changes reach the gateway's snapshot within a second; in-flight
requests finish on the snapshot they started with."""

import threading
import time

import orjson
import pytest

from routing.gateway.snapshot import SnapshotStore
from routing.models import Deployment, GatewayKey, Route
from routing.weights import apply_weights
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NO_POLL = 30.0  # the version poll would hide whether the change notice works


def serving(gateway, key):
    response = post_chat(gateway, key, "r")
    assert response.status_code == 200, response.text
    return response.headers["x-weathervane-deployment"]


def seconds_until(condition, timeout=2.0):
    started = time.monotonic()
    assert wait_until(condition, timeout=timeout, step=0.01), "the change did not arrive"
    return time.monotonic() - started


def test_a_weights_change_reaches_the_gateway_within_a_second(sim, serve_gateway):
    provider = make_provider(sim)
    route = make_route("r", provider, {"blue": ("fast", 100), "green": ("fast", 0)})
    key = client_key()
    gateway = serve_gateway(poll_s=NO_POLL)
    assert {serving(gateway, key) for _ in range(5)} == {"blue"}
    apply_weights(route, {"blue": 0, "green": 100}, reason="cut over", actor="test")
    assert seconds_until(lambda: serving(gateway, key) == "green") < 1.0
    assert {serving(gateway, key) for _ in range(5)} == {"green"}


def test_a_new_gateway_key_works_and_a_disabled_one_stops_within_a_second(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("r", provider, {"blue": ("fast", 100)})
    gateway = serve_gateway(poll_s=NO_POLL)
    key = client_key("late")
    assert seconds_until(lambda: post_chat(gateway, key, "r").status_code == 200) < 1.0
    stored = GatewayKey.objects.get(pk=key.pk)
    stored.enabled = False
    stored.save()
    assert seconds_until(lambda: post_chat(gateway, key, "r").status_code == 401) < 1.0


def test_the_version_poll_catches_changes_made_without_a_notice(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("r", provider, {"blue": ("fast", 100), "green": ("fast", 0)})
    key = client_key()
    gateway = serve_gateway(poll_s=0.3, local_notices=False)
    Route.objects.get(name="r").targets.filter(deployment__name="blue").update(weight=0)  # no signal fires
    Route.objects.get(name="r").targets.filter(deployment__name="green").update(weight=100)
    assert seconds_until(lambda: serving(gateway, key) == "green") < 1.0


def test_an_in_flight_stream_finishes_on_the_snapshot_it_started_with(sim, serve_gateway):
    sim.simulator.configure("slow", tokens_per_s=40.0)  # 20 tokens: half a second
    provider = make_provider(sim)
    route = make_route("r", provider, {"old": ("slow", 100), "new": ("fast", 0)})
    key = client_key()
    gateway = serve_gateway(poll_s=NO_POLL)
    result = {}

    def stream():
        result["response"] = post_chat(gateway, key, "r", stream=True, max_tokens=20)

    worker = threading.Thread(target=stream)
    worker.start()
    assert wait_until(lambda: sim.simulator.held)  # the stream is under way
    apply_weights(route, {"old": 0, "new": 100}, reason="switch mid-stream", actor="test")
    assert seconds_until(lambda: serving(gateway, key) == "new") < 1.0
    worker.join(5)
    response = result["response"]
    assert response.headers["x-weathervane-deployment"] == "old"
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    text = "".join(orjson.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads[:-1])
    assert text == "".join(f"tok{i} " for i in range(20))


def test_deployments_the_probes_see_down_get_no_traffic_unless_all_are_down(sim, serve_gateway):
    from probes.models import HealthState, ProbeTarget

    provider = make_provider(sim)
    make_route("r", provider, {"blue": ("fast", 50), "green": ("fast", 50)})
    key = client_key()
    probes = {name: ProbeTarget.objects.get_or_create(deployment=Deployment.objects.get(name=name))[0]
              for name in ("blue", "green")}
    ProbeTarget.objects.filter(pk=probes["blue"].pk).update(health=HealthState.DOWN)
    gateway = serve_gateway(poll_s=0.2)
    assert {serving(gateway, key) for _ in range(20)} == {"green"}
    ProbeTarget.objects.filter(pk=probes["green"].pk).update(health=HealthState.DOWN)  # now every target is down
    # Seen by a poll of the database (a few of them on a busy machine), not by a restart.
    assert seconds_until(lambda: {serving(gateway, key) for _ in range(20)} == {"blue", "green"}, timeout=5.0)


@pytest.mark.redis
def test_a_change_reaches_two_gateway_processes_through_redis(sim, serve_gateway, require_redis, metrics_token):
    provider = make_provider(sim)
    route = make_route("r", provider, {"blue": ("fast", 100), "green": ("fast", 0)})
    key = client_key()
    # Only the Redis notice can tell them: no in-process notice, no poll to speak of.
    gateways = [serve_gateway(redis_url=require_redis, local_notices=False, poll_s=NO_POLL) for _ in range(2)]
    assert all(serving(g, key) == "blue" for g in gateways)
    from django.test import override_settings

    with override_settings(REDIS_URL=require_redis):
        apply_weights(route, {"blue": 0, "green": 100}, reason="cut over", actor="test")
    for gateway in gateways:
        assert seconds_until(lambda gateway=gateway: serving(gateway, key) == "green") < 1.0
    assert scrape(gateways[0]).status_code == 200


def test_a_long_running_refresher_keeps_no_growing_query_log_in_debug_mode(sim, settings):
    # DEBUG keeps every query a thread runs until a request starts; the refresher thread never sees one.
    from django.db import connection

    make_route("r", make_provider(sim), {"d": ("fast", 100)})
    settings.DEBUG = True
    store = SnapshotStore(poll_s=NO_POLL, redis_url="", local_notices=False)
    store.load()
    logged = []
    for _ in range(20):
        store._refresh(notified=False)  # one poll of the refresher thread
        logged.append(len(connection.queries_log))
    assert store.current.version == 1 and "r" in store.current.routes  # nothing changed, nothing rebuilt
    assert 0 < logged[-1] <= logged[0]
