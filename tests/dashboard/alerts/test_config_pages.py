"""Channels, rules and notification policies set up from the alerts page: validated by the API's serializers
(each error beside its field, nothing changed), saved and audited as the API saves them, deleted as the API
deletes them, previewed before saving; viewers see no controls and are refused."""

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from dashboard.alerts import engine
from dashboard.alerts.models import AlertRule, Channel, NotificationPolicy
from routing.models import AuditEvent

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.example.com/wv/token-abcdef1234"
SECRET = "whsec-0123456789abcdef"


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def page(response):
    return response.content.decode()


@pytest.fixture
def staff(admin_user):
    return signed_in(admin_user)


def webhook(**fields):
    made = Channel(name=fields.pop("name", "ops hook"), kind="webhook", **fields)
    made.set_target(HOOK)
    made.set_secret(SECRET)
    made.save()
    return made


# --- channels ---------------------------------------------------------------------------------------------------


def test_staff_create_a_webhook_channel_from_the_form_audited_and_never_shown_its_secrets(staff):
    form = page(staff.get("/alerts/channels/new/"))
    assert 'name="target"' in form and 'type="password"' in form
    response = staff.post("/alerts/channels/new/", {"name": "ops hook", "kind": "webhook", "target": HOOK,
                                                    "secret": SECRET, "enabled": "on"})
    assert response.status_code == 302 and response["Location"] == "/alerts/#alert-channels"
    channel = Channel.objects.get()
    assert (channel.reveal(), channel.reveal_secret(), channel.enabled) == (HOOK, SECRET, True)
    event = AuditEvent.objects.get(object_type="channel")
    assert (event.action, event.actor, event.reason) == ("create", "alice", "from the alerts page")
    assert HOOK not in json.dumps(event.after) and SECRET not in json.dumps(event.after)
    listed = page(staff.get("/alerts/"))
    assert "Saved channel &#x27;ops hook&#x27;." in listed and "…1234" in listed
    assert "token-abcdef" not in listed and SECRET not in listed
    edit = page(staff.get(f"/alerts/channels/{channel.pk}/edit/"))
    assert "token-abcdef" not in edit and SECRET not in edit and "leave them empty to keep" in edit


def test_an_edit_with_the_target_left_empty_keeps_the_stored_one(staff):
    channel = webhook()
    response = staff.post(f"/alerts/channels/{channel.pk}/edit/", {"name": "renamed", "kind": "webhook"})
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.enabled, channel.reveal(), channel.reveal_secret()) == (
        "renamed", False, HOOK, SECRET)
    assert AuditEvent.objects.get(object_type="channel").action == "update"


def test_a_refused_channel_names_the_field_changes_nothing_and_does_not_echo_the_typed_target(staff):
    response = staff.post("/alerts/channels/new/", {"name": "ops hook", "kind": "webhook", "target": HOOK})
    assert response.status_code == 400
    assert "Signing secret: A webhook channel needs a signing secret." in page(response)
    assert "token-abcdef" not in page(response)
    bad = staff.post("/alerts/channels/new/", {"name": "ops hook", "kind": "webhook", "target": "ftp://x.example",
                                               "secret": SECRET})
    assert bad.status_code == 400 and 'id="error-target"' in page(bad) and "Target: " in page(bad)
    assert SECRET not in page(bad)
    assert not Channel.objects.exists() and not AuditEvent.objects.filter(object_type="channel").exists()


# --- rules ------------------------------------------------------------------------------------------------------


def test_staff_create_a_rule_with_its_condition_s_parameters(staff, world):
    form = page(staff.get("/alerts/rules/new/"))
    assert 'name="param-ttft_p95-threshold_ms"' in form and 'name="param-deployment_health-states"' in form
    response = staff.post("/alerts/rules/new/", {
        "name": "slow canary", "kind": "ttft_p95", "param-ttft_p95-threshold_ms": "1500",
        "param-ttft_p95-window_s": "600", "param-ttft_p95-source": "traffic", "param-ttft_p95-min_count": "",
        "param-error_rate-threshold": "nonsense",  # another kind's field: not read
        "for_s": "120", "severity": "critical", "labels": "deployment=canary, team=ml", "enabled": "on"})
    assert response.status_code == 302, page(response)
    rule = AlertRule.objects.get()
    assert rule.params == {"threshold_ms": 1500.0, "window_s": 600, "source": "traffic", "min_count": 1}
    assert (rule.for_s, rule.severity, rule.labels) == (120, "critical", {"deployment": "canary", "team": "ml"})
    assert AuditEvent.objects.get(object_type="alertrule").actor == "alice"
    edit = page(staff.get(f"/alerts/rules/{rule.pk}/edit/"))
    assert 'name="param-ttft_p95-threshold_ms" value="1500"' in edit and 'value="deployment=canary, team=ml"' in edit


