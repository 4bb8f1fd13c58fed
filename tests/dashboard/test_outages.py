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


# --- for real: the control plane (Daphne) with its PostgreSQL taken away and given back ----------------------

TOKEN_SCRIPT = """
import django
django.setup()
from django.contrib.auth.models import User
from routing.models import ApiToken
user = User.objects.create_user("ops", "ops@example.com", "correct-horse-battery", is_staff=True, is_superuser=True)
print(ApiToken.objects.create(user, name="outage test")[1])
"""


@pytest.fixture
def control_plane_behind_a_relay(tmp_path):
    """Yield (base URL, API token, Relay, server log path): `manage.py serve` on a migrated throwaway PostgreSQL
    database that it reaches through a relay the test can take down."""
    from tests.services import throwaway_database

    with throwaway_database("wv_api_outage") as url:
        yield from _serve_behind_a_relay(tmp_path, url)


def _serve_behind_a_relay(tmp_path, direct):
    import subprocess
    import sys

    from cryptography.fernet import Fernet

    from tests.dashboard.test_settings import BASE_DIR, free_port, get_when_up, settings_env
    from tests.services import POSTGRES_PORT, via_port
    from tests.sockets import Relay

    env = settings_env(tmp_path, DATABASE_URL=direct, WEATHERVANE_FERNET_KEYS=Fernet.generate_key().decode(),
                       DEBUG="true", WEATHERVANE_DEMO_TRAFFIC_RPS="0", DJANGO_SETTINGS_MODULE="dashboard.settings")
    run = {"cwd": BASE_DIR, "check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], env=env, **run)
    token = subprocess.run([sys.executable, "-c", TOKEN_SCRIPT], env=env, **run).stdout.strip().splitlines()[-1]
    port = free_port()
    with Relay(("127.0.0.1", POSTGRES_PORT)) as relay:
        log = tmp_path / "serve.log"
        env["DATABASE_URL"] = via_port(direct, relay.port)
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "manage.py", "serve", "--no-simulator", "--no-probes",
                                        "--port", str(port)], cwd=BASE_DIR, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        try:
            assert get_when_up(f"http://127.0.0.1:{port}/livez").status_code == 200
            yield f"http://127.0.0.1:{port}", token, relay, log
        finally:
            process.terminate()
            process.wait(15)


def _lines(log, text):
    return [line for line in log.read_text().splitlines() if text in line]


@pytest.mark.postgres
@pytest.mark.scaled
@pytest.mark.timeout(120)
def test_a_real_database_outage_gets_json_503s_a_ready_control_plane_and_one_log_line_each_way(
        control_plane_behind_a_relay):
    import time

    import httpx

    base, token, relay, log = control_plane_behind_a_relay
    auth = {"Authorization": f"Token {token}"}
    assert httpx.get(f"{base}/api/v1/routes/", headers=auth, timeout=10).status_code == 200
    assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}  # as a load balancer asks, all along

    relay.down()  # as a stopped PostgreSQL: open connections cut, new ones refused
    answers = [httpx.get(f"{base}/api/v1/routes/", headers=auth, timeout=10) for _ in range(5)]
    assert {a.status_code for a in answers} == {503}
    assert answers[-1].headers["content-type"] == "application/json"
    assert answers[-1].json() == {"detail": "The database is unavailable; try again shortly."}
    assert answers[-1].headers["retry-after"] == "5"
    deadline = time.monotonic() + 10  # the config poll notices within a few seconds
    while "degraded" not in httpx.get(f"{base}/readyz").json() and time.monotonic() < deadline:
        time.sleep(0.3)
    ready = httpx.get(f"{base}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "degraded": ["database"]})
    time.sleep(2)  # more failed polls and requests: still one line each

    relay.up()
    deadline = time.monotonic() + 15
    while httpx.get(f"{base}/api/v1/routes/", headers=auth, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/readyz").json() != {"status": "ready"} and time.monotonic() < deadline:
        time.sleep(0.3)
    assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
    for use in ("the control plane's requests", "the gateway's config refresh"):
        assert len(_lines(log, f"The database is unavailable to {use}")) == 1, log.read_text()[-3000:]
        assert len(_lines(log, f"answers {use} again")) == 1, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    assert "Service Unavailable" not in log.read_text()
    assert token not in log.read_text()
