"""A provider secret, once stored, appears nowhere: not in any API response,
admin page, dashboard page, header, log line (SQL included), audit row,
event or other database row.

The pages are found by walking the URL resolver and the admin registry, so
endpoints and models added later are covered without touching this file.
"""

import json
import re
import uuid

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admindocs.views import simplify_regex
from django.contrib.sessions.models import Session
from django.core import serializers
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from routing.models import ApiKey, Deployment, DeploymentCircuit, Event, Provider, Route
from tests.routing.test_admin import admin_form_data

pytestmark = pytest.mark.django_db

SKIPPED_PATHS = ("/logout/",)  # GET is refused there and it would end the session
PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>")


def new_marker():
    return f"sk-MARKER-{uuid.uuid4().hex}"


# --- Walking every page -----------------------------------------------------------------------


def url_patterns(patterns=None, prefix=""):
    """Yield (path template like /api/v1/routes/<name>, view callback) for every URL pattern."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from url_patterns(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield simplify_regex(route), pattern.callback


def lookup_values(callback, parameter):
    """Values that fill `parameter`: the lookup values of a DRF view's objects, else every name and id."""
    view = getattr(callback, "cls", None)
    queryset = getattr(view, "queryset", None)
    if queryset is not None and parameter == (view.lookup_url_kwarg or view.lookup_field):
        return [str(v) for v in queryset.model._default_manager.values_list(view.lookup_field, flat=True)[:3]]
    names = [m.objects.values_list("name", flat=True) for m in (Provider, Deployment, Route)]
    ids = [str(pk) for m in (ApiKey, Deployment, Route, Event) for pk in m.objects.values_list("pk", flat=True)[:2]]
    return [n for group in names for n in group] + ids


def concrete_urls(path, callback):
    """Return the URLs of `path` with every parameter filled by each candidate value."""
    parameters = [m.group("name") for m in PARAMETER.finditer(path)]
    if not parameters:
        return [path]
    if len(parameters) > 1:
        return []  # none today; fill them when a page needs two
    return [PARAMETER.sub(value, path) for value in lookup_values(callback, parameters[0])]


def site_urls():
    """(api urls, page urls) of everything outside the admin."""
    api, pages = [], []
    for path, callback in url_patterns():
        if path.startswith("/admin/") or path in SKIPPED_PATHS:
            continue
        (api if path.startswith("/api/") else pages).extend(concrete_urls(path, callback))
    return sorted(set(api)), sorted(set(pages))


def admin_urls():
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        urls += [reverse(f"{name}_changelist"), reverse(f"{name}_add")]
        for pk in model._default_manager.values_list("pk", flat=True)[:2]:
            urls += [reverse(f"{name}_change", args=[pk]), reverse(f"{name}_history", args=[pk]),
                     reverse(f"{name}_delete", args=[pk])]
    return urls


