"""The dashboard's pages: who may see them, what they show, and that they stay offline-safe."""

import json
import re

import pytest
from django.db import transaction
from django.db.models import F
from django.test import Client
from django.utils import timezone

from routing import weights
from routing.models import Deployment, Route

PAGES = ["/", "/deployments/stable/", "/routes/", "/timeline/"]
DATA = ["/dashboard-data/overview/", "/dashboard-data/deployments/stable/", "/dashboard-data/routes/",
        "/dashboard-data/timeline/"]


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def initial_data(response):
    pattern = r'<script id="initial-data" type="application/json">(.*?)</script>'
    match = re.search(pattern, response.content.decode(), re.S)
    return json.loads(match.group(1))


@pytest.mark.parametrize("url", PAGES + DATA)
def test_staff_and_viewers_see_every_page(url, seeded, admin_user, viewer_user):
    assert signed_in(admin_user).get(url).status_code == 200
    assert signed_in(viewer_user).get(url).status_code == 200


@pytest.mark.parametrize("url", PAGES + DATA)
def test_anonymous_visitors_are_sent_to_the_login_form(url, seeded):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES + DATA)
def test_users_without_a_role_are_refused(url, seeded, outsider_user):
    assert signed_in(outsider_user).get(url).status_code == 403


def test_the_overview_shows_a_tile_per_deployment_with_its_figures_and_health(seeded, viewer_user):
    response = signed_in(viewer_user).get("/")
    page = response.content.decode()
    assert 'data-deployment="stable"' in page and 'data-deployment="canary"' in page
    tiles = {t["name"]: t for t in initial_data(response)["deployments"]}
    assert tiles["canary"]["state"] == "down" and tiles["canary"]["error_rate"] == pytest.approx(0.5)
    assert tiles["stable"]["error_rate"] == 0 and 40 <= tiles["stable"]["p50"] <= 46
    assert "Needs attention" in page and "5 failures in a row" in page  # the problem stands out
    assert "stable 90%" in page and "canary 10%" in page  # every route's split


def test_one_successful_probe_reads_in_the_singular(seeded, viewer_user):
    from probes import health
    from probes.models import ProbeResult, ProbeTarget
    from routing.outcomes import Outcome

    target = ProbeTarget.objects.get(deployment=seeded["stable"], api_key=None)
    result = ProbeResult.objects.create(target=target, deployment=seeded["stable"], api_key=seeded["key"], slot=2,
                                        started_at=timezone.now(), outcome=Outcome.OK, status_code=200, total_ms=40.0)
    with transaction.atomic():
        health.after_probe(target.pk, result)
    client = signed_in(viewer_user)
    for page in (client.get("/").content.decode(), client.get("/timeline/").content.decode()):
        assert "1 consecutive success" in page and "1 consecutive successes" not in page


def test_the_overview_says_what_to_do_when_nothing_exists_yet(admin_user, viewer_user):
    client = signed_in(admin_user)
    page = client.get("/").content.decode()
    assert "No deployments yet" in page and "/admin/routing/provider/add/" in page and "/api/docs/" in page
    assert "No routes yet" in page
    assert client.get("/admin/routing/provider/add/").status_code == 200  # the link leads somewhere
    assert "Ask an administrator" in signed_in(viewer_user).get("/").content.decode()


def test_the_deployment_page_has_charts_window_choices_keys_and_recent_probes(seeded, viewer_user):
    response = signed_in(viewer_user).get("/deployments/canary/?window=15m")
    page = response.content.decode()
    for chart in ("chart-latency", "chart-ttft", "chart-errors", "chart-rps"):
        assert f'id="{chart}"' in page
    for window in ("15m", "1h", "24h", "7d"):
        assert f'href="?window={window}"' in page
    data = initial_data(response)
    assert data["window"] == "15m" and data["series"][-1]["error_rate"] == pytest.approx(0.5)
    assert data["probes"][0]["outcome"] == "server_error" and "HTTP 500" in page
    assert "primary" in page and "sk-…1234" in page


