"""The alerts page: what fires and why it is quiet, the silence form (staff only), the navigation bar's count."""

import pytest
from django.test import Client

from dashboard.alerts import engine, tasks
from dashboard.alerts.models import Alert, Silence
from probes import scheduler
from routing.models import AuditEvent

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def firing(world, sent):
    make_rule()
    set_health(world.canary, "down")
    engine.tick()
    return Alert.objects.get()


def test_the_page_lists_what_fires_and_the_nav_bar_counts_it_on_every_page(firing, admin_user, channel):
    client = signed_in(admin_user)
    page = client.get("/alerts/").content.decode()
    assert "canary is down: 3 consecutive failures" in page
    assert 'id="nav-alerts-firing" title="Firing alerts">1<' in page
    assert "ops webhook" in page and "very-secret-token" not in page  # channels show their masked hint only
    overview = client.get("/").content.decode()
    assert 'id="nav-alerts-firing" title="Firing alerts">1<' in overview


class FakeScheduler:
    """The embedded scheduler as the page sees it: running, asked to tick the alerts on its own thread."""

    running = True

    def __init__(self):
        self.asked = 0

    def alerts_due_now(self):
        self.asked += 1


@pytest.fixture
def loop(monkeypatch, settings):
    settings.PROBES_IN_PROCESS = True
    fake = FakeScheduler()
    monkeypatch.setattr(scheduler, "_scheduler", fake)
    return fake


def test_staff_silence_a_firing_alert_from_the_page_and_it_goes_quiet(firing, admin_user, loop):
    client = signed_in(admin_user)
    prefilled = client.get(f"/alerts/?silence={firing.pk}").content.decode()
    assert 'value="alertname=&quot;deployment down&quot;, provider=&quot;sim&quot;, deployment=&quot;canary&quot;"' \
        in prefilled
    response = client.post("/alerts/silences/", {"matchers": 'deployment="canary"', "hours": "2",
                                                 "reason": "known outage"})
    assert response.status_code == 302
    firing.refresh_from_db()
    assert firing.suppressed == "" and loop.asked == 1  # no tick in the request: the scheduler's thread does it
    engine.tick()
    firing.refresh_from_db()
    assert firing.suppressed == "silenced"
    page = client.get("/alerts/").content.decode()
    assert 'id="nav-alerts-firing" title="Firing alerts">0<' in page
    assert AuditEvent.objects.get(object_type="silence", action="create").actor == "alice"
    silence = Silence.objects.get()
    assert client.post(f"/alerts/silences/{silence.pk}/expire/").status_code == 302
    assert loop.asked == 2
    engine.tick()
    firing.refresh_from_db()
    assert firing.suppressed == ""


def test_in_the_scaled_mode_a_silence_from_the_page_queues_a_tick_once_saved(firing, admin_user, settings,
                                                                             monkeypatch,
                                                                             django_capture_on_commit_callbacks):
    settings.PROBES_IN_PROCESS = False
    queued = []
    monkeypatch.setattr(tasks.tick_alerts, "apply_async", lambda **kwargs: queued.append(kwargs))
    monkeypatch.setattr(engine, "tick", lambda now=None: pytest.fail("a web request ran the alert tick"))
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in(admin_user).post("/alerts/silences/", {"matchers": 'deployment="canary"', "hours": "2",
                                                                    "reason": "known outage"})
    assert response.status_code == 302 and len(queued) == 1


@pytest.mark.parametrize(("form", "words"), [
    ({"matchers": "deployment", "hours": "2", "reason": "r"}, "Matchers"),
    ({"matchers": 'deployment=~"("', "hours": "2", "reason": "r"}, "regular expression"),
    ({"matchers": 'deployment=~"(a)\\1"', "hours": "2", "reason": "r"}, "RE2"),
    ({"matchers": 'deployment="x", ' * 300, "hours": "2", "reason": "r"}, "under 4000 characters"),
    ({"matchers": 'deployment="canary"', "hours": "-1", "reason": "r"}, "Hours"),
    ({"matchers": 'deployment="canary"', "hours": "2", "reason": ""}, "Reason"),
])
def test_a_bad_silence_form_answers_400_with_the_problem_and_changes_nothing(firing, admin_user, form, words):
    response = signed_in(admin_user).post("/alerts/silences/", form)
    assert response.status_code == 400 and words in response.content.decode()
    assert not Silence.objects.exists() and not AuditEvent.objects.filter(object_type="silence").exists()


def test_viewers_see_the_page_but_cannot_silence(firing, viewer_user):
    client = signed_in(viewer_user)
    page = client.get("/alerts/").content.decode()
    assert "canary is down" in page and "Read-only: only staff can create or expire silences." in page
    assert 'id="silence-form"' not in page
    response = client.post("/alerts/silences/", {"matchers": 'deployment="canary"', "hours": "2", "reason": "x"})
    assert response.status_code == 403 and not Silence.objects.exists()


def test_outsiders_get_403_and_strangers_the_login(firing, outsider_user):
    assert signed_in(outsider_user).get("/alerts/").status_code == 403
    assert Client().get("/alerts/").status_code == 302


def test_the_page_json_matches_the_page(firing, admin_user):
    data = signed_in(admin_user).get("/dashboard-data/alerts/").json()
    assert data["firing_count"] == 1 and data["firing"][0]["summary"] == firing.summary


def test_the_page_and_its_data_carry_one_version_that_a_tick_changes(firing, admin_user, loop):
    client = signed_in(admin_user)
    rendered = client.get("/alerts/").content.decode()
    before = client.get("/dashboard-data/alerts/").json()["version"]
    assert f'data-version="{before}"' in rendered  # what alerts.js compares once its socket is open
    client.post("/alerts/silences/", {"matchers": 'deployment="canary"', "hours": "2", "reason": "known outage"})
    assert client.get("/dashboard-data/alerts/").json()["version"] == before  # nothing ticked in the request
    engine.tick()
    assert client.get("/dashboard-data/alerts/").json()["version"] != before