def everything_said(response):
    """The body, headers and cookies of `response` as one text."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    headers = json.dumps(dict(response.headers.items()))
    return body.decode(errors="replace") + headers + str(response.cookies)


def crawl(api_client, browser):
    """GET every API endpoint (JSON, browsable HTML, OPTIONS), admin page and dashboard page.

    Returns {url: (status, text said)}.
    """
    api, pages = site_urls()
    seen = {}
    for url in api:
        seen[url] = _said(api_client.get(url, HTTP_ACCEPT="application/json"))
        seen[f"{url} [html]"] = _said(api_client.get(url, HTTP_ACCEPT="text/html"))
        seen[f"{url} [options]"] = _said(api_client.options(url, HTTP_ACCEPT="application/json"))
    for url in admin_urls() + pages:
        seen[url] = _said(browser.get(url))
    return seen


def _said(response):
    return response.status_code, everything_said(response)


def database_text():
    """Every row of every table (sessions decoded) as one text, plus a raw read of the key table."""
    rows = [serializers.serialize("json", model._default_manager.all()) for model in apps.get_models()]
    rows += [json.dumps(session.get_decoded()) for session in Session.objects.all()]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM routing_apikey")
        rows.append(repr(cursor.fetchall()))
    return "\n".join(rows)


def assert_nowhere(markers, seen, caplog):
    leaks = [f"{url} ({status})" for url, (status, text) in seen.items() if any(m in text for m in markers)]
    assert not leaks, f"a secret appears in: {leaks}"
    broken = [f"{url} ({status})" for url, (status, _) in seen.items() if status >= 500]
    assert not broken, f"pages failed: {broken}"
    assert not [m for m in markers if m in caplog.text], "a secret appears in the logs"
    assert not [m for m in markers if m in database_text()], "a secret appears in a database row"


# --- The test ------------------------------------------------------------------------------------


@pytest.fixture
def browser(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def build_registry(api, marker):
    """Set up a provider, a key (secret = `marker`, sent through the API), deployments,
    a route with a weights change, a gateway key, an event and a circuit."""
    created = api.post("/api/v1/providers/", {"name": "sim", "base_url": "http://127.0.0.1:9/v1"}, format="json")
    assert created.status_code == 201
    created = api.post("/api/v1/keys/", {"provider": "sim", "label": "main", "secret": marker}, format="json")
    assert created.status_code == 201 and marker not in everything_said(created)
    for name in ("stable", "canary"):
        api.post("/api/v1/deployments/", {"name": name, "provider": "sim", "upstream_model": name}, format="json")
    targets = [{"deployment": "stable", "weight": 90}, {"deployment": "canary", "weight": 10}]
    assert api.post("/api/v1/routes/", {"name": "chat", "targets": targets}, format="json").status_code == 201
    api.put("/api/v1/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "ramp"}, format="json")
    api.post("/api/v1/gateway-keys/", {"name": "app"}, format="json")
    key = ApiKey.objects.get()
    Event.objects.create(kind="key_rate_limited", api_key=key, deployment=Deployment.objects.get(name="canary"),
                         message="429")
    DeploymentCircuit.objects.create(deployment=Deployment.objects.get(name="canary"), state="open", reason="errors")
    return key


def test_a_provider_secret_appears_nowhere(admin_api, browser, logged_sql):
    first, patched, from_admin = new_marker(), new_marker(), new_marker()
    key = build_registry(admin_api, first)
    assert key.reveal() == first

    seen = crawl(admin_api, browser)
    assert seen[f"/api/v1/keys/{key.pk}/"][0] == 200 and first[-4:] in seen[f"/api/v1/keys/{key.pk}/"][1]
    assert seen[reverse("admin:routing_apikey_change", args=[key.pk])][0] == 200
    assert len([url for url in seen if url.startswith("/api/v1/")]) >= 3 * 20
    assert_nowhere([first], seen, logged_sql)

    rotated = admin_api.patch(f"/api/v1/keys/{key.pk}", {"secret": patched}, format="json")
    assert rotated.status_code == 200 and patched not in everything_said(rotated)
    change_url = reverse("admin:routing_apikey_change", args=[key.pk])
    saved = browser.post(change_url, admin_form_data(browser.get(change_url)) | {"secret": from_admin})
    assert saved.status_code == 302 and ApiKey.objects.get().reveal() == from_admin

    assert_nowhere([first, patched, from_admin], crawl(admin_api, browser), logged_sql)
    assert "INSERT INTO" in logged_sql.text  # the SQL log really was captured


def test_alert_channel_targets_and_signing_secrets_appear_nowhere(admin_api, browser, logged_sql, settings):
    """Apprise URLs, webhook URLs and secrets, email recipients: through the API and the admin, into failed
    deliveries whose receiver echoes them back, then every page, log line and row is searched."""
    from dashboard.alerts.models import Channel, Delivery
    from tests.dashboard.alerts.receivers import Receiver

    settings.ALLOW_PRIVATE_UPSTREAMS = True
    # Not sk-… shaped: the generic patterns of routing.outcomes.redact would hide those anyway.
    markers = [f"chanMARKER{uuid.uuid4().hex}" for _ in range(6)]
    apprise_url, hook_path, signing, recipient, new_path, new_signing = markers
    def echo(request):  # a receiver that repeats what it was sent: the path, the query, the headers
        said = f"bad request {request.path} {json.dumps(request.headers)} {request.body.decode()}"
        return json.dumps({"error": {"message": said}}).encode()

    with Receiver(500, reply=echo) as hook:
        bodies = [
            {"name": "ntfy", "kind": "apprise", "target": f"json://{apprise_url}:{apprise_url}@127.0.0.1:"
             f"{hook.url.rsplit(':', 1)[1]}/{apprise_url}?token={apprise_url}"},
            {"name": "hook", "kind": "webhook", "target": f"{hook.url}/h/{hook_path}?key={hook_path}",
             "secret": signing},
            {"name": "mail", "kind": "email", "target": f"{recipient}@example.com"},
        ]
        for body in bodies:
            created = admin_api.post("/api/v1/alert-channels/", body, format="json")
            assert created.status_code == 201 and not [m for m in markers if m in everything_said(created)]
            tested = admin_api.post(f"/api/v1/alert-channels/{created.json()['id']}/test/")
            assert tested.status_code == 200 and not [m for m in markers if m in everything_said(tested)]
        webhook = Channel.objects.get(name="hook")
        change_url = reverse("admin:alerts_channel_change", args=[webhook.pk])
        form = admin_form_data(browser.get(change_url))
        saved = browser.post(change_url, form | {"target": f"{hook.url}/n/{new_path}", "secret": new_signing})
        assert saved.status_code == 302 and Channel.objects.get(pk=webhook.pk).reveal_secret() == new_signing
        admin_api.post(f"/api/v1/alert-channels/{webhook.pk}/test/")
    failed = Delivery.objects.filter(outcome="failed")
    assert failed.count() == 3 and all(row.error for row in failed.exclude(channel__kind="email"))

    seen = crawl(admin_api, browser)
    assert seen[f"/api/v1/alert-channels/{webhook.pk}/"][0] == 200
    assert seen[reverse("admin:alerts_channel_change", args=[webhook.pk])][0] == 200
    assert seen["/alerts/channels/"][0] == 200
    assert_nowhere(markers, seen, logged_sql)
