"""Logged request and response bodies need their own permission (routing.view_request_bodies): without it the
API and the admin show the request log without them, and say so."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from routing.models import RequestLog
from tests.conftest import _token_client
from tests.routing.test_permissions import user_with

pytestmark = pytest.mark.django_db
PROMPT = "my secret launch plan"
ANSWER = "tok0 tok1 about the launch"


@pytest.fixture
def logged():
    return RequestLog.objects.create(request_id="req_1", route_name="chat", outcome="ok", status=200,
                                     request_body={"messages": [{"role": "user", "content": PROMPT}]},
                                     response_body=ANSWER)


def rows(api):
    response = api.get("/api/v1/request-log/")
    assert response.status_code == 200
    return response.json()["results"]


def test_viewers_read_the_log_without_its_bodies_and_are_told_so(logged, viewer_api):
    [row] = rows(viewer_api)
    assert row["request_id"] == "req_1" and row["status"] == 200
    assert (row["request_body"], row["response_body"], row["bodies_shown"]) == (None, "", False)
    detail = viewer_api.get(f"/api/v1/request-log/{logged.pk}/").content.decode()
    assert PROMPT not in detail and ANSWER not in detail


def test_staff_without_the_body_permission_do_not_see_bodies_either(logged):
    [row] = rows(_token_client(user_with("stan")))
    assert row["bodies_shown"] is False and row["request_body"] is None


def test_the_body_permission_shows_the_bodies(logged, viewer_user):
    viewer_user.user_permissions.add(Permission.objects.get(codename="view_request_bodies"))
    [row] = rows(_token_client(viewer_user))
    assert row["bodies_shown"] is True
    assert row["request_body"]["messages"][0]["content"] == PROMPT and row["response_body"] == ANSWER


def test_superusers_see_the_bodies(logged, admin_api):
    [row] = rows(admin_api)
    assert row["bodies_shown"] is True and row["response_body"] == ANSWER


def test_the_admin_shows_bodies_only_with_the_permission(logged):
    reader = user_with("rhea", "routing.view_requestlog")
    browser = Client()
    browser.force_login(reader)
    page = browser.get(f"/admin/routing/requestlog/{logged.pk}/change/")
    assert page.status_code == 200 and "req_1" in page.content.decode() and ANSWER not in page.content.decode()
    browser.force_login(user_with("bea", "routing.view_requestlog", "routing.view_request_bodies"))
    assert ANSWER in browser.get(f"/admin/routing/requestlog/{logged.pk}/change/").content.decode()
