"""/api/v1/alert-channels/: validated, audited, write-only targets; the test action; the delivery log; the page's
"send test notification" button."""

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from dashboard.alerts.models import Channel, Delivery
from routing.models import AuditEvent
from tests.dashboard.alerts.receivers import Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

API = "/api/v1/alert-channels/"
SECRET = "whsec-0123456789abcdef"


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True


def create(api, **body):
    return api.post(API, body, format="json")


def said(response):
    return response.content.decode()


# --- Works ----------------------------------------------------------------------------------------------


def test_staff_create_an_apprise_channel_and_only_its_hint_comes_back(admin_api):
    url = "ntfy://ntfy.example.com/weathervane-sk-TOPIC-9f8e7d6c"
    created = create(admin_api, name="ntfy", kind="apprise", target=url)
    assert created.status_code == 201, said(created)
    body = created.json()
    assert url not in said(created) and "target" not in body and "secret" not in body
    assert body["target_hint"] == "ntfy://…7d6c" and body["has_secret"] is False and body["last_delivery"] is None
    channel = Channel.objects.get()
    assert channel.reveal() == url and url not in channel.target_encrypted
    event = AuditEvent.objects.get(object_type="channel")
    assert event.action == "create" and url not in json.dumps(event.after) and "target_encrypted" not in event.after


def test_a_webhook_channel_needs_a_secret_and_keeps_it_through_updates(admin_api):
    created = create(admin_api, name="hook", kind="webhook", target="https://hooks.example.com/wv/abcdef1234",
                     secret=SECRET)
    assert created.status_code == 201 and created.json()["target_hint"] == "https://hooks.example.com/…1234"
    assert created.json()["has_secret"] is True and SECRET not in said(created)
    pk = created.json()["id"]
    renamed = admin_api.patch(f"{API}{pk}/", {"name": "hook-2", "enabled": False}, format="json")
    assert renamed.status_code == 200 and renamed.json()["has_secret"] is True
    channel = Channel.objects.get()
    assert (channel.name, channel.enabled, channel.reveal_secret()) == ("hook-2", False, SECRET)
    moved = admin_api.patch(f"{API}{pk}/", {"target": "https://other.example.com/x"}, format="json")
    assert moved.status_code == 200 and Channel.objects.get().reveal() == "https://other.example.com/x"


def test_an_email_channel_takes_a_list_of_recipients(admin_api):
    created = create(admin_api, name="mail", kind="email", target="ops@example.com; oncall@example.org")
    assert created.status_code == 201 and created.json()["target_hint"] == "…@example.com +1"
    assert Channel.objects.get().reveal() == "ops@example.com, oncall@example.org"


def test_the_test_action_sends_now_answers_the_outcome_and_is_audited(admin_api):
    with Receiver(200) as hook:
        pk = create(admin_api, name="hook", kind="webhook", target=f"{hook.url}/t", secret=SECRET).json()["id"]
        sent = admin_api.post(f"{API}{pk}/test/", HTTP_X_AUDIT_REASON="does it work?")
    assert sent.status_code == 200 and len(hook.received) == 1
    assert sent.json()["outcome"] == "ok" and sent.json()["http_status"] == 200 and sent.json()["test"] is True
    event = AuditEvent.objects.get(action="test")
    assert event.object_id == str(pk) and event.reason == "does it work?" and event.after["outcome"] == "ok"
    listed = admin_api.get(API).json()["results"][0]
    assert listed["last_delivery"]["outcome"] == "ok"
    log = admin_api.get("/api/v1/alert-deliveries/", {"channel": pk}).json()["results"]
    assert [row["outcome"] for row in log] == ["ok"]


def test_a_failed_test_shows_its_redacted_error(admin_api):
    with Receiver(401, reply=b'{"error": {"message": "bad token sk-ECHOED-123456789"}}') as hook:
        pk = create(admin_api, name="hook", kind="webhook", target=f"{hook.url}/t", secret=SECRET).json()["id"]
        sent = admin_api.post(f"{API}{pk}/test/")
    assert sent.status_code == 200 and sent.json()["outcome"] == "failed" and sent.json()["http_status"] == 401
    assert "answered 401" in sent.json()["error"] and "sk-ECHOED-123456789" not in said(sent)


def test_deleting_a_channel_is_audited_and_takes_its_delivery_log_along(admin_api):
    pk = create(admin_api, name="mail", kind="email", target="ops@example.com").json()["id"]
    admin_api.post(f"{API}{pk}/test/")
    assert admin_api.delete(f"{API}{pk}/").status_code == 204
    assert not Channel.objects.exists() and not Delivery.objects.exists()
    assert AuditEvent.objects.filter(object_type="channel", action="delete").count() == 1


# --- Rejects bad input, changing nothing -------------------------------------------------------------------

BAD = [
    ({"kind": "apprise", "target": "nosuchservice://sk-LEAK-000111222333"}, "target", "Apprise does not accept"),
    ({"kind": "apprise", "target": "json://127.0.0.1:9/a json://b/c"}, "target", "one Apprise URL"),
    ({"kind": "apprise"}, "target", "Give the target"),
    ({"kind": "apprise", "target": "mailtos://user:sk-LEAK-000111222333@example.com"}, "target", "HTTP services only"),
    ({"kind": "apprise", "target": "form://hooks.example.com/sk-LEAK-000111222333"}, "target", "HTTP services only"),
    ({"kind": "apprise", "target": "json://hooks.example.com/sk-LEAK-000111222333?+Metadata-Flavor=Google"}, "target",
     "no extra headers"),
    ({"kind": "apprise", "target": "json://hooks.example.com/sk-LEAK-000111222333?method=GET"}, "target",
     "only POSTs"),
    ({"kind": "apprise", "target": "slack://T1JJ3T3L2/A1BRTD4JD/LEAKajkdnlazkcOXrIdevi7FQ", "secret": SECRET},
     "secret", "Only webhook"),
    ({"kind": "webhook", "target": "ftp://files.example.com/sk-LEAK-000111222333", "secret": SECRET}, "target",
     "http:// or https://"),
    ({"kind": "webhook", "target": "https://hooks.example.com/sk-LEAK-000111222333"}, "secret", "signing secret"),
    ({"kind": "webhook", "target": "https://hooks.example.com/a", "secret": "short"}, "secret", "16 to 256"),
    ({"kind": "email", "target": "ops@example.com, not-an-address"}, "target", "Recipient 2"),
    ({"kind": "pager", "target": "x"}, "kind", "not a valid choice"),
    ({"kind": "email", "target": "ops@example.com", "url": "x"}, "url", "Unknown field"),
]