@pytest.mark.parametrize(("fields", "said"), [
    ({"kind": "ttft_p95"}, "Condition · threshold_ms: This field is required."),
    ({"kind": "error_rate", "param-error_rate-threshold": "2"}, "Condition · threshold: "),
    ({"labels": "team"}, "Labels: &#x27;team&#x27; is not name=value."),
    ({"labels": "deployment=nowhere"}, "Labels: deployment: no deployment named &#x27;nowhere&#x27;."),
    ({"for_s": "soon"}, "For (s): "),
    ({"name": ""}, "Name: "),
])
def test_a_refused_rule_names_the_field_and_changes_nothing(staff, world, fields, said):
    rule = make_rule("deployment down")
    body = {"name": "deployment down", "kind": "deployment_health", "param-deployment_health-states": "down",
            "for_s": "60", "severity": "critical", "enabled": "on"} | fields
    response = staff.post(f"/alerts/rules/{rule.pk}/edit/", body)
    assert response.status_code == 400 and said in page(response)
    assert "Nothing was saved" in page(response)
    assert AlertRule.objects.get().params == rule.params and AlertRule.objects.get().for_s == 0
    assert not AuditEvent.objects.filter(object_type="alertrule").exists()


def test_a_rule_s_preview_shows_what_its_condition_holds_for_now(staff, world):
    set_health(world.canary, "down")
    answer = staff.post("/alerts/rules/preview/", {"name": "x", "kind": "deployment_health",
                                                   "param-deployment_health-states": ["down", "degraded"],
                                                   "for_s": "30", "severity": "warning"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 1 and body["for_s"] == 30
    assert body["alerts"][0]["summary"].startswith("canary is down")
    assert body["alerts"][0]["labels"]["health"] == "down" and body["alerts"][0]["firing"] is False
    assert not AlertRule.objects.exists()
    refused = staff.post("/alerts/rules/preview/", {"name": "x", "kind": "ttft_p95", "for_s": "0",
                                                    "severity": "info"})
    assert refused.status_code == 400
    assert "Condition · threshold_ms: This field is required." in refused.json()["errors"]


# --- policies ---------------------------------------------------------------------------------------------------


def test_staff_create_a_policy_with_matchers_grouping_and_channels(staff):
    webhook(name="pager")
    response = staff.post("/alerts/policies/new/", {
        "name": "critical to the pager", "order": "10", "matchers": 'team="ml", deployment=~"can.*"',
        "severities": ["critical"], "channels": ["pager"], "group_by": "alertname, deployment",
        "group_wait_s": "0", "group_interval_s": "60", "repeat_interval_s": "3600", "enabled": "on"})
    assert response.status_code == 302, page(response)
    policy = NotificationPolicy.objects.get()
    assert policy.matchers == [{"name": "team", "op": "=", "value": "ml"},
                               {"name": "deployment", "op": "=~", "value": "can.*"}]
    assert ([c.name for c in policy.channels.all()], policy.severities, policy.group_by) == (
        ["pager"], ["critical"], ["alertname", "deployment"])
    assert (policy.order, policy.group_wait_s, policy.continue_matching) == (10, 0, False)
    assert "critical to the pager" in page(staff.get("/alerts/"))


@pytest.mark.parametrize(("fields", "said"), [
    ({"matchers": "team"}, "Matchers: &#x27;team&#x27; is not label=value"),
    ({"matchers": 'team=~"(unclosed"'}, "Matchers: value: "),
    ({"repeat_interval_s": "60"}, "Repeat interval (s): Repeat at most as often as the group interval (300 s)."),
    ({"channels": ["nowhere"]}, "Channels: "),
    ({"group_by": "alertname, not a label"}, "Group by: item 2: This value does not match the required pattern."),
    ({"order": "-1"}, "Order: "),
])
def test_a_refused_policy_names_the_field_and_changes_nothing(staff, fields, said):
    policy = NotificationPolicy.objects.create(name="everything", group_by=["alertname"])
    body = {"name": "everything", "order": "100", "group_by": "alertname", "group_wait_s": "30",
            "group_interval_s": "300", "repeat_interval_s": "3600", "enabled": "on"} | fields
    response = staff.post(f"/alerts/policies/{policy.pk}/edit/", body)
    assert response.status_code == 400 and said in page(response)
    policy.refresh_from_db()
    assert (policy.matchers, policy.repeat_interval_s, policy.order) == ([], 4 * 3600, 100)
    assert not AuditEvent.objects.filter(object_type="notificationpolicy").exists()


def test_a_policy_s_preview_lists_the_firing_alerts_it_would_take_and_those_an_earlier_one_takes(staff, world, sent):
    make_rule()
    set_health(world.canary, "down")
    set_health(world.stable, "down")
    engine.tick()
    NotificationPolicy.objects.create(name="stable first", order=1,
                                      matchers=[{"name": "deployment", "op": "=", "value": "stable"}])
    answer = staff.post("/alerts/policies/preview/", {"name": "new", "order": "50", "matchers": 'provider="sim"',
                                                      "group_by": "alertname"}).json()
    assert [a["summary"][:14] for a in answer["alerts"]] == ["canary is down"]
    assert [(a["summary"][:14], a["by"]) for a in answer["earlier"]] == [("stable is down", "stable first")]
    assert NotificationPolicy.objects.count() == 1


# --- deleting -----------------------------------------------------------------------------------------------------


def test_staff_delete_a_rule_a_policy_and_a_channel_from_their_forms_audited(staff):
    rule, channel = make_rule(), webhook()
    policy = NotificationPolicy.objects.create(name="everything")
    policy.channels.add(channel)
    for what, obj in (("rules", rule), ("policies", policy), ("channels", channel)):
        assert f'action="/alerts/{what}/{obj.pk}/delete/"' in page(staff.get(f"/alerts/{what}/{obj.pk}/edit/"))
        assert staff.post(f"/alerts/{what}/{obj.pk}/delete/").status_code == 302
    assert not (AlertRule.objects.exists() or NotificationPolicy.objects.exists() or Channel.objects.exists())
    deleted = AuditEvent.objects.filter(action="delete", actor="alice")
    assert {e.object_type for e in deleted} >= {"alertrule", "notificationpolicy", "channel"}


# --- who may -------------------------------------------------------------------------------------------------------


def staff_with(username, *perms):
    user = User.objects.create_user(username, f"{username}@example.com", "correct-horse-battery", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return User.objects.get(pk=user.pk)


def writes(rule, policy, channel):
    return [("/alerts/channels/new/", {"name": "x", "kind": "email", "target": "a@example.com"}),
            (f"/alerts/channels/{channel.pk}/edit/", {"name": "x", "kind": "webhook"}),
            (f"/alerts/channels/{channel.pk}/delete/", {}),
            ("/alerts/rules/new/", {"name": "x", "kind": "circuit_open"}),
            (f"/alerts/rules/{rule.pk}/edit/", {"name": "x", "kind": "circuit_open"}),
            (f"/alerts/rules/{rule.pk}/delete/", {}),
            ("/alerts/rules/preview/", {"name": "x", "kind": "circuit_open"}),
            ("/alerts/policies/new/", {"name": "x"}),
            (f"/alerts/policies/{policy.pk}/edit/", {"name": "x"}),
            (f"/alerts/policies/{policy.pk}/delete/", {}),
            ("/alerts/policies/preview/", {"name": "x"})]


def test_viewers_see_no_controls_and_every_form_and_post_refuses_them(viewer_user, outsider_user):
    rule, channel = make_rule(), webhook()
    policy = NotificationPolicy.objects.create(name="everything")
    viewer = signed_in(viewer_user)
    listed = page(viewer.get("/alerts/"))
    assert "ops hook" in listed and "everything" in listed and "deployment down" in listed
    for control in ('id="new-rule"', 'id="new-policy"', 'id="new-channel"', "/edit/", "Send test notification"):
        assert control not in listed
    for url in ("/alerts/channels/new/", f"/alerts/rules/{rule.pk}/edit/", "/alerts/policies/new/"):
        assert viewer.get(url).status_code == 403
    outsider = signed_in(outsider_user)
    for url, body in writes(rule, policy, channel):
        assert viewer.post(url, body).status_code == 403, url
        assert outsider.post(url, body).status_code == 403, url
    assert (AlertRule.objects.get().name, NotificationPolicy.objects.get().name, Channel.objects.get().name) == (
        "deployment down", "everything", "ops hook")
    assert not AuditEvent.objects.filter(actor__in=["victor", "olga"]).exists()


def test_the_page_asks_the_api_s_model_permissions_and_shows_only_the_controls_they_allow(db):
    rule = make_rule()
    rules_only = signed_in(staff_with("rita", "alerts.add_alertrule", "alerts.change_alertrule"))
    listed = page(rules_only.get("/alerts/"))
    assert 'id="new-rule"' in listed and f"/alerts/rules/{rule.pk}/edit/" in listed
    assert 'id="new-policy"' not in listed and 'id="new-channel"' not in listed
    assert rules_only.post("/alerts/policies/new/", {"name": "x"}).status_code == 403
    assert rules_only.post(f"/alerts/rules/{rule.pk}/delete/").status_code == 403
    assert 'action="/alerts/rules/' not in page(rules_only.get(f"/alerts/rules/{rule.pk}/edit/")).split(
        'id="config-form"')[1].split("</form>")[1]  # no delete button without the delete permission
    assert rules_only.post("/alerts/rules/new/", {"name": "mine", "kind": "circuit_open", "for_s": "0",
                                                  "severity": "info"}).status_code == 302
