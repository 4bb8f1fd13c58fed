"""How long a plan's steps will likely take to decide: the verdicts' own e-values on an unchanged canary's counts."""

import math

import pytest

from probes.rollups import RollupDelta
from routing.rollouts import analysis, forecast

from .helpers import GUARDS, PLAN, past_traffic, world

pytestmark = pytest.mark.django_db
URL = "/api/v1/rollouts/preview/"
GOOD = {"route": "chat", "canary": "canary", "plan": PLAN, "guards": GUARDS}


def _recent(requests, errors):
    return RollupDelta(count=requests, ok=requests - errors, errors={"server_error": errors})


def test_the_requests_needed_are_where_an_unchanged_canarys_pass_e_value_crosses_its_threshold():
    guard = analysis.Guard(analysis.Metric.ERRORS, allowed=0.01)
    recent = _recent(100_000, 1000)
    needed = forecast.requests_needed(guard, 0.1, recent)
    level = math.log(1 / analysis.PASS_ALPHA)
    assert forecast._rate_pass(guard, 0.1, recent, needed) >= level
    assert forecast._rate_pass(guard, 0.1, recent, needed * 0.9) < level
    tighter = forecast.requests_needed(analysis.Guard(analysis.Metric.ERRORS, allowed=0.005), 0.1, recent)
    assert tighter > 2 * needed  # half the allowance: more than twice the evidence
    # At an even split each canary request has one baseline request to be compared with, not nine: it needs more
    # canary requests, though fewer seconds at the step's larger share.
    even = forecast.requests_needed(guard, 0.5, recent)
    assert needed < even < 5 * needed


def test_a_plan_that_cannot_decide_at_the_routes_traffic_is_flagged_before_it_starts():
    w = world()
    now = past_traffic(w.route, w.stable, 900, errors=9, minutes=15)  # 1 request a second over 15 minutes
    plan = [{"weight": 10, "min_dwell_s": 60, "min_requests": 0}, {"weight": 50, "min_dwell_s": 60,
                                                                    "min_requests": 0}, {"weight": 100}]
    result = forecast.forecast_plan(w.route, plan, [{"metric": "errors", "allowed": 0.005}], step_timeout_s=1800,
                                    now=now)
    assert result["route_rps"] == 1.0
    first, second = result["steps"]
    assert (first["label"], first["canary_rps"]) == ("10 %", 0.1)
    assert first["seconds"] == math.ceil(first["requests_needed"] / 0.1) + 60
    assert not first["decides_in_time"]
    assert result["warnings"][0].startswith(f"step 1 (10 %) needs about {first['requests_needed']:,} canary requests")
    assert "past its 30 min timeout" in result["warnings"][0]
    assert second["seconds"] < first["seconds"]


def test_a_young_route_is_read_over_the_minutes_it_has_existed():
    w = world()
    now = past_traffic(w.route, w.stable, 300, errors=3, minutes=5)  # 1 request a second, for 5 minutes
    assert forecast.forecast_plan(w.route, PLAN, GUARDS, now=now)["route_rps"] == 1.0  # not 300 / 900 s
    assert forecast.forecast_plan(w.route, PLAN, GUARDS, now=now)["window_s"] == 300


def test_a_route_without_recent_traffic_says_so():
    w = world()
    result = forecast.forecast_plan(w.route, PLAN, GUARDS)
    assert result["route_rps"] == 0
    assert result["warnings"][0] == ("route 'chat' had no traffic in the last 15 minutes: "
                                     "no step can decide until it has some")
    assert all(step["seconds"] is None and not step["decides_in_time"] for step in result["steps"])


def test_the_dry_run_answers_the_forecast_and_saves_nothing(admin_api):
    w = world()
    past_traffic(w.route, w.stable, 9000, errors=90)
    response = admin_api.post(URL, GOOD, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["route_rps"] == 10.0 and [s["label"] for s in body["steps"]] == ["10 %", "50 %"]
    assert body["steps"][0]["guards"][0]["metric"] == "errors"
    from routing.rollouts.models import Rollout

    assert not Rollout.objects.exists()


def test_the_dry_run_refuses_what_create_refuses_naming_the_field(admin_api):
    world()
    response = admin_api.post(URL, GOOD | {"plan": [{"weight": 0}]}, format="json")
    assert response.status_code == 400
    assert "plan" in response.json()


def test_each_step_is_forecast_at_its_own_pass_bar():
    w = world()
    past_traffic(w.route, w.stable, 900, errors=9)
    guards = [{"metric": "errors", "allowed": 0.005}]
    recent, _ = forecast._recent(w.route, forecast.timezone.now())
    guard = analysis.Guard(analysis.Metric.ERRORS, allowed=0.005)
    plan = [{"weight": 10, "min_dwell_s": 60, "min_requests": 0}, {"weight": 50, "min_dwell_s": 60,
                                                                    "min_requests": 0}, {"weight": 100}]
    first, second = forecast.forecast_plan(w.route, plan, guards)["steps"]
    # The first step passes at STEP_PASS_ALPHA (a larger share follows): e >= 4; the second promotes: the product
    # must reach 20, so it needs 20 / 4 = 5 itself (more than sqrt(20): half the bar).
    assert first["requests_needed"] == forecast.requests_needed(guard, 0.1, recent, math.log(4))
    assert second["requests_needed"] == forecast.requests_needed(guard, 0.5, recent, math.log(5))
    alone = forecast.forecast_plan(w.route, [plan[0], plan[2]], guards)["steps"][0]  # 10 % then promotion
    assert alone["requests_needed"] == forecast.requests_needed(guard, 0.1, recent) > first["requests_needed"]
