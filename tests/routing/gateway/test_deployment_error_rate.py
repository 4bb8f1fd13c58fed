"""One meaning of "error" against a deployment: a client's 400s, its own deadlines and disconnects and a key's
429s, sent through the gateway, leave the deployment's error rate (API and page), health, circuit, the
error-rate alert rule and a rollout's verdict input untouched, and show as client errors and rate limits."""

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from dashboard.alerts.models import AlertRule
from dashboard.alerts.sources import error_rate
from dashboard.metrics import deployment_health
from probes.models import HealthState, Rollup
from probes.rollups import RollupDelta
from routing.models import Deployment, DeploymentCircuit
from routing.rollouts.analysis import Metric, StepWindow, rate_minutes
from routing.simulator import Personality
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FLOOD = {"refused": 25, "rate_limited": 6, "deadline": 4, "disconnect": 3}


def flood(sim, gateway, key):
    """Send the client's own failures and a key's 429s to deployment "d" (upstream model "m")."""
    sim.simulator.set_model("m", Personality(content_filter=True))  # a 400: the client's request
    for _ in range(FLOOD["refused"]):
        assert post_chat(gateway, key, "r").status_code == 400
    sim.simulator.set_model("m", Personality(rate_429=1.0, retry_after_s=0.01))
    for _ in range(FLOOD["rate_limited"]):
        assert post_chat(gateway, key, "r").status_code == 429
    sim.simulator.set_model("m", Personality(latency_median_ms=2000))
    for _ in range(FLOOD["deadline"]):
        assert post_chat(gateway, key, "r", headers={"x-weathervane-deadline": "0.2"}).status_code == 504
    sim.simulator.set_model("m", Personality(tokens_per_s=20, output_tokens=100))
    for _ in range(FLOOD["disconnect"]):
        leave_mid_stream(gateway, key)


def leave_mid_stream(gateway, key):
    body = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{gateway.base_url}/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {key.plaintext}"}) as response:
            assert any("tok1 " in line for line in response.iter_lines())


def test_a_clients_failures_and_a_keys_429s_never_make_the_deployment_look_broken(sim, serve_gateway, settings,
                                                                                   admin_user, viewer_api):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    make_route("r", make_provider(sim), {"d": ("m", 100)})
    gateway = serve_gateway(deadline_s=5.0)
    flood(sim, gateway, client_key())
    # Deadlines and disconnects never reach the deployment's rollups (recorder.NOT_THE_DEPLOYMENTS); each 429
    # attempt (a retry after its Retry-After included) is counted as rate_limited.
    booked = FLOOD["refused"] + FLOOD["rate_limited"]
    assert wait_until(lambda: sum(r.count for r in Rollup.objects.filter(source="traffic")) >= booked, timeout=5)

    summary = viewer_api.get("/api/v1/rollups/", {"deployment": "d", "source": "traffic", "window": "15m"}).json()[
        "summary"]
    assert summary["error_rate"] == 0 and summary["availability"] == 1
    assert summary["client_errors"] == FLOOD["refused"]
    assert summary["rate_limited"] >= FLOOD["rate_limited"]

    page = Client()
    page.force_login(admin_user)
    html = page.get("/deployments/d/?window=15m").content.decode()
    assert "Deployment error rate" in html and "0.0 %" in html
    assert page.get("/dashboard-data/deployments/d/?window=15m").json()["totals"]["error_rate"] == 0

    deployment = Deployment.objects.get(name="d")
    circuit = DeploymentCircuit.objects.filter(deployment=deployment).first()
    assert circuit is None or circuit.state == "closed"
    assert deployment_health(deployment, [], circuit)[0] == HealthState.UNKNOWN  # no probe, no open circuit

    rule = AlertRule.objects.create(name="deployment errors", kind="error_rate",
                                    params={"threshold": 0.01, "window_s": 600, "min_count": 5, "scope": "deployment"})
    [(_, observed)] = list(error_rate([rule], timezone.now()))
    assert observed == []

    arm = RollupDelta(count=summary["count"], errors=summary["errors"])
    assert rate_minutes(StepWindow([arm], [arm]), Metric.ERRORS)[0].canary == 0  # what a rollout's verdict reads
