"""Fallback chains over the REST API: one call for "one primary, one fallback", validated like the
weights (a clear 400 naming the field, nothing changed), audited with the weights, If-Match/409."""

import pytest

from routing.models import AuditEvent, Deployment, Event, Route, RouteFallback
from tests.factories import canary_world
from tests.routing.test_api import API, everything, post, put

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    """Route "chat" split stable 90 / canary 10, and a deployment "backup" that is not a target."""
    world = canary_world(secret="sk-existing-secret-0001", key_label="main")
    world.backup = Deployment.objects.create(name="backup", provider=world.provider, upstream_model="fast")
    return world


def chain(route_name="chat"):
    return Route.objects.get(name=route_name).fallback_chain()


def state():
    return {**everything(), "fallbacks": list(RouteFallback.objects.values_list("route__name", "deployment__name",
                                                                               "position"))}


def test_one_primary_one_fallback_is_one_weights_call(admin_api, world):
    body = {"weights": {"stable": 100, "canary": 0}, "fallbacks": ["canary"], "reason": "canary only on failure"}

    response = put(admin_api, "/routes/chat/weights", body, HTTP_IF_MATCH=f'"{world.route.version}"')

    assert response.status_code == 200, response.json()
    assert response.json()["fallbacks"] == ["canary"]
    assert response.headers["ETag"] == f'"{world.route.version + 1}"'
    change = AuditEvent.objects.get(action="weights")
    assert change.before == {"version": 1, "weights": {"canary": 10, "stable": 90}, "fallbacks": []}
    assert change.after == {"version": 2, "weights": {"canary": 0, "stable": 100}, "fallbacks": ["canary"]}
    assert (change.actor, change.reason) == ("alice", "canary only on failure")
    assert "fallbacks none ⇒ canary" in Event.objects.get(kind="weights").message


def test_a_route_is_created_with_its_fallbacks_in_one_call(admin_api, world):
    body = {"name": "solo", "targets": [{"deployment": "stable", "weight": 100}], "fallbacks": ["backup", "canary"]}

    response = post(admin_api, "/routes/", body)

    assert response.status_code == 201, response.json()
    assert response.json()["fallbacks"] == ["backup", "canary"]
    assert chain("solo") == ["backup", "canary"]
    assert AuditEvent.objects.get(action="create", object_type="route").after["fallbacks"] == ["backup", "canary"]


def test_the_fallbacks_endpoint_sets_the_order_and_keeps_the_split(admin_api, world):
    put(admin_api, "/routes/chat/fallbacks", {"fallbacks": ["backup"], "reason": "a spare"})

    response = put(admin_api, "/routes/chat/fallbacks", {"fallbacks": [], "reason": "no spare after all"},
                   HTTP_IF_MATCH='"2"')

    assert response.status_code == 200, response.json()
    assert response.json()["fallbacks"] == [] and response.json()["version"] == 3
    assert Route.objects.get(name="chat").weights() == {"canary": 10, "stable": 90}
    changes = list(AuditEvent.objects.filter(action="weights").order_by("id"))
    assert [(c.before["fallbacks"], c.after["fallbacks"]) for c in changes] == [([], ["backup"]), (["backup"], [])]


def test_a_route_read_lists_its_fallbacks_in_order(viewer_api, world):
    RouteFallback.objects.create(route=world.route, deployment=world.backup, position=2)
    RouteFallback.objects.create(route=world.route, deployment=Deployment.objects.create(
        name="first", provider=world.provider, upstream_model="x"), position=1)

    assert viewer_api.get(f"{API}/routes/chat").json()["fallbacks"] == ["first", "backup"]


BAD_FALLBACKS = [
    (["nope"], "fallbacks.nope", "no deployment named"),
    (["backup", "backup"], "fallbacks", "repeated: backup"),
    (["stable"], "fallbacks.stable", "weight 90"),
    ("backup", "fallbacks", "list"),
    ([["backup"]], "fallbacks", "string"),
    ([f"d{i}" for i in range(11)], "fallbacks", "no more than 10"),
]


@pytest.mark.parametrize(("fallbacks", "field", "message"), BAD_FALLBACKS)
def test_bad_fallbacks_are_rejected_naming_the_field_and_change_nothing(admin_api, world, fallbacks, field, message):
    before = state()

    response = put(admin_api, "/routes/chat/fallbacks", {"fallbacks": fallbacks, "reason": "try"})

    assert response.status_code == 400
    assert field in response.json() and message in str(response.json()[field]), response.json()
    assert state() == before


