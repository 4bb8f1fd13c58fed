"""Changing a provider's base URL sends its keys elsewhere: it needs a reason, is
audited, and shows on the timeline (API and admin alike)."""

import pytest
from django.test import Client

from dashboard import live
from routing.models import AuditEvent, Event, EventKind, Provider
from tests.routing import test_api
from tests.routing.test_admin import admin_form_data, url
from tests.routing.test_api import everything, patch

pytestmark = pytest.mark.django_db
registry = test_api.registry  # the provider, deployments and 90/10 route of the API tests

NEW_URL = "http://127.0.0.1:10/v1"


@pytest.fixture
def published(monkeypatch):
    """What open dashboards would be sent: (message type, payload) per push, through the real live module."""
    sent = []
    monkeypatch.setattr(live, "_send", lambda kind, payload, group=live.GROUP_ALL: sent.append((kind, payload)))
    return sent


def timeline_pushes(published):
    return [payload for kind, payload in published if kind == live.TIMELINE_EVENT]


@pytest.mark.parametrize("body", [{"base_url": NEW_URL}, {"base_url": NEW_URL, "reason": "  "}])
def test_a_base_url_change_without_a_reason_is_refused_and_changes_nothing(admin_api, registry, body):
    before = everything()
    response = patch(admin_api, "/providers/sim", body)
    assert response.status_code == 400
    assert "reason" in response.json()
    assert everything() == before


def test_a_base_url_change_with_a_reason_is_audited_and_on_the_timeline(admin_api, registry, viewer_api, published,
                                                                       django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = patch(admin_api, "/providers/sim", {"base_url": NEW_URL, "reason": "moved to the new region"})
    assert response.status_code == 200, response.json()
    assert "reason" not in response.json()
    audit = AuditEvent.objects.filter(object_type="provider", action="update").get()
    assert (audit.reason, audit.before["base_url"], audit.after["base_url"]) == (
        "moved to the new region", "http://127.0.0.1:9/v1", NEW_URL)
    events = viewer_api.get("/api/v1/events", {"kind": EventKind.PROVIDER_URL}).json()["results"]
    assert len(events) == 1 and "moved to the new region" in events[0]["message"] and NEW_URL in events[0]["message"]
    assert timeline_pushes(published) == [Event.objects.get(kind=EventKind.PROVIDER_URL).payload()]


@pytest.mark.django_db(transaction=True)
def test_a_base_url_change_answers_200_once_committed_and_open_dashboards_hear_of_it(admin_api, registry, published):
    """Without a test transaction around it the on-commit push runs inside the request, as in production."""
    response = patch(admin_api, "/providers/sim", {"base_url": NEW_URL, "reason": "moved to the new region"})
    assert response.status_code == 200, response.content
    [pushed] = timeline_pushes(published)
    assert pushed["kind"] == EventKind.PROVIDER_URL and "moved to the new region" in pushed["message"]


def test_the_reason_may_come_in_the_audit_header(admin_api, registry):
    response = patch(admin_api, "/providers/sim", {"base_url": NEW_URL}, HTTP_X_AUDIT_REASON="new region")
    assert response.status_code == 200
    assert Event.objects.get(kind=EventKind.PROVIDER_URL).data["reason"] == "new region"


def test_other_provider_changes_need_no_reason_and_leave_no_endpoint_event(admin_api, registry):
    unchanged_url = {"read_timeout": 30, "base_url": "http://127.0.0.1:9/v1"}
    assert patch(admin_api, "/providers/sim", unchanged_url).status_code == 200
    assert not Event.objects.filter(kind=EventKind.PROVIDER_URL).exists()


def test_the_timeline_page_shows_the_base_url_change(admin_api, registry, admin_user):
    patch(admin_api, "/providers/sim", {"base_url": NEW_URL, "reason": "new region"})
    browser = Client()
    browser.force_login(admin_user)
    page = browser.get("/timeline/").content.decode()
    assert "Provider endpoint changed" in page and "new region" in page


def test_the_admin_refuses_a_base_url_change_without_a_reason_and_records_one_with_it(
        admin_user, registry, published, django_capture_on_commit_callbacks):
    browser = Client()
    browser.force_login(admin_user)
    provider = Provider.objects.get()
    data = admin_form_data(browser.get(url(Provider, "change", provider.pk))) | {"base_url": NEW_URL}

    refused = browser.post(url(Provider, "change", provider.pk), data)
    assert refused.status_code == 200 and "reason" in refused.context["adminform"].form.errors
    assert Provider.objects.get().base_url == "http://127.0.0.1:9/v1"

    assert timeline_pushes(published) == []
    with django_capture_on_commit_callbacks(execute=True):
        accepted = browser.post(url(Provider, "change", provider.pk), data | {"reason": "failover region"})
    assert accepted.status_code == 302
    assert Provider.objects.get().base_url == NEW_URL
    assert AuditEvent.objects.get(object_type="provider", action="update").reason == "failover region"
    assert Event.objects.get(kind=EventKind.PROVIDER_URL).data["actor"] == "alice"
    assert timeline_pushes(published) == [Event.objects.get(kind=EventKind.PROVIDER_URL).payload()]
