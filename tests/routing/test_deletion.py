"""Nothing deletes history (routing.deletion): what an active rollout involves is refused with a 409
naming it; a deleted route is archived with its rollups, rollouts, events, request logs and audit
kept; a deployment, provider or key that history points at is refused, counted."""

import pytest
from django.urls import reverse

from probes.models import Rollup
from routing import deletion
from routing.models import ApiKey, AuditEvent, Deployment, Event, EventKind, GatewayKey, Provider, RequestLog, Route
from routing.outcomes import Outcome
from routing.rollouts.models import ACTIVE_STATES, Rollout, RolloutState, RolloutTransition, RolloutVerdict
from tests.factories import canary_world
from tests.routing.rollouts.helpers import GUARDS, PLAN, traffic
from tests.routing.test_api import API, everything, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return canary_world(secret="sk-test-deletion-key-0001")


def rollout(w, state):
    return Rollout.objects.create(route=w.route, canary=w.canary, plan=PLAN, guards=GUARDS, state=state)


def history():
    """Counts of every kind of history row, to prove a delete kept them all."""
    return {
        "rollouts": Rollout.objects.count(), "transitions": RolloutTransition.objects.count(),
        "verdicts": RolloutVerdict.objects.count(), "rollups": Rollup.objects.count(),
        "route_rollups": Rollup.objects.filter(route__isnull=False).count(),
        "events": Event.objects.filter(route__isnull=False).count(), "logs": RequestLog.objects.count(),
        "logs_with_route": RequestLog.objects.filter(route__isnull=False).count(),
        "audit": AuditEvent.objects.count(),
    }


def finished_rollout_with_traffic(w):
    """A promoted rollout with its transition and verdict, rollups, an event and a request log on the route."""
    done = rollout(w, RolloutState.PROMOTED)
    RolloutTransition.objects.create(rollout=done, from_state="running", to_state="promoted", actor="x", reason="ok")
    RolloutVerdict.objects.create(rollout=done, step=0, verdict="pass", sentence="no regression at step 1")
    traffic(w.route, w.stable, 30)
    traffic(w.route, w.canary, 10, errors=1)
    Event.objects.create(kind=EventKind.WEIGHTS, route=w.route, message="chat: stable 90, canary 10")
    RequestLog.objects.create(request_id="r1", route=w.route, route_name="chat", deployment=w.canary,
                              outcome=Outcome.SERVER_ERROR, status=502)
    return done


# --- an active rollout holds its route, canary, baseline and their providers -------------------------


@pytest.mark.parametrize("state", ACTIVE_STATES)
@pytest.mark.parametrize("url", ["/routes/chat", "/deployments/canary", "/deployments/stable", "/providers/sim"])
def test_what_an_active_rollout_involves_cannot_be_deleted_and_the_409_names_the_rollout(admin_api, world, url,
                                                                                         state):
    active = rollout(world, state)
    before, kept = everything(), history()

    response = admin_api.delete(f"{API}{url}")

    assert response.status_code == 409, response.content
    assert response.json()["rollout"] == active.pk and f"rollout {active.pk}" in response.json()["detail"]
    assert everything() == before and history() == kept


def test_a_draft_or_finished_rollout_does_not_hold_the_route(admin_api, world):
    rollout(world, RolloutState.DRAFT)
    rollout(world, RolloutState.ABORTED)
    assert admin_api.delete(f"{API}/routes/chat").status_code == 204


# --- a deleted route is archived: gone from lists and lookups, its history kept ---------------------------


def test_deleting_a_route_after_its_rollout_finished_keeps_all_its_history(admin_api, world):
    done = finished_rollout_with_traffic(world)
    before = history()

    assert admin_api.delete(f"{API}/routes/chat", HTTP_X_AUDIT_REASON="retired").status_code == 204

    assert history() == {**before, "audit": before["audit"] + 1}  # plus the delete's own audit row
    assert admin_api.get(f"{API}/routes/").json()["count"] == 0
    assert admin_api.get(f"{API}/routes/chat").status_code == 404
    listed = admin_api.get(f"{API}/rollouts/").json()["results"]
    assert [(r["id"], r["route"], r["state"]) for r in listed] == [(done.pk, "chat", "promoted")]
    assert admin_api.get(f"{API}/rollouts/{done.pk}/").json()["verdicts"][0]["sentence"] == "no regression at step 1"
    assert [e["route"] for e in admin_api.get(f"{API}/events/").json()["results"]] == ["chat"]
    figures = admin_api.get(f"{API}/rollups/", {"deployment": "canary", "source": "traffic"}).json()["summary"]
    assert figures["count"] == 10


def test_the_rollout_pages_of_a_deleted_route_still_show_it(browser, world):
    done = finished_rollout_with_traffic(world)
    deletion.delete(world.route, actor="test")

    listed = browser.get(reverse("rollouts"))
    detail = browser.get(reverse("rollout", args=[done.pk]))

    assert listed.status_code == 200 and "chat" in listed.content.decode()
    assert detail.status_code == 200 and "no regression at step 1" in detail.content.decode()
    assert browser.get(reverse("rollout-data", args=[done.pk])).status_code == 200


