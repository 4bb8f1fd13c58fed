"""A deployment's first-token timeout: its override, else learned from measured first tokens, else the default;
shown with its source in the API and on the deployment page."""

from datetime import timedelta

import pytest
from django.utils import timezone

from probes import rollups
from probes.models import Source
from routing import first_token
from routing.models import AuditEvent, Deployment
from tests.factories import canary_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def rules(settings):
    settings.GATEWAY_FIRST_TOKEN_TIMEOUT_S = 20.0
    settings.GATEWAY_FIRST_TOKEN_MULTIPLE = 4.0
    settings.GATEWAY_FIRST_TOKEN_FLOOR_S = 5.0
    settings.GATEWAY_FIRST_TOKEN_CEILING_S = 90.0
    settings.GATEWAY_FIRST_TOKEN_MIN_SAMPLES = 20
    return settings


def measure(deployment, ttft_ms, count, source=Source.PROBE, minutes_ago=1):
    """Store `count` first tokens of `ttft_ms` for `deployment`, as a probe or the gateway would."""
    aggregator = rollups.Aggregator(source)
    when = timezone.now() - timedelta(minutes=minutes_ago)
    for _ in range(count):
        aggregator.add(deployment.pk, when=when, outcome="ok", latency_ms=ttft_ms * 2, ttft_ms=ttft_ms)
    rollups.save_deltas(aggregator.drain())


def test_until_enough_is_known_the_fixed_default_applies(rules):
    assert first_token.effective(None) == first_token.FirstTokenTimeout(20.0, "default")
    few = first_token.effective(None, (300.0, 19))
    assert (few.seconds, few.source, few.samples) == (20.0, "default", 19)
    assert few.detail == "default until enough is known"


def test_a_learned_timeout_is_a_multiple_of_the_p99_between_the_floor_and_the_ceiling(rules):
    thinking = first_token.effective(None, (4_100.0, 50))
    assert (thinking.seconds, thinking.source, thinking.detail) == (16.0, "learned", "learned from 50 requests")
    assert first_token.effective(None, (300.0, 50)).seconds == 5.0  # a fast chat model: the floor
    assert first_token.effective(None, (60_000.0, 50)).seconds == 90.0  # a minute of thinking: the ceiling


def test_an_override_wins_over_what_was_learned(rules):
    chosen = first_token.effective(2.5, (300.0, 500))
    assert (chosen.seconds, chosen.source, chosen.detail) == (2.5, "override", "override")


def test_the_learned_p99_comes_from_probes_and_traffic_of_the_last_hour_only(rules):
    world = canary_world()
    measure(world.stable, 1_000.0, 15, Source.PROBE)
    measure(world.stable, 1_000.0, 13, Source.TRAFFIC)
    measure(world.stable, 20_000.0, 2, Source.TRAFFIC)  # the slowest 2 of 30: the p99 is theirs
    measure(world.stable, 90_000.0, 40, Source.PROBE, minutes_ago=75)  # too old to count
    measure(world.stable, 90_000.0, 40, Source.SHADOW)  # mirrored requests are not the deployment's own traffic
    p99_ms, samples = first_token.learned()[world.stable.pk]
    assert samples == 30
    assert p99_ms == pytest.approx(20_000, rel=0.02)
    assert first_token.in_effect(world.stable).seconds == pytest.approx(80, rel=0.02)  # 4 x p99
    assert world.canary.pk not in first_token.learned()  # nothing measured: nothing learned


def test_the_api_shows_the_timeout_in_effect_and_its_source(rules, admin_api):
    world = canary_world()
    measure(world.stable, 2_000.0, 25)
    listed = {d["name"]: d for d in admin_api.get("/api/v1/deployments/").json()["results"]}
    assert listed["canary"]["first_token_timeout"] is None
    assert listed["canary"]["first_token_timeout_in_effect"] == {
        "seconds": 20.0, "source": "default", "detail": "default until enough is known", "samples": 0,
        "ttft_p99_ms": None}
    learned = listed["stable"]["first_token_timeout_in_effect"]
    assert (learned["source"], learned["detail"]) == ("learned", "learned from 25 requests")
    assert learned["seconds"] == pytest.approx(8.0, rel=0.02)  # 4 x p99 (the sketch is within 1 %)
    assert learned["ttft_p99_ms"] == pytest.approx(2_000, rel=0.02)


def test_an_override_set_through_the_api_is_audited_and_in_effect(rules, admin_api):
    canary_world()
    response = admin_api.patch("/api/v1/deployments/stable/", {"first_token_timeout": 45}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["first_token_timeout_in_effect"]["source"] == "override"
    assert response.json()["first_token_timeout_in_effect"]["seconds"] == 45.0
    assert Deployment.objects.get(name="stable").first_token_timeout == 45.0
    assert AuditEvent.objects.filter(object_repr__contains="stable").exists()
    cleared = admin_api.patch("/api/v1/deployments/stable/", {"first_token_timeout": None}, format="json")
    assert cleared.json()["first_token_timeout_in_effect"]["source"] == "default"


@pytest.mark.parametrize("value", [0.1, 601, "30", True])
def test_a_bad_override_is_refused_naming_the_field_and_changes_nothing(rules, admin_api, value):
    canary_world()
    response = admin_api.patch("/api/v1/deployments/stable/", {"first_token_timeout": value}, format="json")
    assert response.status_code == 400 and "first_token_timeout" in response.json()
    assert Deployment.objects.get(name="stable").first_token_timeout is None


def test_a_viewer_cannot_set_an_override(rules, viewer_api):
    canary_world()
    response = viewer_api.patch("/api/v1/deployments/stable/", {"first_token_timeout": 30}, format="json")
    assert response.status_code == 403
    assert Deployment.objects.get(name="stable").first_token_timeout is None


def test_the_deployment_page_shows_the_timeout_in_effect_and_its_source(rules, client, viewer_user):
    world = canary_world()
    measure(world.stable, 3_000.0, 21)
    client.force_login(viewer_user)
    page = client.get("/deployments/stable/").content.decode()
    assert "First-token timeout: <strong>12 s</strong>, learned from 21 requests" in page
    other = client.get("/deployments/canary/").content.decode()
    assert "First-token timeout: <strong>20 s</strong>, default until enough is known" in other
