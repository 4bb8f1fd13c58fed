"""A running rollout owns its route's split: manual changes are refused with a 409 naming it, until it is paused."""

import pytest
from django.test import Client
from django.urls import reverse

from routing import weights
from routing.models import Route
from routing.outcomes import Outcome
from routing.rollouts.controller import gate, tick
from tests.routing.test_admin import admin_form_data

from .helpers import draft, probe_results, world

pytestmark = pytest.mark.django_db


@pytest.fixture
def running():
    w = world()
    rollout = draft(w)
    gate(rollout.pk, "start", reason="ship it", actor="admin")
    probe_results(w.canary, [Outcome.OK] * 3)
    tick(rollout.pk)
    rollout.refresh_from_db()
    return w, rollout


def test_a_manual_change_is_refused_naming_the_rollout(running):
    w, rollout = running
    with pytest.raises(weights.RouteLocked, match=f"driven by rollout {rollout.pk} of 'canary'"):
        weights.apply_weights(w.route, {"stable": 50, "canary": 50}, reason="by hand", actor="alice")
    assert w.route.weights() == {"canary": 10, "stable": 90}


def test_the_api_answers_409_with_the_rollout_and_changes_nothing(running, admin_api):
    w, rollout = running
    response = admin_api.put("/api/v1/routes/chat/weights", {"weights": {"stable": 50, "canary": 50},
                                                             "reason": "by hand"}, format="json")
    assert response.status_code == 409
    assert response.json()["rollout"] == rollout.pk
    assert f"rollout {rollout.pk}" in response.json()["detail"]
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}


def test_the_admin_refuses_it_too(running, admin_user):
    w, rollout = running
    browser = Client()
    browser.force_login(admin_user)
    page = reverse("admin:routing_route_change", args=[w.route.pk])
    data = admin_form_data(browser.get(page))
    for i in range(int(data["targets-TOTAL_FORMS"])):
        data[f"targets-{i}-weight"] = "50"
    response = browser.post(page, data)
    assert response.status_code == 200 and f"rollout {rollout.pk}" in response.content.decode()
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}


def test_a_paused_rollout_lets_a_human_change_the_split(running):
    w, rollout = running
    gate(rollout.pk, "pause", reason="taking over", actor="admin")
    weights.apply_weights(w.route, {"stable": 50, "canary": 50}, reason="by hand", actor="alice")
    assert w.route.weights() == {"canary": 50, "stable": 50}


def test_the_fallback_chain_may_change_while_a_rollout_drives_the_split(running, admin_api):
    w, rollout = running
    from routing.models import Deployment

    Deployment.objects.create(name="spare", provider=w.canary.provider, upstream_model="fast")
    split = Route.objects.get().weights()

    response = admin_api.put("/api/v1/routes/chat/fallbacks", {"fallbacks": ["spare"], "reason": "a spare"},
                             format="json")

    assert response.status_code == 200, response.json()
    assert Route.objects.get().fallback_chain() == ["spare"] and Route.objects.get().weights() == split
    refused = admin_api.put("/api/v1/routes/chat/weights", {"weights": {"stable": 50, "canary": 50},
                                                            "fallbacks": [], "reason": "by hand"}, format="json")
    assert refused.status_code == 409 and Route.objects.get().fallback_chain() == ["spare"]

