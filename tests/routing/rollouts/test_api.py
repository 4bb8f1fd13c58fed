"""/api/v1/rollouts/: create (strictly validated), list, detail with transitions and verdicts, and the gates."""

import pytest

from routing.models import AuditEvent, Event, EventKind
from routing.outcomes import Outcome
from routing.rollouts.models import Rollout, RolloutState

from .helpers import GUARDS, PLAN, draft, probe_results, world

pytestmark = pytest.mark.django_db
URL = "/api/v1/rollouts"
GOOD = {"route": "chat", "canary": "canary", "plan": PLAN, "guards": GUARDS}


@pytest.fixture
def w():
    return world()


def post(client, url, data):
    return client.post(url, data, format="json")


def test_staff_creates_a_draft_and_it_is_audited(w, admin_api):
    response = post(admin_api, f"{URL}/", GOOD | {"preflight_probes": 2})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["state"], body["route"], body["canary"], body["preflight_probes"]) == ("draft", "chat", "canary", 2)
    assert body["plan"] == PLAN
    assert body["guards"] == [{"metric": "errors", "allowed": 0.005, "limit": None}]
    created = AuditEvent.objects.get(object_type="rollout", action="create")
    assert created.actor == "alice" and created.after["plan"] == PLAN


def test_a_plan_may_begin_with_a_shadow_step_of_a_canary_that_has_no_weight(w, admin_api):
    plan = [{"shadow": 20, "min_dwell_s": 60, "min_requests": 200}, *PLAN]
    response = post(admin_api, f"{URL}/", GOOD | {"plan": plan})
    assert response.status_code == 201, response.json()
    assert response.json()["plan"] == plan


def test_a_shadow_step_is_refused_for_a_canary_that_already_serves_clients(admin_api):
    from tests.factories import canary_world

    canary_world(secret=None, weights=(90, 10))
    response = post(admin_api, f"{URL}/", GOOD | {"plan": [{"shadow": 20}, {"weight": 50}]})
    assert response.status_code == 400
    assert "needs 'canary' at weight 0 on 'chat' (it has 10)" in str(response.json())
    assert not Rollout.objects.exists()


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"plan": [{"weight": 10}, {"weight": 10}]}, "plan", "strictly increase"),
    ({"plan": [{"weight": 50}, {"weight": 5}]}, "plan", "strictly increase"),
    ({"plan": [{"weight": 0}]}, "plan", "greater than or equal to 1"),
    ({"plan": [{"weight": 101}]}, "plan", "less than or equal to 100"),
    ({"plan": [{"weight": "10"}]}, "plan", "valid integer"),
    ({"plan": [{"pause": True}]}, "plan", "at least one step with a weight"),
    ({"plan": [{"weight": 10, "pause": True}]}, "plan", "either"),
    ({"plan": [{"weight": 10, "speed": 2}]}, "plan", "Unknown field"),
    ({"plan": [{"shadow": 10, "weight": 10}]}, "plan", "either"),
    ({"plan": [{"shadow": 0}, {"weight": 10}]}, "plan", "greater than or equal to 1"),
    ({"plan": [{"weight": 10}, {"shadow": 50}]}, "plan", "Shadow steps come before the first step with a weight"),
    ({"plan": [{"shadow": 50}]}, "plan", "at least one step with a weight"),
    ({"plan": []}, "plan", "may not be empty"),
    ({"guards": [{"metric": "vibes", "allowed": 0.1}]}, "guards", "not a valid choice"),
    ({"guards": [{"metric": "errors"}]}, "guards", "needs a non-negative allowed regression"),
    ({"guards": [{"metric": "cost_per_request", "allowed": 0.1}]}, "guards", "takes an absolute limit"),
    ({"guards": []}, "guards", "may not be empty"),
    ({"canary": "stable"}, "canary", "already has weight 100"),
    ({"canary": "stable", "plan": [{"weight": 100}]}, "canary", "the first step (100) must give it more"),
    ({"canary": "nobody"}, "canary", "does not exist"),
    ({"alpha": 0.9}, "alpha", "less than or equal to 0.2"),
    ({"preflight_probes": 0}, "preflight_probes", "greater than or equal to 1"),
    ({"state": "running"}, "state", "Read-only field"),
    ({"baseline": {"stable": 0}}, "baseline", "Read-only field"),
])
def test_bad_input_is_refused_naming_the_field_and_creates_nothing(w, admin_api, change, field, words):
    response = post(admin_api, f"{URL}/", GOOD | change)
    assert response.status_code == 400
    assert field in response.json() and words in str(response.json()[field])
    assert not Rollout.objects.exists()
    assert not AuditEvent.objects.filter(object_type="rollout").exists()


def test_a_canary_of_another_active_rollout_is_refused(w, admin_api):
    from routing.models import Route, RouteTarget

    other = Route.objects.create(name="other")
    RouteTarget.objects.create(route=other, deployment=w.stable, weight=100)
    RouteTarget.objects.create(route=other, deployment=w.canary, weight=0)
    Rollout.objects.create(route=other, canary=w.canary, plan=PLAN, guards=GUARDS, state=RolloutState.RUNNING)
    response = post(admin_api, f"{URL}/", GOOD)
    assert response.status_code == 400 and "still active" in str(response.json()["canary"])


