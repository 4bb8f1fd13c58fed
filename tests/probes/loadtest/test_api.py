"""/api/v1/load-tests/: estimate, start, watch, stop and download; viewers read, staff run; bad input is named."""

from decimal import Decimal

import pytest

from probes.loadtest.models import LoadTestRun
from routing.models import Deployment
from tests.routing.gateway.helpers import make_provider, make_route, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/load-tests/"


@pytest.fixture
def registry(sim, settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    provider = make_provider(sim)
    make_route("chat", provider, {"cheap": ("fast", 50), "dear": ("fast", 50), "off": ("fast", 0)})
    Deployment.objects.filter(name="dear").update(input_price_per_mtok=Decimal(3), output_price_per_mtok=Decimal(10))
    Deployment.objects.filter(name="off").update(input_price_per_mtok=Decimal(100), output_price_per_mtok=Decimal(100))
    return provider


def direct(**extra):
    return {"deployment": "cheap", "profile": "concurrent", "concurrency": [2], "requests": 10, "max_tokens": 8,
            **extra}


def finished(run_id, timeout=15):
    return wait_until(lambda: not LoadTestRun.objects.get(pk=run_id).active, timeout=timeout)


ESTIMATE = {"route": "chat", "prompts": "synthetic", "input_tokens": 100, "max_tokens": 50, "requests": 1000}


def test_without_confirm_it_only_estimates_the_maximum_spend_of_the_dearest_active_target(admin_api, registry,
                                                                                           settings):
    settings.GATEWAY_RETRIES_PER_TARGET, settings.GATEWAY_MAX_ATTEMPTS = 1, 6
    response = admin_api.post(URL, ESTIMATE, format="json")
    assert response.status_code == 200
    # "dear": (100 × $3 + 50 × $10) / 1M = $0.0008 a call, × 1,000; "off" has weight 0 and cannot be reached.
    # Each request may cost up to 4 calls: 2 targets × (1 try + 1 retry), under the gateway's 6 attempts.
    assert Decimal(response.json()["estimated_max_cost"]) == Decimal("0.8") * 4
    assert not LoadTestRun.objects.exists()


def test_the_estimate_counts_a_dearer_fallback_and_a_rollouts_shadow_copies(admin_api, registry, settings):
    from routing.models import Route, RouteFallback
    from routing.rollouts.models import Rollout, RolloutState

    settings.GATEWAY_RETRIES_PER_TARGET, settings.GATEWAY_MAX_ATTEMPTS = 0, 6
    settings.LOADTEST_MAX_SPEND = 1000.0
    route = Route.objects.get(name="chat")
    spare = Deployment.objects.create(name="spare", provider=registry, upstream_model="fast",
                                      input_price_per_mtok=Decimal(10), output_price_per_mtok=Decimal(20))
    RouteFallback.objects.create(route=route, deployment=spare, position=1)
    # spare: (100 × $10 + 50 × $20) / 1M = $0.002 a call; 3 options (cheap, dear, spare), no retries: 3 calls
    assert Decimal(admin_api.post(URL, ESTIMATE, format="json").json()["estimated_max_cost"]) == Decimal("6")
    Rollout.objects.create(route=route, canary=Deployment.objects.get(name="off"), state=RolloutState.RUNNING,
                           plan=[{"shadow": 50, "min_dwell_s": 60}, {"weight": 10, "min_dwell_s": 60}])
    # the canary "off" ((100 × $100 + 50 × $100) / 1M = $0.015 a call) may now get weight: 4 options, 4 calls;
    # and each request may be mirrored to it once
    assert Decimal(admin_api.post(URL, ESTIMATE, format="json").json()["estimated_max_cost"]) == Decimal("75")


def test_a_direct_run_is_one_call_a_request(admin_api, registry):
    body = {"deployment": "dear", "prompts": "synthetic", "input_tokens": 100, "max_tokens": 50, "requests": 1000}
    assert Decimal(admin_api.post(URL, body, format="json").json()["estimated_max_cost"]) == Decimal("0.8")


@pytest.mark.parametrize("confirm", [False, True])
def test_a_run_over_the_servers_spend_cap_is_refused_naming_requests(admin_api, registry, settings, confirm):
    settings.LOADTEST_MAX_SPEND = 1.0
    response = admin_api.post(URL, {**ESTIMATE, "confirm": confirm}, format="json")
    assert response.status_code == 400
    assert "WEATHERVANE_LOADTEST_MAX_SPEND" in response.json()["requests"][0]
    assert not LoadTestRun.objects.exists()


def test_staff_start_a_run_that_finishes_with_its_figures(admin_api, registry):
    response = admin_api.post(URL, direct(confirm=True, thresholds=["error_rate < 1%"]), format="json")
    assert response.status_code == 201
    run_id = response.json()["id"]
    assert response.json()["estimated_max_cost"]
    assert finished(run_id)
    body = admin_api.get(f"{URL}{run_id}/").json()
    assert body["status"] == "finished" and body["passed"] is True
    assert body["summary"]["count"] == 10 and body["summary"]["ok"] == 10
    assert body["created_by"] == "alice"
    assert "samples" not in body["summary"]


def test_a_running_test_can_be_stopped_and_keeps_what_it_measured(admin_api, registry):
    long = direct(confirm=True, profile="constant", rate=5, requests=10000, duration_s=120)
    run_id = admin_api.post(URL, long, format="json").json()["id"]
    assert wait_until(lambda: LoadTestRun.objects.get(pk=run_id).progress.get("done", 0) >= 3, timeout=10)
    assert admin_api.post(f"{URL}{run_id}/stop/").status_code == 200
    assert finished(run_id, timeout=5)
    run = LoadTestRun.objects.get(pk=run_id)
    assert run.status == "stopped"
    assert 3 <= run.summary()["count"] < 100
    assert admin_api.post(f"{URL}{run_id}/stop/").status_code == 409


def test_only_one_run_at_a_time(admin_api, registry):
    first = admin_api.post(URL, direct(confirm=True, profile="constant", rate=2, requests=1000), format="json").json()
    second = admin_api.post(URL, direct(confirm=True), format="json")
    assert second.status_code == 409
    assert f"#{first['id']}" in second.json()["detail"]
    admin_api.post(f"{URL}{first['id']}/stop/")
    assert finished(first["id"])


def test_the_report_comes_as_json_csv_or_offline_html(admin_api, registry):
    run_id = admin_api.post(URL, direct(confirm=True, requests=4), format="json").json()["id"]
    assert finished(run_id)
    csv_text = admin_api.get(f"{URL}{run_id}/report/?kind=csv").content.decode()
    assert csv_text.splitlines()[0].startswith("phase,at,outcome")
    assert len(csv_text.splitlines()) == 5
    html = admin_api.get(f"{URL}{run_id}/report/?kind=html")
    assert html["Content-Type"].startswith("text/html") and b"Chart.js" in html.content
    assert admin_api.get(f"{URL}{run_id}/report/?kind=pdf").status_code == 400
    assert b"sk-test-key-0001" not in admin_api.get(f"{URL}{run_id}/report/?kind=json").content


def test_viewers_read_but_cannot_start_or_stop(viewer_api, registry):
    assert viewer_api.get(URL).status_code == 200
    assert viewer_api.post(URL, direct(confirm=True), format="json").status_code == 403
    run = LoadTestRun.objects.create(target_label="deployment:cheap", settings={}, status="running")
    assert viewer_api.post(f"{URL}{run.pk}/stop/").status_code == 403
    assert not LoadTestRun.objects.get(pk=run.pk).stop_requested
    assert viewer_api.get(f"{URL}{run.pk}/").json()["status"] == "running"


def test_outsiders_and_anonymous_callers_see_nothing(outsider_api, anon_api, registry):
    assert outsider_api.get(URL).status_code == 403
    assert anon_api.get(URL).status_code in (401, 403)
    assert outsider_api.post(URL, direct(confirm=True), format="json").status_code == 403
    assert not LoadTestRun.objects.exists()


@pytest.mark.parametrize("body, field", [
    ({"route": "chat", "deployment": "cheap"}, "route"),
    ({"route": "nope"}, "route"),
    ({"deployment": "cheap", "profile": "poisson"}, "rate"),
    ({"deployment": "cheap", "profile": "stages"}, "stages"),
    ({"deployment": "cheap", "stages": [[0, 5]], "profile": "stages"}, "stages"),
    ({"deployment": "cheap", "requests": 0}, "requests"),
    ({"deployment": "cheap", "requests": 1_000_000}, "requests"),
    ({"deployment": "cheap", "concurrency": ["4"]}, "concurrency"),
    ({"deployment": "cheap", "thresholds": ["p95(ttft) > soon"]}, "thresholds"),
    ({"deployment": "cheap", "slos": {"latency": 100}}, "slos"),
    ({"deployment": "cheap", "prompts": "jsonl", "prompts_jsonl": "{not json"}, "prompts_jsonl"),
    ({"deployment": "cheap", "sleep": 1}, "sleep"),
])
def test_bad_input_is_refused_naming_the_field_and_starts_nothing(admin_api, registry, body, field):
    response = admin_api.post(URL, {**body, "confirm": True}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not LoadTestRun.objects.exists()


@pytest.mark.parametrize("body, field, says", [
    ({"stages": [[1e30, 5]], "profile": "stages"}, "stages", "A stage lasts at most 3600 s"),
    ({"slos": {"ttft": 1e30}}, "slos", "less than or equal to 600000"),
    ({"seed": 10**30}, "seed", "less than or equal to 4294967295"),
    ({"duration_s": 1e30}, "duration_s", "less than or equal to 3600"),
    ({"timeout_s": 1e30}, "timeout_s", "less than or equal to 600"),
])
def test_absurd_durations_are_refused_with_their_bound(admin_api, registry, body, field, says):
    response = admin_api.post(URL, {"deployment": "cheap", **body, "confirm": True}, format="json")
    assert response.status_code == 400 and says in str(response.json()[field])
    assert not LoadTestRun.objects.exists()


def test_a_run_left_running_by_a_stopped_server_does_not_block_new_ones(admin_api, registry):
    from datetime import timedelta

    from django.utils import timezone

    LoadTestRun.objects.create(target_label="deployment:cheap", settings={"duration_s": 60}, status="running",
                               started_at=timezone.now() - timedelta(hours=1))
    response = admin_api.post(URL, direct(confirm=True, requests=2), format="json")
    assert response.status_code == 201
    assert finished(response.json()["id"])
    abandoned = LoadTestRun.objects.exclude(pk=response.json()["id"]).get()
    assert abandoned.status == "failed" and "abandoned" in abandoned.error


# --- where a route run goes: configuration only, never the caller's Host header -------------------------------

@pytest.fixture
def no_gateway_address(settings, monkeypatch):
    from probes.loadtest import jobs

    settings.LOADTEST_GATEWAY_URL = settings.GATEWAY_URL = ""
    settings.ALLOWED_HOSTS = ["*"]
    monkeypatch.setitem(jobs._served_gateway, "url", "")
    started = []
    monkeypatch.setattr(jobs.Job, "start", lambda job: started.append(job.gateway_url))
    return started


def test_a_route_run_without_a_configured_gateway_is_refused_whatever_the_host_header(admin_api, registry,
                                                                                      no_gateway_address):
    body = {"route": "chat", "requests": 5, "confirm": True}
    response = admin_api.post(URL, body, format="json", HTTP_HOST="127.0.0.1:6379")
    assert response.status_code == 400
    assert "WEATHERVANE_LOADTEST_GATEWAY_URL" in response.json()["route"][0]
    assert not LoadTestRun.objects.exists() and no_gateway_address == []


def test_a_route_run_goes_to_the_address_serve_bound_not_the_host_header(admin_api, registry, no_gateway_address):
    from probes.loadtest import jobs

    jobs.serve_gateway_at("0.0.0.0", 8123)
    response = admin_api.post(URL, {"route": "chat", "requests": 5, "confirm": True}, format="json",
                              HTTP_HOST="127.0.0.1:6379")
    assert response.status_code == 201
    assert no_gateway_address == ["http://127.0.0.1:8123/v1"]


def test_the_configured_load_test_gateway_url_comes_first(admin_api, registry, no_gateway_address, settings):
    from probes.loadtest import jobs

    jobs.serve_gateway_at("127.0.0.1", 8123)
    settings.GATEWAY_URL = "https://gateway.example.com/v1"
    settings.LOADTEST_GATEWAY_URL = "http://10.0.0.5:8080/v1"
    assert admin_api.post(URL, {"route": "chat", "requests": 5, "confirm": True}, format="json",
                          HTTP_HOST="evil.example:1").status_code == 201
    assert no_gateway_address == ["http://10.0.0.5:8080/v1"]


def test_the_key_of_a_run_whose_process_died_is_disabled_and_audited(registry):
    from probes.loadtest import jobs
    from routing.models import AuditEvent, GatewayKey, Route

    run = LoadTestRun.objects.create(target_label="route:chat", settings={"duration_s": 60}, status="running")
    context = jobs.run_key(Route.objects.get(name="chat"), run)
    context.__enter__()  # the process dies here: the context never exits
    key = GatewayKey.objects.get(name=f"load test #{run.pk}")
    assert key.enabled
    jobs.close_abandoned(restarted=True)  # `serve` starting again
    key.refresh_from_db()
    run.refresh_from_db()
    assert run.status == "failed" and not key.enabled
    assert AuditEvent.objects.filter(object_type="gatewaykey", action="update", reason__contains="is over").exists()


def test_the_hourly_prune_disables_the_key_of_a_run_past_its_time_cap_in_the_scaled_mode(registry):
    from datetime import timedelta

    from django.utils import timezone

    from probes import tasks
    from probes.loadtest import jobs
    from routing.models import GatewayKey, Route

    run = LoadTestRun.objects.create(target_label="route:chat", settings={"duration_s": 60}, status="running",
                                     started_at=timezone.now() - timedelta(hours=1))
    jobs.run_key(Route.objects.get(name="chat"), run).__enter__()  # its worker died mid-run
    tasks.prune_old_data()
    assert not GatewayKey.objects.get(name=f"load test #{run.pk}").enabled
    assert LoadTestRun.objects.get(pk=run.pk).status == "failed"
