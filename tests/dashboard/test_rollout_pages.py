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


# --- the "New rollout" form -----------------------------------------------------------------------------------


def staff_with(username, *perms):
    """A staff member holding exactly `perms` ("app.codename")."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, f"{username}@example.com", "correct-horse-battery", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return User.objects.get(pk=user.pk)


def test_staff_draft_a_rollout_from_the_form_and_it_is_audited_as_the_api_does(admin_user):
    world()
    form = browser(admin_user).get("/rollouts/new/?route=chat").content.decode()
    assert '<option value="chat" selected>chat</option>' in form
    assert '<option value="canary">canary</option>' in form
    assert "Careful: 5 % → 25 % → 50 % → 100 %" in form
    ticked = [m for m in ("errors", "ttft_p95", "tpot_p95", "latency_p95")
              if f'name="guard-{m}-on" value="on" checked>' in form]
    assert ticked == ["errors", "ttft_p95", "tpot_p95"]  # the API's defaults: +1 pp, +20 %, +20 %
    assert 'name="guard-tpot_p95-allowed" value="20"' in form and 'name="guard-errors-allowed" value="1"' in form
    response = browser(admin_user).post("/rollouts/new/", {
        "route": "chat", "canary": "canary", "plan_template": "careful",
        "guard-errors-on": "on", "guard-errors-allowed": "0.5",
        "guard-ttft_p95-on": "on", "guard-ttft_p95-allowed": "10",
        "guard-latency_p95-allowed": "50",  # typed but not ticked: not guarded
        "alpha": "0.02", "min_canary_requests": "200", "step_timeout_s": "900"})
    rollout = Rollout.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/rollouts/{rollout.pk}/"
    assert rollout.state == RolloutState.DRAFT and rollout.created_by == "alice"
    assert [s["weight"] for s in rollout.plan] == [5, 25, 50, 100]
    assert rollout.guards == [{"metric": "errors", "allowed": 0.005, "limit": None},
                              {"metric": "ttft_p95", "allowed": 0.1, "limit": None}]
    assert (rollout.alpha, rollout.min_canary_requests, rollout.step_timeout_s) == (0.02, 200, 900)
    audit = AuditEvent.objects.get(object_type="rollout")
    assert (audit.actor, audit.reason, audit.object_id) == ("alice", "rollout drafted", str(rollout.pk))


def test_custom_steps_with_a_pause_and_a_rate_limit_in_percent_reach_the_rollout(admin_user):
    world()
    browser(admin_user).post("/rollouts/new/", {
        "route": "chat", "canary": "canary", "plan_template": "custom",
        "step-0-weight": "20", "step-0-min_dwell_s": "60", "step-0-min_requests": "50",
        "step-1-kind": "pause", "step-2-weight": "100", "step-3-weight": "",  # a blank row is no step
        "guard-errors-on": "on", "guard-errors-allowed": "1", "guard-errors-limit": "5"})
    rollout = Rollout.objects.get()
    assert rollout.plan == [{"weight": 20, "min_dwell_s": 60, "min_requests": 50}, {"pause": True},
                            {"weight": 100, "min_dwell_s": 0, "min_requests": 0}]
    assert rollout.guards == [{"metric": "errors", "allowed": 0.01, "limit": 0.05}]


def test_the_form_shows_each_error_beside_its_field_keeps_what_was_typed_and_creates_nothing(admin_user):
    world()
    response = browser(admin_user).post("/rollouts/new/", {
        "route": "chat", "canary": "canary", "plan_template": "custom",
        "step-0-weight": "0", "step-1-weight": "abc", "guard-errors-on": "on", "guard-errors-allowed": "lots",
        "alpha": "5", "step_timeout_s": "99999999"})
    page = response.content.decode()
    assert response.status_code == 400 and not Rollout.objects.exists()
    assert not AuditEvent.objects.filter(object_type="rollout").exists()
    assert '<ul class="field-error" id="error-step-0" role="alert"><li>weight: Ensure this value is greater than or ' \
           'equal to 1.</li>' in page
    assert '<ul class="field-error" id="error-step-1" role="alert"><li>weight: A valid integer is required.' in page
    assert '<ul class="field-error" id="error-guard-errors" role="alert"><li>allowed: A valid number' in page
    assert '<ul class="field-error" id="error-alpha" role="alert"><li>Ensure this value is less than or equal to 0.2.' \
        in page
    assert 'id="error-step_timeout_s" role="alert"><li>Ensure this value is less than or equal to 604800.' in page
    assert 'name="step-1-weight" min="1" max="100" step="1" value="abc"' in page  # as typed
    assert '<option value="custom" selected>' in page


def test_a_canary_that_is_not_a_target_of_the_route_is_named_on_the_canary_field(admin_user):
    from routing.models import Deployment

    w = world()
    Deployment.objects.create(name="elsewhere", provider=w.provider, upstream_model="x")
    response = browser(admin_user).post("/rollouts/new/", {"route": "chat", "canary": "elsewhere",
                                                           "plan_template": "quick", "guard-errors-on": "on",
                                                           "guard-errors-allowed": "0.5"})
    assert response.status_code == 400
    assert "id=\"error-canary\" role=\"alert\"><li>&#x27;elsewhere&#x27; is not a target of route" \
        in response.content.decode()
    assert not Rollout.objects.exists()


def test_only_staff_who_may_draft_rollouts_and_move_weights_see_the_form_or_post_it(viewer_user, outsider_user):
    world()
    body = {"route": "chat", "canary": "canary", "plan_template": "quick", "guard-errors-on": "on",
            "guard-errors-allowed": "0.5"}
    assert "/rollouts/new/" not in browser(viewer_user).get("/rollouts/").content.decode()
    assert "/rollouts/new/" not in browser(viewer_user).get("/routes/").content.decode()
    assert browser(viewer_user).get("/rollouts/new/").status_code == 403
    assert browser(viewer_user).post("/rollouts/new/", body).status_code == 403
    assert browser(outsider_user).post("/rollouts/new/", body).status_code == 403
    no_weights = staff_with("sam", "rollouts.add_rollout")
    assert browser(no_weights).post("/rollouts/new/", body).status_code == 403
    assert "/rollouts/new/" not in browser(no_weights).get("/rollouts/").content.decode()
    assert not Rollout.objects.exists()
    both = staff_with("tess", "rollouts.add_rollout", "routing.change_routetarget")
    assert 'href="/rollouts/new/"' in browser(both).get("/rollouts/").content.decode()
    assert 'href="/rollouts/new/?route=chat"' in browser(both).get("/routes/").content.decode()
    assert browser(both).post("/rollouts/new/", body).status_code == 302


def test_the_api_asks_the_same_permissions_as_the_form():
    from rest_framework.test import APIClient

    from tests.routing.rollouts.helpers import GUARDS, PLAN

    world()
    api = APIClient()
    api.force_authenticate(staff_with("sam", "rollouts.add_rollout"))
    body = {"route": "chat", "canary": "canary", "plan": PLAN, "guards": GUARDS}
    assert api.post("/api/v1/rollouts/", body, format="json").status_code == 403
    api.force_authenticate(staff_with("tess", "rollouts.add_rollout", "routing.change_routetarget"))
    assert api.post("/api/v1/rollouts/", body, format="json").status_code == 201


# --- the routes page while a rollout drives a route -------------------------------------------------------------


def test_a_driving_rollout_disables_the_route_s_sliders_with_a_banner_and_a_paused_one_gives_the_wheel_back(
        admin_user):
    from routing.rollouts.controller import gate

    rollout = draft(world())
    page = browser(admin_user).get("/routes/").content.decode()
    assert "is driving this route" not in page and '<fieldset disabled>' not in page
    assert 'href="/rollouts/new/?route=chat"' in page
    Rollout.objects.filter(pk=rollout.pk).update(state=RolloutState.RUNNING)
    page = browser(admin_user).get("/routes/").content.decode()
    assert (f'<a href="/rollouts/{rollout.pk}/">rollout #{rollout.pk} of canary</a> (running) is driving this route; '
            "pause it to take the wheel.") in page
    assert "<fieldset disabled>" in page and 'value="100" disabled>' in page
    assert "/rollouts/new/?route=chat" not in page
    gate(rollout.pk, "pause", reason="my turn", actor="alice")
    page = browser(admin_user).get("/routes/").content.decode()
    assert "(paused) is paused: the split is yours to change" in page and "<fieldset disabled>" not in page
    data = browser(admin_user).get("/dashboard-data/routes/").json()["routes"][0]["rollout"]
    assert data == {"id": rollout.pk, "state": "paused", "canary": "canary", "locking": False}


# --- the detail page: evidence per guard, the current step, the step's timeout ---------------------------------


def test_the_detail_shows_each_guard_s_evidence_and_progress_the_current_step_and_its_timeout(admin_user):
    from datetime import timedelta

    from django.utils import timezone

    from routing.rollouts.models import RolloutVerdict

    started = timezone.now().replace(microsecond=0)
    rollout = draft(world(), step=1, state=RolloutState.RUNNING, step_started_at=started, step_timeout_s=600)
    errors = {"metric": "errors", "verdict": "inconclusive", "sentence": "canary errors 3 of 400",
              "evidence": {"canary": {"events": 3, "requests": 400, "rate": 0.0075}, "allowed": 0.005,
                           "ratio_bounds": [0.41, 2.5], "progress": {"fail": 0.25, "pass": 0.8}}}
    ttft = {"metric": "ttft_p95", "verdict": "pass", "sentence": "fine", "evidence": {"carried": False}}
    RolloutVerdict.objects.create(rollout=rollout, step=1, verdict="inconclusive", sentence="holding",
                                  evidence={"verdict": "inconclusive", "metrics": [errors, ttft]})
    data = browser(admin_user).get(f"/dashboard-data/rollouts/{rollout.pk}/").json()
    assert data["step_started_at"].startswith(started.isoformat()[:19])
    assert data["step_deadline"] == (started + timedelta(seconds=600)).isoformat()
    first = data["guard_evidence"][0]
    assert (first["label"], first["progress"], first["step"]) == ("Error rate", {"fail": 25, "pass": 80}, 1)
    assert ["canary requests", "400"] in first["numbers"] and ["ratio bounds", "0.41, 2.5"] in first["numbers"]
    assert data["guard_evidence"][1]["progress"] is None and ["carried", "no"] in data["guard_evidence"][1]["numbers"]
    page = browser(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert 'toward a rollback <progress max="100" value="25" data-side="fail">' in page
    assert 'toward a pass <progress max="100" value="80" data-side="pass">' in page
    assert "<strong>p95 time to first token</strong>: <span class=\"verdict\">pass</span> — fine" in page
    assert '<li aria-current="step" class="current now"> <strong class="now-mark">Now:</strong> 50%' in " ".join(
        page.split())
    assert f'id="step-countdown" data-deadline="{data["step_deadline"]}">Step 2 times out' in page


def test_a_draft_has_no_countdown_and_says_no_verdict_yet(admin_user):
    rollout = draft(world())
    data = browser(admin_user).get(f"/dashboard-data/rollouts/{rollout.pk}/").json()
    assert data["step_deadline"] is None and data["guard_evidence"] == []
    page = browser(admin_user).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "step-countdown" not in page and "No verdict yet: each guard" in page and "Now:" not in page


def test_the_detail_page_offers_only_the_gates_its_user_may_press_as_the_api_decides(admin_user):
    from rest_framework.test import APIClient

    rollout = draft(world())
    drafter = staff_with("sam", "rollouts.add_rollout", "routing.change_routetarget")  # drafts, presses nothing
    detail = browser(drafter).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "Read-only: only staff can press" in detail and 'action="/rollouts/' not in detail
    assert browser(drafter).post(f"/rollouts/{rollout.pk}/start/", {"reason": "go"}).status_code == 403
    api = APIClient()
    api.force_authenticate(drafter)
    assert api.post(f"/api/v1/rollouts/{rollout.pk}/start", {"reason": "go"}, format="json").status_code == 403
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.DRAFT
    Rollout.objects.filter(pk=rollout.pk).update(state=RolloutState.RUNNING, baseline={"stable": 100, "canary": 0})
    pauser = staff_with("pia", "rollouts.change_rollout")  # may pause (it keeps the weights), nothing else
    gates = [g for g in ("pause", "promote", "abort") if f'data-gate="{g}"' in
             browser(pauser).get(f"/rollouts/{rollout.pk}/").content.decode()]
    assert gates == ["pause"]
    assert browser(pauser).post(f"/rollouts/{rollout.pk}/abort/", {"reason": "no"}).status_code == 403
    assert browser(pauser).post(f"/rollouts/{rollout.pk}/pause/", {"reason": "look"}).status_code == 302
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.PAUSED


# --- the form's time-to-decision preview ------------------------------------------------------------------------


def test_the_form_s_preview_is_the_api_s_dry_run_of_the_form_as_typed_with_each_step_s_row(admin_user, admin_api):
    from tests.routing.rollouts.helpers import past_traffic

    w = world()
    past_traffic(w.route, w.stable, 900, errors=9)  # the route's recent traffic: 1 request a second over 15 minutes
    fields = {"route": "chat", "canary": "canary", "plan_template": "custom", "step-0-weight": "10",
              "step-1-kind": "pause", "step-2-weight": "50", "step-3-weight": "100",
              "guard-errors-on": "on", "guard-errors-allowed": "0.5", "step_timeout_s": "600"}
    answer = browser(admin_user).post("/rollouts/new/preview/", fields)
    assert answer.status_code == 200 and not Rollout.objects.exists()
    api = admin_api.post("/api/v1/rollouts/preview/", {
        "route": "chat", "canary": "canary", "guards": [{"metric": "errors", "allowed": 0.005}], "step_timeout_s": 600,
        "plan": [{"weight": 10}, {"pause": True}, {"weight": 50}, {"weight": 100}]}, format="json").json()
    assert answer.json()["forecast"] == api  # the same dry run
    assert answer.json()["step_rows"] == [0, 1, 2, 3]  # plan index → form row
    assert [s["index"] for s in api["steps"]] == [0, 2] and api["steps"][0]["decides_in_time"] is False
    assert api["warnings"]


def test_the_preview_of_an_invalid_form_answers_its_errors_by_field_and_viewers_get_none(admin_user, viewer_user):
    world()
    answer = browser(admin_user).post("/rollouts/new/preview/", {"route": "chat", "canary": "canary",
                                                                  "plan_template": "custom", "step-0-weight": "0"})
    assert answer.status_code == 400
    assert answer.json()["errors"]["steps"] == {"0": ["weight: Ensure this value is greater than or equal to 1."]}
    assert answer.json()["errors"]["guards"] == ["This list may not be empty."]
    assert browser(viewer_user).post("/rollouts/new/preview/", {"route": "chat"}).status_code == 403


def test_an_absurd_dwell_typed_in_the_form_is_named_beside_its_step_and_creates_nothing(admin_user):
    world()
    response = browser(admin_user).post("/rollouts/new/", {
        "route": "chat", "canary": "canary", "plan_template": "custom",
        "step-0-weight": "20", "step-0-min_dwell_s": "1" + "0" * 30, "step-1-weight": "100",
        "guard-errors-on": "on", "guard-errors-allowed": "1"})
    assert response.status_code == 400 and not Rollout.objects.exists()
    assert 'id="error-step-0" role="alert"><li>min_dwell_s: At most 604800 s (7 days).' in response.content.decode()