def test_the_deployment_page_shows_its_context_window_and_where_it_came_from(seeded, viewer_user):
    from routing.models import Deployment

    Deployment.objects.filter(name="canary").update(provider_window=32768, catalogue_window=16000,
                                                    catalogue_entry="genai-prices 0.2.5: openai gpt-x",
                                                    windows_note="the provider's GET /models reports 32768 tokens")
    unknown = signed_in(viewer_user).get("/deployments/stable/")
    response = signed_in(viewer_user).get("/deployments/canary/")

    page = response.content.decode()
    assert "32768 tokens" in page and "from provider metadata" in page
    assert "genai-prices 0.2.5: openai gpt-x" in page and "reports 32768 tokens" in page
    context = initial_data(response)["context"]
    assert (context["tokens"], context["source"]) == (32768, "provider_metadata")
    assert [row["source"] for row in context["sources"] if row["used"]] == ["provider_metadata"]
    assert initial_data(unknown)["context"]["source"] == "unknown"
    assert "never held against it" in unknown.content.decode()
    Deployment.objects.filter(name="canary").update(learned_window=20000, learned_window_error="HTTP 400: max 20000")
    fresh = signed_in(viewer_user).get("/dashboard-data/deployments/canary/").json()["context"]
    assert (fresh["tokens"], fresh["source_label"]) == (20000, "learned from the provider's error")


def test_no_page_reveals_a_provider_secret(seeded, admin_user):
    client = signed_in(admin_user)
    for url in PAGES + DATA:
        assert "very-secret" not in client.get(url).content.decode()


def test_an_unknown_window_is_refused_naming_the_field(seeded, viewer_user):
    client = signed_in(viewer_user)
    response = client.get("/dashboard-data/deployments/stable/?window=3y")
    assert response.status_code == 400
    assert response.json() == {"window": ["window must be one of 5m, 15m, 1h, 24h, 7d, not '3y'."]}
    page = client.get("/deployments/stable/?window=3y")
    assert page.status_code == 400 and "window must be one of" in page.content.decode()


def test_an_unknown_deployment_is_404(seeded, viewer_user):
    assert signed_in(viewer_user).get("/deployments/nope/").status_code == 404


def test_the_routes_page_puts_weight_and_live_traffic_side_by_side(seeded, admin_user):
    weights.apply_weights(seeded["route"], {"stable": 80, "canary": 20}, reason="more canary", actor="alice")
    response = signed_in(admin_user).get("/routes/")
    route = initial_data(response)["routes"][0]
    targets = {t["deployment"]: t for t in route["targets"]}
    assert targets["canary"]["weight"] == 20 and targets["canary"]["share"] == pytest.approx(0.1)
    assert targets["canary"]["error_rate"] == pytest.approx(0.5) and targets["stable"]["error_rate"] == 0
    assert route["history"][0]["actor"] == "alice" and route["history"][0]["reason"] == "more canary"
    page = response.content.decode()
    assert "canary 10→20%" in page and "more canary" in page


def test_the_routes_page_says_where_a_route_continues_broken_streams(seeded, admin_user):
    page = signed_in(admin_user).get("/routes/").content.decode()
    assert "Broken streams: end with an error event until a probe verifies" in page  # the default, none verified
    Deployment.objects.filter(name="canary").update(prefill_support="verified", prefill_model=F("upstream_model"))
    response = signed_in(admin_user).get("/routes/")
    assert "Broken streams: continued from an assistant prefill on canary (prefill verified" in \
        response.content.decode()
    assert initial_data(response)["routes"][0]["continues_on"] == ["canary"]
    Route.objects.filter(pk=seeded["route"].pk).update(continue_streams="off")
    response = signed_in(admin_user).get("/routes/")
    assert "Broken streams: end with an error event (continuation off)" in response.content.decode()
    assert initial_data(response)["routes"][0]["continue_streams"] == "off"


def test_the_deployment_page_shows_its_prefill_support(seeded, admin_user):
    page = signed_in(admin_user).get("/deployments/canary/").content.decode()
    assert "Continues an assistant prefill: <strong>unknown</strong> (not checked yet)" in page
    Deployment.objects.filter(name="canary").update(prefill_support="refused", prefill_model=F("upstream_model"),
                                                    prefill_checked_at=timezone.now(),
                                                    prefill_detail="refused the prefill (400): no final assistant")
    response = signed_in(admin_user).get("/deployments/canary/")
    assert "Continues an assistant prefill: <strong>refused</strong>, checked" in response.content.decode()
    assert initial_data(response)["prefill"]["detail"] == "refused the prefill (400): no final assistant"


def test_a_deployment_serving_two_routes_counts_each_routes_own_traffic(seeded, admin_user):
    from probes.models import Rollup, Source
    from routing.models import Route, RouteTarget

    other = Route.objects.create(name="chat-b")
    RouteTarget.objects.create(route=other, deployment=seeded["stable"], weight=100)
    minute = timezone.now().replace(second=0, microsecond=0)
    Rollup.objects.create(minute=minute, source=Source.TRAFFIC, deployment=seeded["stable"], route=other, count=30,
                          ok=30)
    routes = {r["name"]: r for r in initial_data(signed_in(admin_user).get("/routes/"))["routes"]}
    chat = {t["deployment"]: t for t in routes["chat"]["targets"]}
    assert chat["stable"]["count"] == 90 and chat["stable"]["share"] == pytest.approx(0.9)
    assert routes["chat-b"]["targets"][0]["count"] == 30 and routes["chat-b"]["targets"][0]["share"] == 1.0


