"""The rollouts pages: everyone who may see the dashboard sees the plan, verdicts and transitions;
only staff get (and may press) the gates."""

import pytest
from django.test import Client

from routing.models import AuditEvent
from routing.rollouts.models import Rollout, RolloutState
from tests.routing.rollouts.helpers import draft, world

pytestmark = pytest.mark.django_db


def browser(user):
    client = Client()
    client.force_login(user)
    return client


def test_the_list_and_the_detail_show_the_rollout_and_staff_see_its_gates(admin_user):
    rollout = draft(world())
    page = browser(admin_user).get("/rollouts/").content.decode()
    assert f'href="/rollouts/{rollout.pk}/"' in page and "canary" in page
    detail = browser(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "10% for at least 0 s and 100 canary requests" in detail
    assert f'action="/rollouts/{rollout.pk}/start/"' in detail
    assert "/approve/" not in detail  # only the gates that apply now


def test_staff_press_a_gate_from_the_page_with_a_reason(admin_user):
    rollout = draft(world())
    response = browser(admin_user).post(f"/rollouts/{rollout.pk}/start/", {"reason": "from the page"})
    assert response.status_code == 302
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.PREFLIGHT
    detail = browser(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "draft → preflight by alice: from the page" in detail


def test_a_gate_without_a_reason_or_out_of_turn_is_refused_on_the_page(admin_user):
    rollout = draft(world())
    missing = browser(admin_user).post(f"/rollouts/{rollout.pk}/start/", {"reason": " "})
    assert missing.status_code == 400 and "Say why" in missing.content.decode()
    refused = browser(admin_user).post(f"/rollouts/{rollout.pk}/approve/", {"reason": "go"})
    assert refused.status_code == 409 and "approve does not apply" in refused.content.decode()
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.DRAFT


def test_viewers_see_everything_and_can_press_nothing(viewer_user, outsider_user):
    rollout = draft(world())
    detail = browser(viewer_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "Read-only" in detail and "<form method=\"post\" action=\"/rollouts/" not in detail
    assert browser(viewer_user).post(f"/rollouts/{rollout.pk}/start/", {"reason": "sneaky"}).status_code == 403
    assert browser(outsider_user).get(f"/rollouts/{rollout.pk}/").status_code == 403
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.DRAFT
    assert not AuditEvent.objects.filter(object_type="rollout").exists()


def test_the_routes_page_links_to_the_route_s_running_rollout(admin_user):
    from routing.rollouts.controller import gate

    rollout = draft(world())
    assert "Driven by" not in browser(admin_user).get("/routes/").content.decode()
    gate(rollout.pk, "start", reason="go", actor="alice")
    page = browser(admin_user).get("/routes/").content.decode()
    assert f'<a href="/rollouts/{rollout.pk}/">rollout #{rollout.pk} of canary</a> (preflight)' in page


def test_the_admin_shows_rollouts_read_only(admin_user):
    rollout = draft(world())
    client = browser(admin_user)
    assert client.get("/admin/rollouts/rollout/").status_code == 200
    page = client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/")
    assert page.status_code == 200 and "Save" not in page.content.decode()
    assert client.post(f"/admin/rollouts/rollout/{rollout.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Rollout.objects.filter(pk=rollout.pk).exists()


def test_the_detail_data_charts_both_arms_over_the_same_minutes_with_the_guarded_error_rate(admin_user):
    from tests.routing.rollouts.helpers import traffic

    w = world()
    rollout = draft(w)
    traffic(w.route, w.canary, 20, errors=4, latency_ms=400.0)  # 4 server errors of 20
    traffic(w.route, w.canary, 5, errors=5, error_kind="client_error")  # the client's: not the canary's failures
    traffic(w.route, w.stable, 75, errors=0, latency_ms=100.0)
    charts = browser(admin_user).get(f"/dashboard-data/rollouts/{rollout.pk}/").json()["charts"]
    canary, baseline = charts["canary"], charts["baseline"]
    assert [p["t"] for p in canary] == [p["t"] for p in baseline] and len(canary) == 31
    assert charts["until_ms"] - charts["since_ms"] == 30 * 60 * 1000
    assert (canary[-1]["count"], baseline[-1]["count"]) == (25, 75)
    assert (canary[-1]["share"], baseline[-1]["share"]) == (0.25, 0.75)
    assert (canary[-1]["error_rate"], baseline[-1]["error_rate"]) == (4 / 25, 0)
    assert canary[-1]["p95_ms"] > 400 > 150 > baseline[-1]["p95_ms"]
    assert canary[0]["count"] == 0 and canary[0]["share"] is None and canary[0]["p50_ms"] is None
    page = browser(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert 'id="chart-share"' in page and "js/rollout.js" in page
