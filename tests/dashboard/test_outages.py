"""A database that does not answer a control-plane request: 503 with Retry-After (JSON on the API, a short page
elsewhere), never an HTML 500; logged once per outage and once when it ends. Other errors stay 500s."""

import logging

import pytest
from django.db import OperationalError, connection
from django.test import Client

from dashboard import outages

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_outage():
    """Each test starts and ends with the control plane's database answering (the outage log is per process)."""
    outages.REQUESTS.since = None
    yield outages.REQUESTS
    outages.REQUESTS.since = None


def refused(*args, **kwargs):
    raise OperationalError('connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused\n'
                           "\tIs the server running on that host and accepting TCP/IP connections?")


@pytest.fixture
def database_down(monkeypatch, fresh_outage):
    """Make every query of this thread fail as a stopped PostgreSQL does; undo() brings it back."""
    monkeypatch.setattr(connection, "cursor", refused)
    return monkeypatch


def outage_lines(caplog):
    lines = [r.getMessage() for r in caplog.records if r.name in (outages.__name__, "django.request")]
    return [m for m in lines if "is unavailable to" in m], [m for m in lines if "again (unavailable for" in m]


def test_the_api_answers_json_503_with_retry_after_while_the_database_is_down(admin_api, database_down):
    response = admin_api.get("/api/v1/routes/")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "The database is unavailable; try again shortly."}
    assert response["Retry-After"] == "5"
    assert response["Cache-Control"] == "no-store"


def test_a_write_is_refused_the_same_way_and_changes_nothing(admin_api, database_down):
    response = admin_api.post("/api/v1/routes/", {"name": "new-route"}, format="json")
    assert (response.status_code, response["Retry-After"]) == (503, "5")
    database_down.undo()
    assert admin_api.get("/api/v1/routes/").json()["count"] == 0


def test_a_page_answers_a_short_503_page_instead_of_a_500(admin_user, monkeypatch, fresh_outage):
    browser = Client(raise_request_exception=False)
    browser.force_login(admin_user)  # the session row is written before the outage
    monkeypatch.setattr(connection, "cursor", refused)
    response = browser.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/html")
    assert b"The database is unavailable" in response.content


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(admin_api, database_down, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        assert admin_api.get("/api/v1/routes/").status_code == 503
    started, ended = outage_lines(caplog)
    assert len(started) == 1 and not ended
    assert not [r for r in caplog.records if r.name == "django.request"]  # no line per refused request
    assert "OperationalError" in started[0] and "Connection refused" in started[0]
    database_down.undo()
    for _ in range(3):
        assert admin_api.get("/api/v1/routes/").status_code == 200
    started, ended = outage_lines(caplog)
    assert len(started) == 1 and len(ended) == 1
    assert not any(r.exc_info for r in caplog.records if r.name == outages.__name__)


def test_other_errors_are_still_500s(admin_api, monkeypatch, fresh_outage):
    def bug(*args, **kwargs):
        raise ValueError("a bug, not an outage")

    monkeypatch.setattr(connection, "cursor", bug)
    admin_api.raise_request_exception = False
    assert admin_api.get("/api/v1/routes/").status_code == 500
    assert not outages.REQUESTS.down