@pytest.mark.parametrize("body,field,words", BAD)
def test_a_bad_channel_is_refused_naming_the_field_without_repeating_the_target(admin_api, body, field, words):
    refused = create(admin_api, name="bad", **body)
    assert refused.status_code == 400, said(refused)
    assert words in " ".join(refused.json()[field]) and "LEAK" not in said(refused)
    assert not Channel.objects.exists() and not AuditEvent.objects.exists()


def test_a_private_address_is_refused_unless_allowed(admin_api, settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    for kind, target in (("webhook", "http://127.0.0.1:9/hook"), ("apprise", "json://localhost/hook"),
                         ("webhook", "http://0177.0.0.1/hook")):
        refused = create(admin_api, name="bad", kind=kind, target=target, **({"secret": SECRET} if kind == "webhook"
                                                                          else {}))
        assert refused.status_code == 400 and "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS" in refused.json()["target"][0]
    assert not Channel.objects.exists()


def test_changing_the_kind_needs_a_new_target_and_a_failed_update_changes_nothing(admin_api):
    pk = create(admin_api, name="mail", kind="email", target="ops@example.com").json()["id"]
    refused = admin_api.patch(f"{API}{pk}/", {"kind": "apprise", "name": "renamed"}, format="json")
    assert refused.status_code == 400 and "target" in refused.json()
    channel = Channel.objects.get()
    assert (channel.name, channel.kind, channel.reveal()) == ("mail", "email", "ops@example.com")
    assert AuditEvent.objects.filter(action="update").count() == 0


# --- Rejects the wrong user -----------------------------------------------------------------------------------


def test_viewers_see_names_kinds_and_hints_and_cannot_change_or_test(admin_api, viewer_api, outsider_api, anon_api):
    pk = create(admin_api, name="mail", kind="email", target="ops@example.com").json()["id"]
    listed = viewer_api.get(API)
    assert listed.status_code == 200 and listed.json()["results"][0]["target_hint"] == "…@example.com"
    assert "ops@example.com" not in said(listed)
    assert create(viewer_api, name="x", kind="email", target="a@example.com").status_code == 403
    assert viewer_api.patch(f"{API}{pk}/", {"enabled": False}, format="json").status_code == 403
    assert viewer_api.post(f"{API}{pk}/test/").status_code == 403
    assert outsider_api.get(API).status_code == 403 and anon_api.get(API).status_code == 401
    assert not Delivery.objects.exists() and Channel.objects.get().enabled


# --- The page's button -----------------------------------------------------------------------------------------


def browser(user, csrf=False):
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_staff_send_a_test_from_the_page_and_see_its_outcome(admin_user):
    with Receiver(503) as hook:
        channel = Channel(name="hook", kind="webhook")
        channel.set_target(f"{hook.url}/page-sk-PATHTOKEN-42")
        channel.set_secret(SECRET)
        channel.save()
        page = browser(admin_user)
        listed = page.get(reverse("alert-channels"))
        assert listed.status_code == 200 and "Send test notification" in said(listed)
        sent = page.post(reverse("alert-channel-test", args=[channel.pk]), {"next": "/alerts/channels/"}, follow=True)
    text = said(sent)
    assert sent.status_code == 200 and len(hook.received) == 1
    assert "failed: answered 503" in text and "Failed</span> (503)" in text and "sk-PATHTOKEN" not in text
    assert AuditEvent.objects.filter(action="test", actor="alice").count() == 1


def test_the_button_needs_staff_rights_and_a_csrf_token(admin_user, viewer_user):
    channel = Channel(name="mail", kind="email")
    channel.set_target("ops@example.com")
    channel.save()
    url = reverse("alert-channel-test", args=[channel.pk])
    viewer_page = browser(viewer_user).get(reverse("alert-channels"))
    assert viewer_page.status_code == 200 and "mail" in said(viewer_page)
    assert "Send test notification" not in said(viewer_page) and "ops@example.com" not in said(viewer_page)
    assert browser(viewer_user).post(url).status_code == 403
    assert browser(admin_user, csrf=True).post(url).status_code == 403
    assert browser(admin_user).get(url).status_code == 405
    staff = User.objects.create_user("sam", "sam@example.com", "correct-horse-battery", is_staff=True)
    assert browser(staff).post(url).status_code == 403  # staff without alerts.change_channel
    staff.user_permissions.add(Permission.objects.get(codename="change_channel"))
    assert browser(staff).post(url, {"next": "https://evil.example/"}).url == reverse("alert-channels")
    assert Delivery.objects.count() == 1


def test_the_channels_page_sends_anonymous_visitors_to_log_in_and_refuses_users_without_a_role(outsider_user):
    anonymous = Client().get(reverse("alert-channels"))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/?next=")
    assert browser(outsider_user).get(reverse("alert-channels")).status_code == 403
