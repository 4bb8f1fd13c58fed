"""A shadow step through the real gateway on loopback: a share of the route's requests is mirrored to the
canary off the client's path, recorded under the `shadow` source for both arms, bounded, and judged."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils import timezone

from probes.models import Rollup, Source
from routing.rollouts.controller import tick
from routing.rollouts.models import Rollout, RolloutState
from routing.simulator import Personality, Simulator, SimulatorServer
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until
from tests.routing.rollouts.helpers import age

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

GUARDS = [{"metric": "errors", "allowed": 0.02}]


def shadow_rollout(route, canary, share, **fields):
    return Rollout.objects.create(route=route, canary=canary, plan=[{"shadow": share, "min_dwell_s": 0,
                                                                    "min_requests": 0},
                                                                   {"weight": 50, "min_dwell_s": 0, "min_requests": 0}],
                                  guards=GUARDS, state=RolloutState.RUNNING, step=0, step_started_at=timezone.now(),
                                  baseline=route.weights(), **fields)


def served_by(gateway, key, timeout=10.0):
    response = post_chat(gateway, key, "chat", max_tokens=4, timeout=timeout)
    assert response.status_code == 200, response.text
    return response.headers["x-weathervane-deployment"]


def shadow_counts(route):
    """{deployment name: (requests, errors by kind, cost)} of the route's shadow rows."""
    counts = {}
    for row in Rollup.objects.filter(source=Source.SHADOW, route=route).select_related("deployment"):
        requests, errors, cost = counts.get(row.deployment.name, (0, {}, 0))
        for kind, n in (row.errors or {}).items():
            errors[kind] = errors.get(kind, 0) + n
        counts[row.deployment.name] = (requests + row.count, errors, cost + float(row.cost))
    return counts


def shadow_metric(gateway, result):
    prefix = f'weathervane_gateway_shadow_requests_total{{result="{result}"}} '
    lines = [line for line in scrape(gateway).text.splitlines() if line.startswith(prefix)]
    return float(lines[0][len(prefix):]) if lines else 0


def shadow_in_snapshot(gateway, present=True):
    return wait_until(lambda: (gateway.gateway.store.current.routes["chat"].shadow is not None) == present, timeout=5)


@pytest.fixture
def world(settings, serve_gateway, metrics_token):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    models = {"base": Personality(latency_median_ms=5, latency_p99_ms=10),
              "erring": Personality(latency_median_ms=5, latency_p99_ms=10, error_rate=0.5),
              "silent": {"fault": "silence"}}

    def build(canary_model, **gateway_options):
        server = stack.enter_context(SimulatorServer(Simulator(models=models, seed=5)))
        provider = make_provider(server, read_timeout=4.0)
        route = make_route("chat", provider, {"stable": ("base", 100), "canary": (canary_model, 0)})
        return route, provider.deployments.get(name="canary"), client_key(), serve_gateway(log_sample=0.0,
                                                                                            **gateway_options)

    from contextlib import ExitStack

    with ExitStack() as stack:
        yield build


def test_a_shadow_step_mirrors_its_share_and_records_both_arms_apart_from_real_traffic(world):
    route, canary, key, gateway = world("base")
    assert {served_by(gateway, key) for _ in range(5)} == {"stable"}
    assert not Rollup.objects.filter(source=Source.SHADOW).exists()  # no shadow step: nothing mirrored
    shadow_rollout(route, canary, share=50)
    assert shadow_in_snapshot(gateway)

    assert {served_by(gateway, key) for _ in range(80)} == {"stable"}  # clients only ever get the primary's answer
    sent = shadow_metric(gateway, "sent")
    assert 20 <= sent <= 60  # about half of 80
    # Every mirror lands with the primary's figures for the same request, side by side.
    counts = wait_until(lambda: (c := shadow_counts(route)) and c.get("canary", (0,))[0] == sent == c["stable"][0]
                        and c, timeout=10)
    assert counts, shadow_counts(route)
    assert counts["canary"][2] > 0  # the canary's cost, counted under the shadow source only
    traffic = Rollup.objects.filter(source=Source.TRAFFIC, route=route)
    assert wait_until(lambda: sum(traffic.values_list("count", flat=True)) == 85)  # mirrors are not its traffic
    assert not traffic.filter(deployment=canary).exists()
    assert shadow_metric(gateway, "dropped") == 0


def test_mirrors_are_bounded_and_never_delay_the_client(world):
    route, canary, key, gateway = world("silent", shadow_max_in_flight=2)
    shadow_rollout(route, canary, share=100)
    assert shadow_in_snapshot(gateway)
    with ThreadPoolExecutor(8) as pool:  # a mirror waits 4 s for silence; every client answer comes well before
        assert set(pool.map(lambda _: served_by(gateway, key, timeout=3.0), range(24))) == {"stable"}
    assert shadow_metric(gateway, "dropped") >= 1 and shadow_metric(gateway, "sent") >= 1
    assert wait_until(lambda: shadow_counts(route).get("canary", (0, {}))[1].get("timeout", 0) >= 1, timeout=10)
    assert shadow_counts(route)["canary"][0] <= 24


def test_a_canary_that_errs_on_mirrored_requests_is_rolled_back_before_any_client_saw_it(world):
    route, canary, key, gateway = world("erring")
    rollout = shadow_rollout(route, canary, share=100, min_canary_requests=40)
    assert shadow_in_snapshot(gateway)
    for _ in range(30):
        served_by(gateway, key)
    assert wait_until(lambda: shadow_counts(route).get("canary", (0,))[0] >= 30, timeout=10)
    for seen in (60, 90):  # minutes pass: a rollback needs more than two adjacent minutes' evidence
        age(rollout)
        for _ in range(30):
            served_by(gateway, key)
        assert wait_until(lambda seen=seen: shadow_counts(route).get("canary", (0,))[0] >= seen, timeout=10)
    assert tick(rollout.pk) == RolloutState.ROLLED_BACK
    verdict = Rollout.objects.get(pk=rollout.pk).verdicts.get()
    assert verdict.sentence.startswith("canary errors ") and verdict.sentence.endswith("rolling back")
    assert route.weights() == {"stable": 100, "canary": 0}
    assert shadow_in_snapshot(gateway, present=False)  # the mirrors stop with the step
