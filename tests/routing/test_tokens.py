"""REST API tokens: hashed, named, expiring, creatable and revocable in the UI and the CLI."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from routing import tokens
from routing.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def api_as(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def create_by_cli(*args):
    out = StringIO()
    call_command("api_token", "create", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_a_token_made_on_the_command_line_works_and_is_stored_only_as_a_digest(admin_user):
    token = create_by_cli("--user", "alice", "--name", "ci-deploy", "--days", "30")
    assert api_as(token).get("/api/v1/providers").status_code == 200
    stored = ApiToken.objects.get()
    assert stored.name == "ci-deploy" and token not in (stored.digest, stored.token_key)
    assert timedelta(days=29) < stored.expiry - timezone.now() <= timedelta(days=30)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        assert token not in repr(cursor.fetchall())
    assert AuditEvent.objects.get(object_type="apitoken").after["name"] == "ci-deploy"


def test_an_expired_token_is_refused(admin_user):
    token = create_by_cli("--user", "alice", "--name", "short")
    ApiToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    assert api_as(token).get("/api/v1/providers").status_code == 401


def test_a_token_revoked_on_the_command_line_stops_working(admin_user):
    token = create_by_cli("--user", "alice", "--name", "ci")
    listing = StringIO()
    call_command("api_token", "list", "--user", "alice", stdout=listing)
    token_key = ApiToken.objects.get().token_key
    assert token_key in listing.getvalue() and "ci" in listing.getvalue() and token not in listing.getvalue()
    call_command("api_token", "revoke", token_key, stdout=StringIO())
    assert api_as(token).get("/api/v1/providers").status_code == 401
    assert AuditEvent.objects.filter(object_type="apitoken", action="delete").count() == 1


@pytest.mark.parametrize("args, message", [
    (["--user", "nobody", "--name", "x"], "No user"),
    (["--user", "alice", "--name", " "], "name"),
    (["--user", "alice", "--name", "x", "--days", "0"], "days"),
])
def test_the_command_refuses_bad_input(admin_user, args, message):
    with pytest.raises(CommandError, match=message):
        create_by_cli(*args)
    assert not ApiToken.objects.exists()


def test_a_token_acts_with_its_users_rights_only(viewer_user):
    token = create_by_cli("--user", "victor", "--name", "read")
    client = api_as(token)
    assert client.get("/api/v1/providers").status_code == 200
    new_provider = {"name": "x", "base_url": "https://a.example.com/v1"}
    assert client.post("/api/v1/providers", new_provider, format="json").status_code == 403


@pytest.fixture
def browser(viewer_user):
    client = Client()
    client.force_login(viewer_user)
    return client


def test_the_tokens_page_creates_a_token_and_shows_it_exactly_once(browser):
    created = browser.post("/tokens/", {"name": "laptop", "days": "7"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    token = created.context["created"]["token"]
    assert token in created.content.decode()
    assert api_as(token).get("/api/v1/routes").status_code == 200
    again = browser.get("/tokens/").content.decode()
    assert token not in again and "laptop" in again and ApiToken.objects.get().token_key in again


def test_the_tokens_page_revokes_ones_own_token(browser):
    token = browser.post("/tokens/", {"name": "laptop"}).context["created"]["token"]
    response = browser.post(f"/tokens/{ApiToken.objects.get().token_key}/revoke/")
    assert response.status_code == 302
    assert api_as(token).get("/api/v1/routes").status_code == 401
    assert "laptop" not in browser.get("/tokens/").content.decode()


def test_nobody_revokes_or_sees_another_users_token(browser, admin_user):
    create_by_cli("--user", "alice", "--name", "alices-ci")
    token_key = ApiToken.objects.get().token_key
    assert "alices-ci" not in browser.get("/tokens/").content.decode()
    assert browser.post(f"/tokens/{token_key}/revoke/").status_code == 404
    assert ApiToken.objects.count() == 1


@pytest.mark.parametrize("data", [{"name": ""}, {"name": "x", "days": "9999"}, {"name": "x", "days": "soon"}])
def test_the_tokens_page_refuses_bad_input(browser, data):
    response = browser.post("/tokens/", data)
    assert response.status_code == 400 and response.context["error"]
    assert not ApiToken.objects.exists()


def test_the_tokens_page_needs_a_signed_in_user_with_a_role(outsider_user):
    assert Client().get("/tokens/").status_code == 302
    outsider = Client()
    outsider.force_login(outsider_user)
    assert outsider.get("/tokens/").status_code == 403
    assert outsider.post("/tokens/", {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_staff_see_and_revoke_any_token_in_the_admin_but_never_its_secret(admin_user, viewer_user):
    token = create_by_cli("--user", "victor", "--name", "victors-ci")
    stored = ApiToken.objects.get()
    browser = Client()
    browser.force_login(admin_user)
    listing = browser.get("/admin/routing/apitoken/").content.decode()
    assert "victors-ci" in listing and stored.token_key in listing and token not in listing
    assert "knox" not in browser.get("/admin/").content.decode()
    response = browser.post(f"/admin/routing/apitoken/{stored.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert api_as(token).get("/api/v1/providers").status_code == 401
    assert AuditEvent.objects.filter(object_type="apitoken", action="delete", actor="alice").exists()


def test_a_password_change_ends_every_token_of_that_user_only(admin_user, viewer_user):
    def works(plaintext):
        return api_as(plaintext).get("/api/v1/routes/").status_code == 200

    _, alices = tokens.issue(admin_user, "ci", actor="alice")
    _, victors = tokens.issue(viewer_user, "laptop", actor="victor")
    admin_user.set_password("another-horse-battery-staple")
    admin_user.save()
    assert not works(alices) and works(victors)
    ended = AuditEvent.objects.get(object_type="apitoken", action="delete")
    assert ended.reason == "the password was changed" and ended.before["name"] == "ci"


def test_a_log_in_that_upgrades_the_password_hash_or_another_save_keeps_the_tokens(admin_user, settings):
    token, _ = tokens.issue(admin_user, "ci", actor="alice")
    admin_user.first_name = "Alice"
    admin_user.save()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher", *settings.PASSWORD_HASHERS]
    signed_in = Client().post("/login/", {"username": "alice", "password": "correct-horse-battery"})
    assert signed_in.status_code == 302
    admin_user.refresh_from_db()
    assert admin_user.password.startswith("pbkdf2_sha1$")  # Django re-hashed and saved it at log-in
    assert ApiToken.objects.filter(pk=token.pk).exists()
