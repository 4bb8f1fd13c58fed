"""Alert channels in the admin: write-only target and secret, validated, audited; the delivery log read-only."""

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.alerts.models import Channel, Delivery
from routing.models import AuditEvent
from tests.routing.test_admin import admin_form_data

pytestmark = pytest.mark.django_db

TARGET = "https://hooks.example.com/wv/sk-PATH-abcdef123456"
SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def browser(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def add(browser, **fields):
    form = {"name": "hook", "kind": "webhook", "target": TARGET, "secret": SECRET, "enabled": "on"} | fields
    return browser.post(reverse("admin:alerts_channel_add"), form)


def test_a_channel_added_in_the_admin_is_encrypted_audited_and_shown_by_its_hint_only(browser):
    assert add(browser).status_code == 302
    channel = Channel.objects.get()
    assert (channel.reveal(), channel.reveal_secret()) == (TARGET, SECRET)
    page = browser.get(reverse("admin:alerts_channel_change", args=[channel.pk])).content.decode()
    assert "https://hooks.example.com/…3456" in page and TARGET not in page and SECRET not in page
    assert AuditEvent.objects.get(object_type="channel").action == "create"


def test_saving_with_blank_target_and_secret_keeps_the_stored_ones(browser):
    add(browser)
    channel = Channel.objects.get()
    change = reverse("admin:alerts_channel_change", args=[channel.pk])
    assert browser.post(change, admin_form_data(browser.get(change)) | {"name": "renamed"}).status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.reveal(), channel.reveal_secret()) == ("renamed", TARGET, SECRET)


@pytest.mark.parametrize("fields,error", [
    ({"target": "ftp://hooks.example.com/sk-PATH-abcdef123456"}, "http:// or https://"),
    ({"secret": ""}, "needs a signing secret"),
    ({"kind": "apprise", "target": "nosuch://sk-PATH-abcdef123456", "secret": ""}, "Apprise does not accept"),
    ({"kind": "email", "target": "not-an-address", "secret": ""}, "Recipient 1"),
])
def test_a_bad_channel_is_refused_in_the_admin_without_echoing_it(browser, fields, error):
    refused = add(browser, **fields)
    page = refused.content.decode()
    assert refused.status_code == 200 and error in page and "sk-PATH-abcdef123456" not in page
    assert not Channel.objects.exists() and not AuditEvent.objects.exists()


def test_the_delivery_log_is_read_only(browser):
    add(browser)
    Delivery.objects.create(channel=Channel.objects.get(), notification="n", group_key="g", status="firing",
                            attempt=1, outcome="ok")
    assert browser.get(reverse("admin:alerts_delivery_changelist")).status_code == 200
    assert browser.get(reverse("admin:alerts_delivery_add")).status_code == 403
