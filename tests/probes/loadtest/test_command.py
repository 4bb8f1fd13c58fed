"""`manage.py loadtest` end to end against the simulator on loopback: through the gateway
with a run key, and to one deployment directly; exit codes, caps and the report files."""

import csv
import json

import pytest
from django.core.management import CommandError, call_command

from probes.loadtest.models import LoadTestRun
from routing.models import AuditEvent, GatewayKey
from tests.routing.gateway.helpers import make_provider, make_route

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(sim, serve_gateway, settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    provider = make_provider(sim)
    make_route("chat", provider, {"stable": ("fast", 100), "canary": ("flaky", 0)})
    return serve_gateway()


def loadtest(*args, **options):
    call_command("loadtest", *args, "--yes", **options)


def test_a_route_run_goes_through_the_gateway_with_a_key_made_and_disabled_for_it(demo, tmp_path, capsys):
    loadtest("--route", "chat", "--gateway-url", demo.base_url, "--requests", "20", "--concurrency", "4",
             "--max-tokens", "8", "--threshold", "error_rate < 1%", "--threshold", "p95(ttft) < 2s",
             "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"), "--html", str(tmp_path / "r.html"))
    out = capsys.readouterr().out
    assert "estimated maximum spend" in out
    assert "Time to first token" in out
    run = LoadTestRun.objects.get()
    assert run.status == "finished" and run.passed is True
    assert run.summary()["count"] == 20
    assert {s["deployment"] for s in run.result["samples"]} == {"stable"}  # weight 0 got nothing
    key = GatewayKey.objects.get()
    assert key.name == f"load test #{run.pk}" and not key.enabled
    assert list(key.routes.values_list("name", flat=True)) == ["chat"]
    actions = AuditEvent.objects.filter(object_type="gatewaykey").values_list("action", flat=True)
    assert list(actions) == ["update", "create"]
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["result"]["summary"]["ok"] == 20
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 20 and rows[0]["outcome"] == "ok"
    html = (tmp_path / "r.html").read_text()
    assert "Chart.js v4" in html and "WeathervaneLoadTestCharts" in html and "<script src" not in html


def test_a_failed_threshold_exits_non_zero(demo):
    with pytest.raises(CommandError) as failure:
        loadtest("--route", "chat", "--gateway-url", demo.base_url, "--requests", "5",
                 "--threshold", "p50(e2e) < 0.001ms")
    assert failure.value.returncode == 1
    assert LoadTestRun.objects.get().passed is False


def test_a_deployment_run_goes_directly_with_its_providers_key(demo):
    loadtest("--deployment", "stable", "--requests", "6", "--profile", "synchronous", "--no-stream")
    run = LoadTestRun.objects.get()
    assert run.summary()["ok"] == 6
    assert run.summary()["cost"] > 0
    assert "sk-test-key-0001" not in json.dumps(run.result)


def test_the_time_cap_holds(demo):
    loadtest("--route", "chat", "--gateway-url", demo.base_url, "--requests", "100000", "--duration", "1",
             "--profile", "constant", "--rate", "20")
    run = LoadTestRun.objects.get()
    assert run.summary()["count"] <= 21
    assert run.summary()["duration_s"] < 2.5


@pytest.mark.parametrize("args, says", [
    (("--route", "chat", "--deployment", "stable"), "exactly one target"),
    (("--route", "nope"), "route"),
    (("--route", "chat", "--profile", "constant"), "needs a rate"),
    (("--route", "chat", "--threshold", "p95(ttft) < fast"), "not of the form"),
    (("--route", "chat", "--requests", "0"), "requests"),
])
def test_bad_settings_are_refused_naming_the_field_and_send_nothing(demo, args, says):
    with pytest.raises(CommandError, match=says) as refused:
        loadtest(*args)
    assert refused.value.returncode == 2
    assert not LoadTestRun.objects.exists()


def test_without_a_gateway_url_a_route_run_goes_to_the_port_serve_runs_on(demo, settings):
    from urllib.parse import urlsplit

    from probes.loadtest import jobs

    settings.GATEWAY_URL = ""
    assert jobs.cli_gateway_url() == "http://127.0.0.1:8000/v1"  # no server running: the documented default
    jobs.serve_gateway_at("0.0.0.0", urlsplit(demo.base_url).port)  # `serve` on any port, any interface
    loadtest("--route", "chat", "--requests", "5", "--max-tokens", "8")
    assert LoadTestRun.objects.get().summary()["ok"] == 5
    settings.GATEWAY_URL = "https://gateway.example.com/v1"
    assert jobs.cli_gateway_url() == "https://gateway.example.com/v1"  # WEATHERVANE_GATEWAY_URL comes first
    settings.GATEWAY_URL = ""
    jobs.stop_serving_gateway()  # serve stopped
    assert jobs.cli_gateway_url() == "http://127.0.0.1:8000/v1"