def test_staff_get_enabled_split_controls(seeded, admin_user):
    page = signed_in(admin_user).get("/routes/").content.decode()
    controls = re.findall(r"<input[^>]*type=\"(?:range|number|text)\"[^>]*>", page)
    assert len(controls) == 6  # two sliders, two numbers, the split's reason, the fallbacks' reason
    assert not any("disabled" in c for c in controls)
    assert 'data-version="1"' in page


def test_viewers_see_the_split_but_no_enabled_control(seeded, viewer_user):
    page = signed_in(viewer_user).get("/routes/").content.decode()
    main = page.split('<main id="main">', 1)[1]
    controls = re.findall(r"<(?:input|button)\b[^>]*>", main)
    assert len(controls) == 9  # two sliders, two numbers, two drains, the reason, apply, revert
    assert all(re.search(r"\sdisabled[\s>]", c) for c in controls), controls
    assert "stable" in main and "90%" in main and "Read-only" in page


def test_the_routes_page_explains_how_to_add_a_route(admin_user):
    page = signed_in(admin_user).get("/routes/").content.decode()
    assert "No routes yet" in page and "POST /api/v1/routes/" in page


def test_the_timeline_lists_events_newest_first(seeded, viewer_user):
    weights.apply_weights(seeded["route"], {"stable": 80, "canary": 20}, reason="first", actor="alice")
    weights.apply_weights(seeded["route"], {"stable": 75, "canary": 25}, reason="second", actor="alice")
    response = signed_in(viewer_user).get("/timeline/")
    messages = [e["message"] for e in initial_data(response)["events"]]
    assert messages == ["chat: canary 20→25, stable 80→75", "chat: canary 10→20, stable 90→80"]
    assert messages[0] in response.content.decode()


def test_the_timeline_says_so_when_empty(viewer_user):
    page = signed_in(viewer_user).get("/timeline/").content.decode()
    assert "Nothing has happened yet" in page and 'id="empty-state" hidden' not in page


def test_chartjs_is_served_locally(admin_user):
    response = Client().get("/static/vendor/chartjs/chart.umd.min.js")
    assert response.status_code == 200
    assert b"Chart.js v4" in b"".join(response.streaming_content)


def test_no_page_loads_anything_from_another_host(seeded, admin_user):
    client = signed_in(admin_user)
    for url in PAGES + ["/login/"]:
        page = client.get(url).content.decode()
        references = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert references, url
        assert all(ref.startswith(("/", "?", "#")) for ref in references), (url, references)
    assert 'src="/static/vendor/chartjs/chart.umd.min.js"' in client.get("/deployments/stable/").content.decode()


def test_deployment_names_with_a_slash_have_working_pages(seeded, viewer_user):
    from routing.models import Deployment

    Deployment.objects.create(name="openai/gpt-4o", provider=seeded["provider"], upstream_model="gpt-4o")
    client = signed_in(viewer_user)
    assert 'href="/deployments/openai/gpt-4o/"' in client.get("/").content.decode()
    assert client.get("/deployments/openai/gpt-4o/").status_code == 200
    assert client.get("/dashboard-data/deployments/openai/gpt-4o/?window=7d").json()["name"] == "openai/gpt-4o"


def test_the_routes_page_shows_the_fallback_chain_in_order(seeded, viewer_user):
    from routing.models import Deployment

    Deployment.objects.create(name="spare", provider=seeded["stable"].provider, upstream_model="fast", enabled=True)
    weights.apply_weights(seeded["route"], {"stable": 100, "canary": 0}, fallbacks=["canary", "spare"],
                          reason="canary on failure", actor="alice")
    Deployment.objects.filter(name="spare").update(enabled=False)

    response = signed_in(viewer_user).get("/routes/")

    route = initial_data(response)["routes"][0]
    assert [(f["position"], f["deployment"], f["enabled"]) for f in route["fallbacks"]] == [
        (1, "canary", True), (2, "spare", False)]
    chain = re.search(r'<ol class="fallback-chain">(.*?)</ol>', response.content.decode(), re.S).group(1)
    assert re.findall(r'data-deployment="([^"]+)"', chain) == ["canary", "spare"] and "disabled" in chain