def test_a_disabled_fallback_is_rejected(admin_api, world):
    Deployment.objects.filter(name="backup").update(enabled=False)
    before = state()

    response = put(admin_api, "/routes/chat/fallbacks", {"fallbacks": ["backup"], "reason": "try"})

    assert response.status_code == 400 and "disabled" in str(response.json()["fallbacks.backup"])
    assert state() == before


def test_a_deployment_both_weighted_and_a_fallback_in_one_call_is_rejected(admin_api, world):
    before = state()
    body = {"weights": {"stable": 50, "canary": 50}, "fallbacks": ["canary"], "reason": "both?"}

    response = put(admin_api, "/routes/chat/weights", body)

    assert response.status_code == 400 and "weight 50" in str(response.json()["fallbacks.canary"])
    assert state() == before


def test_bad_fallbacks_on_create_or_update_are_rejected_and_change_nothing(admin_api, world):
    before = state()
    created = post(admin_api, "/routes/", {"name": "x", "targets": [{"deployment": "stable", "weight": 100}],
                                           "fallbacks": ["stable"]})
    updated = admin_api.patch(f"{API}/routes/chat", {"fallbacks": ["nope"]}, format="json")

    assert created.status_code == 400 and "fallbacks.stable" in created.json()
    assert updated.status_code == 400 and "fallbacks.nope" in updated.json()
    assert state() == before


def test_a_fallbacks_change_without_a_reason_is_rejected(admin_api, world):
    before = state()
    response = put(admin_api, "/routes/chat/fallbacks", {"fallbacks": ["backup"]})
    assert response.status_code == 400 and "reason" in response.json()
    assert state() == before


def test_a_stale_if_match_on_the_fallbacks_answers_409(admin_api, world):
    before = state()
    response = put(admin_api, "/routes/chat/fallbacks", {"fallbacks": ["backup"], "reason": "x"},
                   HTTP_IF_MATCH='"7"')
    assert response.status_code == 409 and response.json()["version"] == world.route.version
    assert state() == before


def test_only_people_who_may_move_weights_change_fallbacks(anon_api, outsider_api, viewer_api, world):
    body = {"fallbacks": ["backup"], "reason": "x"}
    assert put(anon_api, "/routes/chat/fallbacks", body).status_code == 401
    assert put(outsider_api, "/routes/chat/fallbacks", body).status_code == 403
    assert put(viewer_api, "/routes/chat/fallbacks", body).status_code == 403
    assert viewer_api.patch(f"{API}/routes/chat", {"fallbacks": ["backup"]}, format="json").status_code == 403
    assert chain() == []


def test_giving_a_fallback_weight_takes_it_out_of_the_chain_in_the_same_audited_change(admin_api, world):
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 100, "canary": 0}, "fallbacks": ["canary", "backup"],
                                            "reason": "canary on failure"})

    response = put(admin_api, "/routes/chat/weights", {"weights": {"stable": 80, "canary": 20}, "reason": "ramp"})

    assert response.status_code == 200 and response.json()["fallbacks"] == ["backup"]
    last = AuditEvent.objects.filter(action="weights").order_by("id").last()
    assert (last.before["fallbacks"], last.after["fallbacks"]) == (["canary", "backup"], ["backup"])


def test_a_dry_run_checks_the_fallbacks_too(admin_api, world):
    before = state()
    response = put(admin_api, "/routes/chat/weights", {"weights": {"stable": 90, "canary": 10}, "fallbacks": ["nope"],
                                                       "dry_run": True})
    assert response.status_code == 400 and "fallbacks.nope" in response.json()
    assert state() == before


def test_a_deployment_in_a_fallback_chain_cannot_be_deleted(admin_api, world):
    put(admin_api, "/routes/chat/fallbacks", {"fallbacks": ["backup"], "reason": "x"})

    response = admin_api.delete(f"{API}/deployments/backup")

    assert response.status_code == 409 and "fallback" in response.json()["detail"]
    assert chain() == ["backup"]


def test_reverting_restores_the_chain_with_the_split(admin_api, world):
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 100, "canary": 0}, "fallbacks": ["canary"],
                                            "reason": "canary on failure"})

    response = post(admin_api, "/routes/chat/weights/revert", {"reason": "back"})

    assert response.status_code == 200, response.json()
    assert response.json()["fallbacks"] == [] and Route.objects.get().weights() == {"canary": 10, "stable": 90}
