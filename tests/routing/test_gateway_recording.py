"""What the gateway records off the hot path: rollups, the sampled request log,
last use of gateway keys, and live traffic points."""

from decimal import Decimal

import pytest

from probes.models import Rollup
from routing.gateway import recorder
from routing.models import GatewayKey, RequestLog, RequestOutcome
from tests.routing.gateway_fixtures import client_key, make_provider, make_route, post_chat, serve_gateway, sim  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def points(monkeypatch):
    sent = []
    monkeypatch.setattr(recorder.live, "traffic_point", sent.append)
    return sent


def test_requests_are_rolled_up_per_deployment_with_tokens_cost_and_latency(sim, serve_gateway, points):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway(log_sample=0.0)
    for _ in range(3):
        assert post_chat(gateway, key, "r", max_tokens=10).status_code == 200
    assert post_chat(gateway, key, "r", stream=True, max_tokens=10).status_code == 200

    gateway.stop()  # writes what is left; no gateway thread touches the database after this
    rollup = Rollup.objects.get(source="traffic", deployment__name="d")
    assert rollup.ok == 4 and rollup.errors == {} and rollup.api_key.label == "key1"
    assert rollup.tokens_out == 40 and rollup.tokens_in > 0
    assert rollup.cost == (Decimal(rollup.tokens_in) * 1 + Decimal(rollup.tokens_out) * 2) / Decimal(1_000_000)
    assert rollup.latency["count"] == 4 and rollup.ttft["count"] == 1  # TTFT from the streamed one
    assert any(p["deployment"] == "d" and p["count"] == 4 for p in points)
    assert GatewayKey.objects.get(pk=key.pk).last_used_at is not None
    assert not RequestLog.objects.exists()  # successes sampled at 0 %


def test_every_failure_is_logged_with_what_was_tried_but_no_bodies(sim, serve_gateway, points):
    sim.simulator.configure("broken", error_rate=1.0)
    provider = make_provider(sim)
    make_route("r", provider, {"b": ("broken", 100)})
    key = client_key()
    gateway = serve_gateway(log_sample=0.0)
    assert post_chat(gateway, key, "r").status_code == 502
    assert post_chat(gateway, None, "r").status_code == 401
    gateway.stop()

    assert RequestLog.objects.count() == 2
    failed = RequestLog.objects.get(status=502)
    assert failed.outcome == RequestOutcome.SERVER_ERROR and failed.attempts == 2 and failed.route_name == "r"
    assert [t["deployment"] for t in failed.tried] == ["b", "b"] and failed.tried[0]["status"] in (500, 503)
    assert failed.request_body is None and failed.response_body == ""
    assert RequestLog.objects.get(status=401).outcome == RequestOutcome.REJECTED
    rollup = Rollup.objects.get(source="traffic", deployment__name="b")
    assert rollup.count == 2 and rollup.ok == 0 and rollup.errors == {"server_error": 2}


def test_bodies_are_logged_only_when_enabled(sim, serve_gateway, points):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway(log_sample=1.0, log_bodies=True)
    assert post_chat(gateway, key, "r", max_tokens=2).status_code == 200
    gateway.stop()
    row = RequestLog.objects.get()
    assert row.outcome == RequestOutcome.OK and row.request_body["messages"][0]["content"] == "hello there"
    assert "tok0 tok1" in row.response_body
