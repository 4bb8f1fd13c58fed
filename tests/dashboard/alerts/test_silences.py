"""One validation of silences for the page and the API: at most 90 days, and a silence that matches every alert
needs an explicit match_all (a checkbox on the page)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from dashboard.alerts.matching import matches_every_alert
from dashboard.alerts.models import Silence
from routing.models import AuditEvent

from .conftest import make_rule

pytestmark = pytest.mark.django_db
URL = "/api/v1/silences/"
CANARY = [{"name": "deployment", "op": "=", "value": "canary"}]
EVERYTHING = [{"name": "alertname", "op": "=~", "value": ".*"}]


def later(**delta):
    return (timezone.now() + timedelta(**delta)).isoformat()


def create(api, **fields):
    return api.post(URL, {"matchers": CANARY, "ends_at": later(hours=2), "reason": "known"} | fields, format="json")


def nothing_saved():
    return not Silence.objects.exists() and not AuditEvent.objects.filter(object_type="silence").exists()


def test_the_api_refuses_a_silence_longer_than_90_days_naming_ends_at(admin_api):
    response = create(admin_api, ends_at=later(days=91))
    assert response.status_code == 400 and "at most 90 days" in response.json()["ends_at"][0]
    assert nothing_saved()
    assert create(admin_api, ends_at=later(days=89)).status_code == 201


def test_the_api_refuses_to_lengthen_a_silence_past_90_days(admin_api):
    silence = create(admin_api).json()
    response = admin_api.patch(f"{URL}{silence['id']}/", {"ends_at": later(days=200)}, format="json")
    assert response.status_code == 400 and "ends_at" in response.json()
    assert Silence.objects.get().ends_at < timezone.now() + timedelta(days=1)


@pytest.mark.parametrize("matchers", [
    EVERYTHING,
    [{"name": "severity", "op": "=~", "value": "critical|warning|info"}],
    [{"name": "alertname", "op": "!=", "value": ""}],
    [{"name": "team", "op": "=~", "value": ".*"}, {"name": "alertname", "op": "=~", "value": ".+"}],
])
def test_the_api_refuses_a_match_everything_silence_without_match_all(admin_api, matchers):
    make_rule()
    response = create(admin_api, matchers=matchers)
    assert response.status_code == 400 and "silence every alert" in response.json()["match_all"][0]
    assert nothing_saved()
    accepted = create(admin_api, matchers=matchers, match_all=True)
    assert accepted.status_code == 201 and "match_all" not in accepted.json()


@pytest.mark.parametrize("matchers", [
    CANARY,
    [{"name": "severity", "op": "!=", "value": "critical"}],
    [{"name": "alertname", "op": "!=", "value": "deployment down"}],
    [{"name": "deployment", "op": "!=", "value": "canary"}],
    [{"name": "alertname", "op": "=~", "value": ".*"}, {"name": "route", "op": "=", "value": "chat"}],
])
def test_a_silence_that_leaves_some_alert_out_needs_no_flag(admin_api, matchers):
    make_rule()
    assert not matches_every_alert(matchers, {"alertname": ["deployment down"]})
    assert create(admin_api, matchers=matchers).status_code == 201


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_the_page_refuses_a_match_everything_silence_unless_its_box_is_ticked(admin_user):
    form = {"matchers": 'alertname=~".*"', "hours": "2", "reason": "maintenance"}
    refused = signed_in(admin_user).post("/alerts/silences/", form)
    assert refused.status_code == 400 and "silence every alert" in refused.content.decode()
    assert 'name="match_all"' in refused.content.decode() and nothing_saved()
    assert signed_in(admin_user).post("/alerts/silences/", form | {"match_all": "on"}).status_code == 302
    assert Silence.objects.get().matchers == EVERYTHING


def test_the_page_keeps_its_90_day_cap(admin_user):
    form = {"matchers": 'deployment="canary"', "hours": str(24 * 90 + 1), "reason": "long"}
    refused = signed_in(admin_user).post("/alerts/silences/", form)
    assert refused.status_code == 400 and "at most 2160" in refused.content.decode() and nothing_saved()
