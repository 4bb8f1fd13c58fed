"""Cost before you commit: a proposed split's spend per day, p95 and error rate at the current volume,
against a hand-computed example; and the weights API's dry run, which changes nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from probes import sketch
from probes.models import Rollup, Source
from routing.models import AuditEvent, Deployment, Provider, Route, RouteTarget
from routing.projection import route_projection

pytestmark = pytest.mark.django_db


def latencies(value, count):
    one = sketch.new()
    for _ in range(count):
        one.add(value)
    return sketch.to_json(one)


def traffic(deployment, count, ok, ms, cost, source=Source.TRAFFIC, ago=timedelta(minutes=10)):
    """A rollup row whose failures (count - ok) are the deployment's own (server errors)."""
    route = Route.objects.get(name="chat") if source == Source.TRAFFIC else None
    Rollup.objects.create(minute=(timezone.now() - ago).replace(second=0, microsecond=0), source=source,
                          deployment=deployment, route=route, count=count, ok=ok, latency=latencies(ms, count),
                          errors={"server_error": count - ok} if count > ok else {}, cost=Decimal(cost),
                          tokens_in=100 * count, tokens_out=50 * count)


@pytest.fixture
def route():
    """cheap: 900 requests, 1% errors, 100 ms, $0.001 each; dear: 100, 10%, 1000 ms, $0.004 each;
    canary: no traffic yet ($2 / $4 per 1M tokens), probes say 200 ms and no errors."""
    provider = Provider.objects.create(name="p", base_url="http://127.0.0.1:9/v1")
    cheap = Deployment.objects.create(name="cheap", provider=provider, upstream_model="m")
    dear = Deployment.objects.create(name="dear", provider=provider, upstream_model="m")
    canary = Deployment.objects.create(name="canary", provider=provider, upstream_model="m",
                                       input_price_per_mtok=Decimal(2), output_price_per_mtok=Decimal(4))
    route = Route.objects.create(name="chat")
    for deployment, weight in ((cheap, 90), (dear, 10), (canary, 0)):
        RouteTarget.objects.create(route=route, deployment=deployment, weight=weight)
    traffic(cheap, 900, 891, 100, "0.9")
    traffic(dear, 100, 90, 1000, "0.4")
    traffic(canary, 10, 10, 200, "0", source=Source.PROBE)
    traffic(cheap, 50, 50, 100, "5", ago=timedelta(hours=30))  # older than a day: not today's volume
    return route


def test_todays_split_is_projected_from_its_targets_and_matches_what_was_measured(route):
    p = route_projection(route, {"cheap": 90, "dear": 10, "canary": 0})
    assert p["requests_per_day"] == 1000
    # 1000 × (0.9 × $0.001 + 0.1 × $0.004) = $1.30; 0.9 × 1% + 0.1 × 10% = 1.9%; 10% at 1 s: p95 is 1 s
    assert p["current"]["spend_per_day"] == Decimal("1.3")
    assert p["current"]["error_rate"] == pytest.approx(0.019)
    assert p["current"]["p95_ms"] == pytest.approx(1000, rel=0.02)
    assert p["measured"]["spend_per_day"] == Decimal("1.3")
    assert p["measured"]["error_rate"] == pytest.approx(0.019)


def test_less_of_the_slow_dear_target_is_cheaper_and_faster(route):
    proposed = route_projection(route, {"cheap": 96, "dear": 4, "canary": 0})["proposed"]
    # 1000 × (0.96 × $0.001 + 0.04 × $0.004) = $1.12; 0.96 × 1% + 0.04 × 10% = 1.36%; 96% at 100 ms: p95 is 100 ms
    assert proposed["spend_per_day"] == Decimal("1.12")
    assert proposed["error_rate"] == pytest.approx(0.0136)
    assert proposed["p95_ms"] == pytest.approx(100, rel=0.02)
    assert proposed["complete"] is True


def test_a_canary_without_traffic_is_priced_at_the_routes_tokens_and_timed_by_its_probes(route):
    p = route_projection(route, {"cheap": 90, "dear": 0, "canary": 10})
    canary = next(t for t in p["targets"] if t["deployment"] == "canary")
    # 100 tokens in × $2/M + 50 out × $4/M = $0.0004 a request
    assert (canary["cost_basis"], canary["cost_per_request"]) == ("prices", Decimal("0.0004"))
    assert canary["basis"] == "probe"
    # 1000 × (0.9 × $0.001 + 0.1 × $0.0004) = $0.94; 0.9 × 1% + 0.1 × 0% = 0.9%; the slowest 10% at 200 ms
    assert p["proposed"]["spend_per_day"] == Decimal("0.94")
    assert p["proposed"]["error_rate"] == pytest.approx(0.009)
    assert p["proposed"]["p95_ms"] == pytest.approx(200, rel=0.02)


URL = "/api/v1/routes/chat/weights/"


def test_a_dry_run_answers_the_projection_and_changes_nothing(admin_api, route):
    response = admin_api.patch(URL, {"weights": {"cheap": 50, "dear": 50, "canary": 0}, "dry_run": True}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True
    assert Decimal(str(body["projection"]["proposed"]["spend_per_day"])) == Decimal("2.5")
    assert Decimal(str(body["projection"]["current"]["spend_per_day"])) == Decimal("1.3")
    route.refresh_from_db()
    assert route.version == 1 and route.weights() == {"canary": 0, "cheap": 90, "dear": 10}
    assert not AuditEvent.objects.filter(action="weights").exists()


def test_a_dry_run_of_a_bad_split_is_refused_like_a_real_one(admin_api, route):
    response = admin_api.patch(URL, {"weights": {"cheap": 50, "dear": 40, "canary": 0}, "dry_run": True}, format="json")
    assert response.status_code == 400
    assert "weights" in response.json()


def test_viewers_cannot_dry_run_either(viewer_api, route):
    body = {"weights": {"cheap": 50, "dear": 50, "canary": 0}, "dry_run": True}
    response = viewer_api.patch(URL, body, format="json")
    assert response.status_code == 403