@pytest.mark.parametrize("client", ["viewer_api", "outsider_api", "anon_api"])
def test_only_staff_create_or_press_gates(w, client, request):
    api = request.getfixturevalue(client)
    rollout = draft(w)
    assert post(api, f"{URL}/", GOOD).status_code in (401, 403)
    assert post(api, f"{URL}/{rollout.pk}/start", {"reason": "go"}).status_code in (401, 403)
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.DRAFT
    assert Rollout.objects.count() == 1


def test_viewers_read_the_list_and_the_detail(w, viewer_api, outsider_api):
    rollout = draft(w)
    assert viewer_api.get(f"{URL}/").json()["results"][0]["id"] == rollout.pk
    assert viewer_api.get(f"{URL}/{rollout.pk}").json()["transitions"] == []
    assert outsider_api.get(f"{URL}/").status_code == 403


def test_the_list_filters_by_state_and_refuses_an_empty_or_unknown_one(w, viewer_api):
    rollout = draft(w)
    assert [r["id"] for r in viewer_api.get(f"{URL}/?state=draft").json()["results"]] == [rollout.pk]
    assert viewer_api.get(f"{URL}/?state=running").json()["results"] == []
    for bad in ("", "sideways"):
        refused = viewer_api.get(f"{URL}/?state={bad}")
        assert refused.status_code == 400 and "state" in refused.json()


def test_gates_move_the_rollout_and_show_up_in_detail_timeline_and_audit(w, admin_api):
    rollout = draft(w)
    started = post(admin_api, f"{URL}/{rollout.pk}/start", {"reason": "ship it"})
    assert started.status_code == 200 and started.json()["state"] == "preflight"
    probe_results(w.canary, [Outcome.OK] * 3)
    from routing.rollouts.controller import tick

    tick(rollout.pk)
    paused = post(admin_api, f"{URL}/{rollout.pk}/pause", {"reason": "lunch"})
    assert paused.json()["state"] == "paused"
    promoted = post(admin_api, f"{URL}/{rollout.pk}/promote-now", {"reason": "looks fine"})
    body = promoted.json()
    assert body["state"] == "promoted"
    assert [(t["to_state"], t["actor"]) for t in body["transitions"]] == [
        ("preflight", "alice"), ("running", f"rollout:{rollout.pk}"), ("paused", "alice"), ("promoted", "alice")]
    assert w.route.weights() == {"canary": 50, "stable": 50}
    assert Event.objects.filter(kind=EventKind.ROLLOUT).count() == 4
    gates = AuditEvent.objects.filter(object_type="rollout", action="rollout").order_by("id")
    assert [(a.after["gate"], a.reason) for a in gates] == [
        ("start", "ship it"), ("pause", "lunch"), ("promote", "looks fine")]


def test_a_gate_needs_a_reason_and_one_that_does_not_apply_answers_409(w, admin_api):
    rollout = draft(w)
    missing = post(admin_api, f"{URL}/{rollout.pk}/start", {})
    assert missing.status_code == 400 and "reason" in missing.json()
    blank = post(admin_api, f"{URL}/{rollout.pk}/start", {"reason": "  "})
    assert blank.status_code == 400 and "reason" in blank.json()
    refused = post(admin_api, f"{URL}/{rollout.pk}/approve", {"reason": "go on"})
    assert refused.status_code == 409 and "draft" in refused.json()["detail"]
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.DRAFT
    assert not AuditEvent.objects.filter(object_type="rollout").exists()


def test_a_second_rollout_of_a_busy_route_cannot_start(w, admin_api):
    first, second = draft(w), draft(w)
    assert post(admin_api, f"{URL}/{first.pk}/start", {"reason": "one"}).status_code == 200
    refused = post(admin_api, f"{URL}/{second.pk}/start", {"reason": "two"})
    assert refused.status_code == 409 and f"rollout {first.pk}" in refused.json()["detail"]
    assert Rollout.objects.get(pk=second.pk).state == RolloutState.DRAFT


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"plan": [{"weight": 10, "min_dwell_s": 10**30}]}, "plan", "At most 604800 s (7 days)."),
    ({"plan": [{"weight": 10, "min_dwell_s": 7 * 86400 + 1}]}, "plan", "At most 604800 s (7 days)."),
    ({"plan": [{"shadow": 10, "min_dwell_s": 10**30}, {"weight": 10}]}, "plan", "At most 604800 s"),
    ({"plan": [{"weight": 10, "min_requests": 10**30}]}, "plan", "At most 10000000 requests."),
    ({"step_timeout_s": 10**30}, "step_timeout_s", "less than or equal to 604800"),
    ({"min_canary_requests": 10**30}, "min_canary_requests", "less than or equal to 10000000"),
    ({"guards": [{"metric": "ttft_p95", "allowed": 1e30}]}, "guards", "less than or equal to 10"),
    ({"guards": [{"metric": "ttft_p95", "allowed": 0.1, "limit": 1e30}]}, "guards", "less than or equal to 1"),
])
def test_absurd_durations_and_sizes_are_refused_with_their_bound(w, admin_api, change, field, words):
    response = post(admin_api, f"{URL}/", GOOD | change)
    assert response.status_code == 400, response.json()
    assert field in response.json() and words in str(response.json()[field])
    assert not Rollout.objects.exists()


def test_a_week_long_dwell_is_still_a_plan(w, admin_api):
    plan = [{"weight": 10, "min_dwell_s": 7 * 86400, "min_requests": 10**7}]
    assert post(admin_api, f"{URL}/", GOOD | {"plan": plan}).status_code == 201