def test_the_routes_page_says_when_a_route_has_no_fallbacks(seeded, viewer_user):
    page = signed_in(viewer_user).get("/routes/").content.decode()
    assert "Fallbacks: none." in page


def page_session(user):
    """A browser-like client (CSRF enforced) that has loaded the routes page; returns (client, page)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client, client.get("/routes/").content.decode()


def put_fallbacks(client, page, fallbacks, reason="spare for outages"):
    """PUT the chain the way routes.js does: JSON, the CSRF token, If-Match with the form's version."""
    version = re.search(r'<form class="fallback-form" data-route="chat" data-version="(\d+)"', page).group(1)
    return client.put("/api/v1/routes/chat/fallbacks", json.dumps({"fallbacks": fallbacks, "reason": reason}),
                      content_type="application/json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
                      HTTP_IF_MATCH=f'"{version}"')


def chain_of(page):
    return re.findall(r'data-deployment="([^"]+)"', re.search(r'<ol class="fallback-chain">(.*?)</ol>', page, re.S)[1])


def test_staff_edit_the_fallback_chain_from_the_routes_page(seeded, admin_user, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    from routing.models import AuditEvent, Deployment

    for name in ("spare", "backup"):
        Deployment.objects.create(name=name, provider=seeded["provider"], upstream_model="fast")
    client, page = page_session(admin_user)
    editor = re.search(r'<form class="fallback-form".*?</form>', page, re.S).group(0)
    assert '<option value="spare">spare</option>' in editor and 'name="reason"' in editor
    sent = []
    monkeypatch.setattr("routing.weights.live.weights_changed", sent.append)

    with django_capture_on_commit_callbacks(execute=True):
        response = put_fallbacks(client, page, ["backup", "spare"])

    assert response.status_code == 200, response.content
    assert Route.objects.get(name="chat").fallback_chain() == ["backup", "spare"]
    change = AuditEvent.objects.filter(action="weights").first()
    assert (change.actor, change.reason) == ("alice", "spare for outages")
    assert change.after["fallbacks"] == ["backup", "spare"]
    assert [(p.version, p.fallbacks) for p in sent] == [(2, ["backup", "spare"])]  # open pages redraw the chain
    page = client.get("/routes/").content.decode()
    assert chain_of(page) == ["backup", "spare"]
    editor = re.search(r'<ol class="fallback-edit">(.*?)</ol>', page, re.S).group(1)
    assert re.findall(r'<li data-deployment="([^"]+)"', editor) == ["backup", "spare"]
    assert "fallbacks none ⇒ backup → spare" in page  # the history row says what changed


@pytest.mark.parametrize("fallbacks, field, says", [
    (["nope"], "fallbacks.nope", "no deployment named"),
    (["stable"], "fallbacks.stable", "weight 90"),
])
def test_a_bad_fallback_from_the_page_is_a_clear_400_and_changes_nothing(seeded, admin_user, fallbacks, field, says):
    from routing.models import AuditEvent

    client, page = page_session(admin_user)

    response = put_fallbacks(client, page, fallbacks)

    assert response.status_code == 400
    assert says in " ".join(response.json()[field])
    route = Route.objects.get(name="chat")
    assert (route.version, route.fallback_chain()) == (1, [])
    assert not AuditEvent.objects.filter(action="weights").exists()
    assert "Fallbacks: none." in client.get("/routes/").content.decode()


def test_a_fallback_edit_from_a_stale_page_is_refused(seeded, admin_user):
    client, page = page_session(admin_user)
    weights.apply_weights(seeded["route"], {"stable": 80, "canary": 20}, reason="meanwhile", actor="bob")

    response = put_fallbacks(client, page, ["canary"])

    assert response.status_code == 409
    assert Route.objects.get(name="chat").fallback_chain() == []


def test_viewers_see_the_chain_but_get_no_editor_and_cannot_change_it(seeded, viewer_user):
    weights.apply_weights(seeded["route"], {"stable": 100, "canary": 0}, fallbacks=["canary"], reason="spare",
                          actor="alice")
    client, page = page_session(viewer_user)
    assert chain_of(page) == ["canary"]
    assert "fallback-form" not in page and "fallback-edit" not in page

    response = client.put("/api/v1/routes/chat/fallbacks", json.dumps({"fallbacks": [], "reason": "sneaky"}),
                          content_type="application/json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)

    assert response.status_code == 403
    assert Route.objects.get(name="chat").fallback_chain() == ["canary"]
