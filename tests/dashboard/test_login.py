"""Log-in lockouts (django-axes) on /login/ and /admin/login/: clear to the person locked out, silent about
passwords."""

import logging

import pytest
from axes.models import AccessAttempt

from tests.dashboard.test_browser import PASSWORD

WRONG = "wrong-password-7Qz"  # must never reach a log line or a stored attempt


def fail(client, url, username="alice", times=1):
    for _ in range(times):
        response = client.post(url, {"username": username, "password": WRONG})
    return response


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_repeated_wrong_passwords_lock_the_login_out_saying_so(client, admin_user, settings, url):
    assert fail(client, url, times=settings.AXES_FAILURE_LIMIT - 1).status_code == 200  # the form again, with its error
    locked = fail(client, url)
    assert locked.status_code == 429
    assert "Too many failed log-ins for alice" in locked.text and "Try again in 15 minutes" in locked.text
    # Even the right password is refused until the cool-off ends.
    right = client.post(url, {"username": "alice", "password": PASSWORD})
    assert right.status_code == 429 and "_auth_user_id" not in client.session


def test_a_lockout_is_per_user_name_and_address(client, admin_user, viewer_user, settings):
    fail(client, "/login/", times=settings.AXES_FAILURE_LIMIT)
    response = client.post("/login/", {"username": "victor", "password": PASSWORD})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(viewer_user.pk)


def test_behind_a_proxy_a_lockout_holds_for_the_forwarded_client_only(admin_user, settings):
    from django.test import Client

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}  # WEATHERVANE_BEHIND_PROXY's effect
    guesser = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert fail(guesser, "/login/", times=settings.AXES_FAILURE_LIMIT).status_code == 429
    alice = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert alice.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302


def test_a_successful_log_in_resets_the_count(client, admin_user, settings):
    fail(client, "/login/", times=settings.AXES_FAILURE_LIMIT - 1)
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    client.logout()
    assert fail(client, "/login/", times=settings.AXES_FAILURE_LIMIT - 1).status_code == 200


def test_failed_and_locked_out_attempts_are_logged_without_the_password(client, admin_user, settings, caplog):
    caplog.set_level(logging.DEBUG)
    fail(client, "/login/", times=settings.AXES_FAILURE_LIMIT + 1)
    messages = [record.getMessage() for record in caplog.records]
    assert any("Locking out" in message and '"alice"' in message for message in messages), messages
    assert not any(WRONG in message for message in messages)
    stored = AccessAttempt.objects.get(username="alice")
    assert stored.failures_since_start >= settings.AXES_FAILURE_LIMIT and WRONG not in stored.post_data
