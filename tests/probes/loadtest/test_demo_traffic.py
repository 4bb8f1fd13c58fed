"""Demo traffic: the routes page's live share, requests per second and latency move once it runs."""

import pytest

from dashboard.views import routes_data
from probes.loadtest.demo_traffic import KEY_NAME, DemoTraffic, demo_key
from routing.models import AuditEvent, GatewayKey
from tests.routing.gateway.helpers import make_provider, make_route, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def targets_of(route_name):
    route = next(r for r in routes_data()["routes"] if r["name"] == route_name)
    return {t["deployment"]: t for t in route["targets"]}


def test_demo_traffic_moves_the_routes_page_figures(sim, serve_gateway):
    make_route("gpt-demo", make_provider(sim), {"steady-gpt": ("fast", 90), "tail-gpt": ("fast", 10)})
    gateway = serve_gateway()
    assert targets_of("gpt-demo")["steady-gpt"]["count"] == 0
    traffic = DemoTraffic(gateway.base_url, "gpt-demo", demo_key("gpt-demo"), rps=40.0, seed=1).start()
    try:
        moved = wait_until(lambda: targets_of("gpt-demo")["steady-gpt"]["count"] >= 20, timeout=15)
    finally:
        traffic.stop()
    assert moved
    steady = targets_of("gpt-demo")["steady-gpt"]
    assert steady["rps"] > 0 and steady["p50"] is not None and steady["share"] > 0.5
    kinds = [a.stream for a in sim.simulator.attempts("fast")]
    assert kinds.count(True) >= 10 and kinds.count(False) >= 10  # mixed streaming and not


def test_the_demo_key_is_renewed_on_each_start_and_limited_to_the_demo_route(sim):
    make_route("gpt-demo", make_provider(sim), {"steady-gpt": ("fast", 100)})
    first, second = demo_key("gpt-demo"), demo_key("gpt-demo")
    assert first != second
    key = GatewayKey.objects.get(name=KEY_NAME)
    assert not key.all_routes and list(key.routes.values_list("name", flat=True)) == ["gpt-demo"]
    actions = AuditEvent.objects.filter(object_type="gatewaykey").values_list("action", flat=True)
    assert list(actions) == ["update", "create"]