def test_a_deleted_route_frees_its_deployments_and_its_name(admin_api, world):
    finished_rollout_with_traffic(world)
    old = world.route.pk
    admin_api.delete(f"{API}/routes/chat")

    again = post(admin_api, "/routes/", {"name": "chat", "targets": [{"deployment": "stable", "weight": 100}]})

    assert again.status_code == 201, again.content
    assert Route.objects.get(name="chat").pk != old
    assert Rollup.objects.filter(route_id=old).count() == 2  # the old route's rollups still name the old route
    assert admin_api.delete(f"{API}/deployments/canary").status_code == 409  # its rollups and rollout, not a route


def test_a_live_routes_name_is_still_taken(admin_api, world):
    before = everything()
    response = post(admin_api, "/routes/", {"name": "chat", "targets": [{"deployment": "stable", "weight": 100}]})
    assert response.status_code == 400 and "already exists" in response.json()["name"][0]
    assert everything() == before


def test_the_audit_row_of_a_deleted_route_keeps_its_last_split(admin_api, world):
    admin_api.delete(f"{API}/routes/chat", HTTP_X_AUDIT_REASON="retired")
    gone = AuditEvent.objects.get(action="delete")
    assert (gone.object_repr, gone.before["weights"], gone.reason) == ("chat", {"canary": 10, "stable": 90}, "retired")


def test_a_gateway_key_limited_to_a_deleted_route_is_kept(admin_api, world):
    key = GatewayKey(name="demo traffic", all_routes=False)
    key.generate()
    key.save()
    key.routes.set([world.route])

    admin_api.delete(f"{API}/routes/chat")

    key.refresh_from_db()
    assert key.enabled and list(key.routes.all()) == []


# --- history protects deployments, keys and providers -----------------------------------------------------


def _free_of_routes(w):
    """Delete the route, so only history (not configuration) points at the deployments."""
    finished_rollout_with_traffic(w)
    deletion.delete(w.route, actor="test")


@pytest.mark.parametrize("url, holders", [
    ("/deployments/canary", "still in use by 1 rollout; 1 rollup. History outlives what it describes"),
    ("/deployments/stable", "still in use by 1 rollup. History outlives what it describes"),
    ("/providers/sim", "still in use by 2 deployments: canary, stable."),
])
def test_a_deployment_or_provider_with_history_is_refused_with_a_409_counting_it(admin_api, world, url, holders):
    _free_of_routes(world)
    before, kept = everything(), history()

    response = admin_api.delete(f"{API}{url}")

    assert response.status_code == 409 and holders in response.json()["detail"]
    assert everything() == before and history() == kept


def test_a_provider_whose_key_has_rollups_is_refused(admin_api, world):
    lonely = Provider.objects.create(name="lonely", base_url="http://127.0.0.1:9/v1")
    key = ApiKey(provider=lonely, label="k")
    key.set_secret("sk-test-lonely-key-0001")
    key.save()
    Rollup.objects.create(minute="2026-01-01T00:00Z", source="probe", deployment=world.stable, api_key=key, count=1)

    response = admin_api.delete(f"{API}/providers/lonely")

    assert response.status_code == 409 and "1 rollup." in response.json()["detail"]
    assert ApiKey.objects.filter(provider=lonely).exists()


# --- the admin refuses and archives the same way ------------------------------------------------------------


def _admin_url(model, action, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


@pytest.fixture
def browser(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize("model, name", [(Route, "chat"), (Deployment, "canary"), (Provider, "sim")])
def test_the_admin_refuses_to_delete_what_an_active_rollout_involves(browser, world, model, name):
    active = rollout(world, RolloutState.RUNNING)
    obj = model.objects.get(name=name)
    before, kept = everything(), history()

    page = browser.get(_admin_url(model, "delete", obj.pk))
    posted = browser.post(_admin_url(model, "delete", obj.pk), {"post": "yes"})

    for response in (page, posted):
        assert response.status_code == 200 and f"in use by rollout {active.pk}" in response.content.decode()
        assert "Cannot delete" in response.content.decode()
    assert everything() == before and history() == kept


def test_the_admin_bulk_delete_refuses_too(browser, world):
    rollout(world, RolloutState.PAUSED)
    response = browser.post(_admin_url(Route, "changelist"),
                            {"action": "delete_selected", "_selected_action": [world.route.pk], "post": "yes"})
    assert response.status_code == 200 and "in use by rollout" in response.content.decode()
    assert Route.objects.filter(name="chat").exists()


def test_the_admin_archives_a_route_with_history(browser, world):
    finished_rollout_with_traffic(world)
    before = history()

    page = browser.get(_admin_url(Route, "delete", world.route.pk)).content.decode()
    response = browser.post(_admin_url(Route, "delete", world.route.pk), {"post": "yes"})

    # Only what really goes is listed: the route with its split, no rollups or rollouts.
    assert "Routes: 1" in page and "chat → canary (10%)" in page and "Rollups:" not in page
    assert "Rollouts:" not in page
    assert response.status_code == 302 and not Route.objects.exists()
    assert history() == {**before, "audit": before["audit"] + 1}


def test_the_admin_says_what_history_holds_a_deployment(browser, world):
    _free_of_routes(world)
    page = browser.post(_admin_url(Deployment, "delete", world.canary.pk), {"post": "yes"}).content.decode()
    assert "1 rollout" in page and "disable it instead" in page
    assert Deployment.objects.filter(name="canary").exists()
