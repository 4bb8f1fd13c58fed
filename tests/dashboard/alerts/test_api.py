"""/api/v1/ of alerting: strictly validated (400s naming the field, nothing changed), audited, viewers read only."""

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.alerts.models import AlertRule, InhibitRule, MaintenanceWindow, NotificationPolicy, Silence
from routing.models import AuditEvent

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db
RULE = {"name": "slow canary", "kind": "ttft_p95", "params": {"threshold_ms": 2000}, "for_s": 300,
        "severity": "warning", "labels": {"deployment": "canary", "team": "ml"}}


def post(client, url, data):
    return client.post(url, data, format="json")


def soon(minutes=60):
    return (timezone.now() + timedelta(minutes=minutes)).isoformat()


def test_staff_creates_a_rule_with_its_defaults_filled_in_and_it_is_audited(world, admin_api):
    response = post(admin_api, "/api/v1/alert-rules/", RULE)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["params"] == {"threshold_ms": 2000.0, "window_s": 300, "source": "all", "min_count": 1}
    audit = AuditEvent.objects.get(object_type="alertrule", action="create")
    assert audit.actor == "alice" and audit.after["name"] == "slow canary"


@pytest.mark.parametrize(("url", "data", "field", "words"), [
    ("/api/v1/alert-rules/", RULE | {"kind": "vibes"}, "kind", "not a valid choice"),
    ("/api/v1/alert-rules/", RULE | {"params": {}}, "params", "threshold_ms"),
    ("/api/v1/alert-rules/", RULE | {"params": {"threshold_ms": -1}}, "params", "greater than or equal to 1"),
    ("/api/v1/alert-rules/", RULE | {"params": {"threshold_ms": 2000, "window": 5}}, "params", "Unknown field"),
    ("/api/v1/alert-rules/", RULE | {"kind": "error_rate", "params": {"threshold": 5}}, "params",
     "less than or equal to 1"),
    ("/api/v1/alert-rules/", RULE | {"kind": "deployment_health", "params": {"states": ["sad"]}}, "params",
     "not a valid choice"),
    ("/api/v1/alert-rules/", RULE | {"kind": "rollout", "params": {"hold_s": "1h"}}, "params", "valid integer"),
    ("/api/v1/alert-rules/", RULE | {"severity": "panic"}, "severity", "not a valid choice"),
    ("/api/v1/alert-rules/", RULE | {"labels": {"deployment": "nobody"}}, "labels", "no deployment named"),
    ("/api/v1/alert-rules/", RULE | {"labels": {"bad-name": "x"}}, "labels", "label name"),
    ("/api/v1/alert-rules/", RULE | {"for_s": -5}, "for_s", "greater than or equal to 0"),
    ("/api/v1/silences/", {"matchers": [], "ends_at": "2099-01-01T00:00:00Z", "reason": "x"}, "matchers",
     "at least one matcher"),
    ("/api/v1/silences/", {"matchers": [{"name": "deployment", "op": "~", "value": "x"}],
                           "ends_at": "2099-01-01T00:00:00Z", "reason": "x"}, "matchers", "op: use one of"),
    ("/api/v1/silences/", {"matchers": [{"name": "deployment", "op": "=~", "value": "("}],
                           "ends_at": "2099-01-01T00:00:00Z", "reason": "x"}, "matchers", "regular expression"),
    ("/api/v1/silences/", {"matchers": [{"name": "deployment", "op": "=~", "value": "(a)\\1"}],
                           "ends_at": "2099-01-01T00:00:00Z", "reason": "x"}, "matchers", "RE2"),
    ("/api/v1/inhibit-rules/", {"name": "i", "source_matchers": [{"name": "d", "op": "!~", "value": "(?=x)y"}],
                                "target_matchers": [{"name": "d", "value": "x"}]}, "source_matchers", "lookarounds"),
    ("/api/v1/notification-policies/", {"name": "p", "matchers": [{"name": "d", "op": "=~", "value": "x" * 501}]},
     "matchers", "at most 500 characters"),
    ("/api/v1/silences/", {"matchers": [{"name": "deployment", "value": "x"}], "ends_at": "2020-01-01T00:00:00Z",
                           "reason": "x"}, "ends_at", "after it starts"),
    ("/api/v1/silences/", {"matchers": [{"name": "deployment", "value": "x"}], "ends_at": "2099-01-01T00:00:00Z"},
     "reason", "required"),
    ("/api/v1/silences/", {"matchers": [{"name": "d", "value": "x"}], "ends_at": "2099-01-01T00:00:00Z",
                           "reason": "x", "created_by": "mallory"}, "created_by", "Read-only field"),
    ("/api/v1/maintenance-windows/", {"name": "w", "kind": "weekly", "start_time": "22:00", "end_time": "02:00"},
     "weekdays", "at least one weekday"),
    ("/api/v1/maintenance-windows/", {"name": "w", "kind": "weekly", "weekdays": [7], "start_time": "22:00",
                                      "end_time": "02:00"}, "weekdays", "less than or equal to 6"),
    ("/api/v1/maintenance-windows/", {"name": "w", "kind": "weekly", "weekdays": [1], "start_time": "22:00",
                                      "end_time": "02:00", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ("/api/v1/maintenance-windows/", {"name": "w", "kind": "one_off", "starts_at": "2099-01-01T00:00:00Z"},
     "ends_at", "needs starts_at and ends_at"),
    ("/api/v1/notification-policies/", {"name": "p", "channels": ["nowhere"]}, "channels", "does not exist"),
    ("/api/v1/notification-policies/", {"name": "p", "group_interval_s": 600, "repeat_interval_s": 300},
     "repeat_interval_s", "Repeat at most as often"),
    ("/api/v1/notification-policies/", {"name": "p", "group_by": ["bad label"]}, "group_by", "does not match"),
    ("/api/v1/inhibit-rules/", {"name": "i", "source_matchers": [], "target_matchers": []}, "source_matchers",
     "at least one matcher"),
])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(world, admin_api, url, data, field, words):
    counts = [model.objects.count() for model in (AlertRule, Silence, MaintenanceWindow, NotificationPolicy,
                                                  InhibitRule, AuditEvent)]
    response = post(admin_api, url, data)
    assert response.status_code == 400, response.json()
    body = response.json()
    assert field in str(body) and words in str(body), body
    assert [model.objects.count() for model in (AlertRule, Silence, MaintenanceWindow, NotificationPolicy,
                                                InhibitRule, AuditEvent)] == counts


def test_a_weekly_window_and_a_policy_with_a_channel_are_accepted(world, admin_api, channel):
    window = post(admin_api, "/api/v1/maintenance-windows/", {
        "name": "saturday night", "kind": "weekly", "weekdays": [5], "start_time": "22:00", "end_time": "02:00",
        "timezone": "Europe/Berlin", "matchers": [{"name": "provider", "op": "=", "value": "sim"}]})
    assert window.status_code == 201, window.json()
    policy = post(admin_api, "/api/v1/notification-policies/", {
        "name": "ops", "channels": ["ops webhook"], "severities": ["critical"], "group_by": ["..."]})
    assert policy.status_code == 201, policy.json()
    assert NotificationPolicy.objects.get(name="ops").channels.get() == channel


def test_a_silence_records_its_creator_and_expiring_it_is_audited(world, admin_api):
    response = post(admin_api, "/api/v1/silences/", {
        "matchers": [{"name": "deployment", "op": "=", "value": "canary"}], "ends_at": soon(), "reason": "fixing"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["created_by"] == "alice" and body["active"] is True
    expired = admin_api.post(f"/api/v1/silences/{body['id']}/expire/", HTTP_X_AUDIT_REASON="fixed early")
    assert expired.status_code == 200 and expired.json()["active"] is False
    audit = AuditEvent.objects.get(object_type="silence", action="update")
    assert audit.reason == "fixed early" and audit.actor == "alice"


def test_viewers_read_everything_and_change_nothing(world, viewer_api, admin_api):
    make_rule()
    silence = post(admin_api, "/api/v1/silences/", {"matchers": [{"name": "d", "value": "x"}], "ends_at": soon(),
                                                    "reason": "r"}).json()
    for url in ("alerts", "alert-rules", "silences", "maintenance-windows", "notification-policies",
                "inhibit-rules"):
        assert viewer_api.get(f"/api/v1/{url}/").status_code == 200, url
    assert post(viewer_api, "/api/v1/alert-rules/", RULE).status_code == 403
    assert viewer_api.post(f"/api/v1/silences/{silence['id']}/expire/").status_code == 403
    assert viewer_api.delete(f"/api/v1/alert-rules/{AlertRule.objects.get().pk}/").status_code == 403
    assert Silence.objects.get().ends_at > timezone.now() and AlertRule.objects.count() == 1


def test_outsiders_and_strangers_see_nothing(world, outsider_api, anon_api):
    assert outsider_api.get("/api/v1/alerts/").status_code == 403
    assert anon_api.get("/api/v1/alert-rules/").status_code in (401, 403)


def test_alerts_are_listed_with_why_they_are_quiet_and_cannot_be_written(world, admin_api, sent):
    from dashboard.alerts import engine

    make_rule()
    set_health(world.canary, "down")
    Silence.objects.create(matchers=[{"name": "deployment", "op": "=", "value": "canary"}],
                           starts_at=timezone.now() - timedelta(minutes=1), ends_at=timezone.now() + timedelta(hours=1),
                           created_by="alice", reason="known")
    engine.tick()
    [alert] = admin_api.get("/api/v1/alerts/?state=firing").json()["results"]
    assert (alert["rule"], alert["severity"], alert["suppressed"]) == ("deployment down", "critical", "silenced")
    assert admin_api.get("/api/v1/alerts/?state=resolved").json()["results"] == []
    assert admin_api.get("/api/v1/alerts/?state=bogus").status_code == 400
    assert admin_api.get("/api/v1/alerts/?state=").status_code == 400
    assert admin_api.get("/api/v1/alert-rules/?enabled=null").status_code == 400
    assert len(admin_api.get("/api/v1/alert-rules/?enabled=true").json()["results"]) == 1
    assert post(admin_api, "/api/v1/alerts/", {"summary": "x"}).status_code == 405


def test_deleting_a_rule_is_audited(world, admin_api):
    rule = make_rule()
    assert admin_api.delete(f"/api/v1/alert-rules/{rule.pk}/").status_code == 204
    assert AuditEvent.objects.get(object_type="alertrule", action="delete").before["name"] == "deployment down"
