"""Notifications link to the alerts page absolutely under WEATHERVANE_PUBLIC_URL: the webhook's `url`, the email's
last line, the test notification's."""

import json

import pytest
from django.core import mail

from dashboard.alerts import delivery, engine
from dashboard.alerts.models import Channel, ChannelKind

from .conftest import make_rule, set_health
from .receivers import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def public(settings):
    settings.PUBLIC_URL = "https://weathervane.example.com/"
    settings.ALLOW_PRIVATE_UPSTREAMS = True  # the receiver is on 127.0.0.1


def test_a_fault_s_notification_links_to_the_alerts_page_absolutely(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert sent[0][0].url == "https://weathervane.example.com/alerts/"


def test_the_email_ends_with_the_absolute_link(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    email = Channel(name="ops mail", kind=ChannelKind.EMAIL)
    email.set_target("ops@example.com")
    email.save()
    delivery.attempt(email.pk, sent[0][0], 1, "n1")
    assert mail.outbox[0].body.splitlines()[-1] == "https://weathervane.example.com/alerts/"


def test_the_test_notification_of_a_webhook_carries_the_absolute_link(db):
    with Receiver(200) as hook:
        hooked = Channel(name="hook", kind=ChannelKind.WEBHOOK)
        hooked.set_target(f"{hook.url}/in")
        hooked.set_secret("whsec-0123456789abcdef")
        hooked.save()
        assert delivery.send_test(hooked).outcome == "ok"
    assert json.loads(hook.received[0].body)["url"] == "https://weathervane.example.com/alerts/channels/"


def test_without_a_public_url_the_link_is_the_bare_path(world, policy, sent, clock, settings):
    settings.PUBLIC_URL = ""
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert sent[0][0].url == "/alerts/"
