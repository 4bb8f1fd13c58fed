"""Browser-facing hardening: a strict Content-Security-Policy, the API docs behind the API's rule,
Django's password validators."""

import re
from pathlib import Path

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

from tests.dashboard.test_pages import PAGES, signed_in

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
INLINE = re.compile(r"<script(?![^>]*\b(src|type=\"application/json\"))[^>]*>|\bstyle=|\son[a-z]+=", re.IGNORECASE)


def policy(response):
    return dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))


@pytest.mark.parametrize("url", [*PAGES, "/admin/", "/admin/routing/route/"])
def test_every_page_is_served_with_a_strict_content_security_policy(url, seeded, admin_user):
    csp = policy(signed_in(admin_user).get(url))
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["default-src"] == "'self'"
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"


def test_the_login_page_has_the_policy_too(db):
    assert policy(Client().get("/login/"))["script-src"] == "'self'"


# A load test's HTML report is a self-contained file, downloaded as an attachment and opened from disk
# (offline, so Chart.js is inlined): no page of the app serves it, and no policy of the app applies to it.
STANDALONE = {TEMPLATES / "loadtest" / "report.html"}


@pytest.mark.parametrize("template", sorted(set(TEMPLATES.rglob("*.html")) - STANDALONE), ids=lambda p: p.name)
def test_no_template_has_inline_scripts_styles_or_handlers(template):
    """The policy allows none: an inline script would silently not run in the browser."""
    assert not INLINE.search(template.read_text()), template


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_the_schema_and_docs_follow_the_api_rule(url, viewer_api, anon_api, outsider_api):
    assert anon_api.get(url).status_code == 401
    assert outsider_api.get(url).status_code == 403
    assert viewer_api.get(url).status_code == 200


def test_the_docs_pages_relax_the_policy_only_for_themselves(viewer_api):
    csp = policy(viewer_api.get("/api/docs/"))
    assert "'unsafe-inline'" in csp["style-src"] and csp["script-src"] == "'self'"


@pytest.mark.parametrize("password", ["12345678901234567", "alice-example-com", "password1234"])
def test_weak_passwords_are_refused(password, admin_user):
    with pytest.raises(ValidationError):
        validate_password(password, admin_user)


def test_a_long_unrelated_password_is_accepted(admin_user):
    validate_password("ochre-lantern-quietly-91", admin_user)
