"""The probes REST API: targets, results, rollups and health — works, wrong user, bad input."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from probes.models import ProbeResult, ProbeTarget
from probes.rollups import Aggregator, save_deltas
from probes.runner import run_probe
from routing.models import ApiKey, AuditEvent
from routing.outcomes import Outcome
from tests.probes.conftest import BAD_KEY, GOOD_KEY

pytestmark = pytest.mark.timeout(60)
slots = itertools.count(50_000, 1000)


@pytest.fixture
def target(make_target):
    return make_target("instant", keys=(GOOD_KEY, BAD_KEY))


def url(target, suffix=""):
    return f"/api/v1/probe-targets/{target.pk}/{suffix}"


# --- targets -------------------------------------------------------------------


def test_a_new_deployment_gets_a_probe_target_listed_for_viewers(viewer_api, target):
    body = viewer_api.get("/api/v1/probe-targets/").json()
    assert [t["deployment"] for t in body["results"]] == [target.deployment.name]
    assert body["results"][0]["health"] == "unknown" and body["results"][0]["api_key"] is None


def test_anonymous_and_outsiders_cannot_list_targets(anon_api, outsider_api, target):
    assert anon_api.get("/api/v1/probe-targets/").status_code == 401
    assert outsider_api.get("/api/v1/probe-targets/").status_code == 403


def test_an_admin_edits_a_target_and_the_change_is_audited(admin_api, target):
    response = admin_api.patch(url(target), {"interval_s": 15, "expected_pattern": "^OK"}, format="json",
                               HTTP_X_AUDIT_REASON="slower probes")
    assert response.status_code == 200, response.json()
    target.refresh_from_db()
    assert target.interval_s == 15 and target.expected_pattern == "^OK"
    event = AuditEvent.objects.get(object_type="probetarget", action="update")
    assert event.actor == "alice" and event.before["interval_s"] == 30 and event.after["interval_s"] == 15
    assert event.reason == "slower probes"


def test_a_viewer_cannot_edit_pause_or_probe(viewer_api, target):
    assert viewer_api.patch(url(target), {"interval_s": 15}, format="json").status_code == 403
    assert viewer_api.post(url(target, "pause")).status_code == 403
    assert viewer_api.post(url(target, "probe")).status_code == 403
    target.refresh_from_db()
    assert target.interval_s == 30 and target.enabled and not ProbeResult.objects.exists()


@pytest.mark.parametrize(("field", "value"), [
    ("interval_s", 4), ("interval_s", "10"), ("max_tokens", 17), ("max_tokens", 0), ("timeout_s", 0.1),
    ("expected_pattern", "(unclosed"), ("expected_pattern", r"(?<=a)b"), ("reasoning_effort", "lots"),
    ("colour", "blue"),
])
def test_bad_target_input_names_the_field_and_changes_nothing(admin_api, target, field, value):
    response = admin_api.patch(url(target), {field: value}, format="json")
    assert response.status_code == 400 and field in response.json()
    assert ProbeTarget.objects.get(pk=target.pk).updated_at == target.updated_at
    assert not AuditEvent.objects.filter(object_type="probetarget", action="update").exists()


def test_a_target_cannot_be_moved_to_another_deployment(admin_api, target, make_target):
    other = make_target("instant")
    response = admin_api.patch(url(target), {"deployment": other.deployment.name}, format="json")
    assert response.status_code == 400 and "deployment" in response.json()


def test_an_admin_adds_a_per_key_target_once(admin_api, target):
    key = ApiKey.objects.get(provider=target.deployment.provider, label="key-1")
    body = {"deployment": target.deployment.name, "api_key": key.pk, "interval_s": 60}
    created = admin_api.post("/api/v1/probe-targets/", body, format="json")
    assert created.status_code == 201 and created.json()["api_key_label"] == "key-1"
    again = admin_api.post("/api/v1/probe-targets/", body, format="json")
    assert again.status_code == 400 and "api_key" in again.json()
    assert AuditEvent.objects.filter(object_type="probetarget", action="create", actor="alice").count() == 1


def test_a_key_of_another_provider_is_refused(admin_api, target, make_target):
    foreign = ApiKey.objects.filter(provider=make_target("instant").deployment.provider).first()
    response = admin_api.post("/api/v1/probe-targets/", {"deployment": target.deployment.name, "api_key": foreign.pk},
                              format="json")
    assert response.status_code == 400 and "api_key" in response.json()


def test_a_deployments_own_target_cannot_be_deleted(admin_api, target):
    assert admin_api.delete(url(target)).status_code == 400
    assert ProbeTarget.objects.filter(pk=target.pk).exists()


def test_pause_and_resume_are_audited_with_their_reason(admin_api, target):
    response = admin_api.post(url(target, "pause"), {"reason": "provider maintenance"}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert admin_api.post(url(target, "resume")).json()["enabled"] is True
    updates = AuditEvent.objects.filter(object_type="probetarget", action="update")
    reasons = list(updates.values_list("reason", flat=True))
    assert "provider maintenance" in reasons and len(reasons) == 2


def test_pause_rejects_unknown_fields(admin_api, target):
    response = admin_api.post(url(target, "pause"), {"why": "x"}, format="json")
    assert response.status_code == 400 and "why" in response.json()
    assert ProbeTarget.objects.get(pk=target.pk).enabled


def test_probe_now_returns_a_fresh_result(admin_api, target):
    response = admin_api.post(url(target, "probe"))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["outcome"] in ("ok", "bad_key") and body["target"] == target.pk
    assert GOOD_KEY not in str(body) and BAD_KEY not in str(body)
    assert ProbeResult.objects.filter(target=target).count() == 1


@pytest.mark.parametrize("stored", ["sk-clé-stored-by-an-old-version", "sk-line\nX-Injected: 1", "sk-with space-1"])
def test_probe_now_with_a_stored_secret_that_cannot_be_sent_records_a_bad_key_without_it(admin_api, make_target,
                                                                                         simulator, stored):
    target = make_target("instant", keys=(stored,))
    response = admin_api.post(url(target, "probe"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["outcome"] == "bad_key" and "cannot be sent in an HTTP header" in body["error"]
    assert stored not in response.content.decode() and "X-Injected" not in response.content.decode()
    assert simulator.simulator.attempts("instant") == []  # nothing went out


def test_probe_now_of_a_missing_target_is_404(admin_api, target):
    assert admin_api.post("/api/v1/probe-targets/99999/probe").status_code == 404


# --- results -------------------------------------------------------------------


def test_results_filter_by_outcome_and_time_and_paginate(viewer_api, target):
    for _ in range(4):
        run_probe(target.pk, next(slots))  # rotates: key-0 ok, key-1 bad once, then ok
    everything = viewer_api.get("/api/v1/probe-results/", {"target": target.pk, "limit": 2}).json()
    assert everything["count"] == 4 and len(everything["results"]) == 2 and everything["next"]
    bad = viewer_api.get("/api/v1/probe-results/", {"outcome": "bad_key"}).json()
    assert bad["count"] == 1 and bad["results"][0]["api_key_label"] == "key-1"
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert viewer_api.get("/api/v1/probe-results/", {"since": future}).json()["count"] == 0


def test_results_reject_an_unknown_outcome_or_a_bad_time(viewer_api, target):
    response = viewer_api.get("/api/v1/probe-results/", {"outcome": "splendid"})
    assert response.status_code == 400 and "outcome" in response.json()
    response = viewer_api.get("/api/v1/probe-results/", {"since": "yesterday"})
    assert response.status_code == 400 and "since" in response.json()


def test_results_are_read_only_and_hidden_from_outsiders(admin_api, outsider_api, target):
    run_probe(target.pk, next(slots))
    result = ProbeResult.objects.get()
    assert admin_api.delete(f"/api/v1/probe-results/{result.pk}/").status_code == 405
    assert outsider_api.get("/api/v1/probe-results/").status_code == 403


# --- rollups and health -----------------------------------------------------------


def seed_rollups(deployment, source="probe"):
    now = timezone.now()
    agg = Aggregator(source)
    for minutes_ago, ms in ((0, 100), (0, 300), (2, 200)):
        agg.add(deployment.pk, when=now - timedelta(minutes=minutes_ago), outcome="ok", latency_ms=ms)
    agg.add(deployment.pk, when=now - timedelta(minutes=2), outcome="timeout")
    save_deltas(agg.drain())


def test_rollups_return_one_point_per_minute_for_charts(viewer_api, target):
    seed_rollups(target.deployment)
    body = viewer_api.get("/api/v1/rollups/", {"deployment": target.deployment.name, "window": "15m"}).json()
    assert body["step_minutes"] == 1 and 15 <= len(body["points"]) <= 16
    last, two_ago = body["points"][-1], body["points"][-3]
    assert last["count"] == 2 and 95 <= last["p50_ms"] <= 305
    assert two_ago["count"] == 2 and two_ago["error_rate"] == 0.5
    assert body["summary"]["count"] == 4 and body["summary"]["errors"] == {"timeout": 1}
    empty = body["points"][0]
    assert empty["count"] == 0 and empty["p50_ms"] is None


def test_rollups_keep_probe_and_traffic_apart(viewer_api, target):
    seed_rollups(target.deployment, source="traffic")
    query = {"deployment": target.deployment.name, "window": "1h"}
    assert viewer_api.get("/api/v1/rollups/", {**query, "source": "probe"}).json()["summary"]["count"] == 0
    assert viewer_api.get("/api/v1/rollups/", {**query, "source": "traffic"}).json()["summary"]["count"] == 4


def test_a_week_of_rollups_comes_in_coarser_steps(viewer_api, target):
    body = viewer_api.get("/api/v1/rollups/", {"deployment": target.deployment.name, "window": "7d"}).json()
    assert body["step_minutes"] == 14 and len(body["points"]) <= 721


@pytest.mark.parametrize(("params", "field"), [
    ({"deployment": "nope"}, "deployment"), ({}, "deployment"), ({"window": "3y"}, "window"),
    ({"source": "vibes"}, "source"), ({"step": "0"}, "step"), ({"step": "x"}, "step"),
])
def test_rollups_reject_bad_queries_naming_the_parameter(viewer_api, target, params, field):
    query = {"deployment": target.deployment.name, **params} if "deployment" not in params and params else params
    response = viewer_api.get("/api/v1/rollups/", query)
    assert response.status_code == 400 and field in response.json()


def test_rollups_are_hidden_from_outsiders(outsider_api, anon_api, target):
    assert outsider_api.get("/api/v1/rollups/", {"deployment": target.deployment.name}).status_code == 403
    assert anon_api.get("/api/v1/rollups/", {"deployment": target.deployment.name}).status_code == 401


def test_health_per_target_reports_state_and_windows(viewer_api, target):
    for _ in range(2):
        run_probe(target.pk, next(slots))
    body = viewer_api.get(url(target, "health")).json()
    assert body["state"] in ("up", "degraded") and set(body["windows"]) == {"5m", "1h", "24h", "7d"}
    assert body["windows"]["5m"]["count"] == 2


def test_health_of_a_missing_target_is_404_and_hidden_from_outsiders(viewer_api, outsider_api, target):
    assert viewer_api.get("/api/v1/probe-targets/99999/health").status_code == 404
    assert outsider_api.get(url(target, "health")).status_code == 403


def test_a_per_key_targets_health_counts_only_its_own_probes(admin_api, viewer_api, target):
    key = ApiKey.objects.get(provider=target.deployment.provider, label="key-0")
    per_key = ProbeTarget.objects.create(deployment=target.deployment, api_key=key)
    run_probe(per_key.pk, next(slots))
    run_probe(target.pk, next(slots))
    run_probe(target.pk, next(slots))
    assert viewer_api.get(url(per_key, "health")).json()["windows"]["5m"]["count"] == 1
    assert viewer_api.get(url(target, "health")).json()["windows"]["5m"]["count"] == 2
    assert Outcome.OK in ProbeResult.objects.values_list("outcome", flat=True)
