"""A rehearsal through the real gateway on loopback: the simulator's canary is 40x slower, the controller's
preflight passes it (it answers), its first step sends it real traffic, and the next tick rolls it back by itself."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from probes.models import Rollup
from routing.models import Route
from routing.rollouts.controller import gate, tick
from routing.rollouts.models import Rollout, RolloutState
from routing.simulator import Change, Personality, Simulator, SimulatorServer
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, wait_until
from tests.routing.rollouts.helpers import age

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

MODELS = {
    "base": Personality(latency_median_ms=5, latency_p99_ms=10),
    # Far slower than the loopback's own noise on a busy machine (a baseline p95 of 70 ms has been seen).
    "slow": Personality(latency_median_ms=5, latency_p99_ms=10, schedule=[Change(after_s=0, latency_scale=40)]),
}
PLAN = [{"weight": 50, "min_dwell_s": 0, "min_requests": 0}, {"weight": 100, "min_dwell_s": 0, "min_requests": 0}]
GUARDS = [{"metric": "latency_p95", "allowed": 0.1}]


def served_by(gateway, key):
    response = post_chat(gateway, key, "chat", max_tokens=4)
    assert response.status_code == 200, response.text
    return response.headers["x-weathervane-deployment"]


def _canary_requests(route):
    rows = Rollup.objects.filter(source="traffic", route=route, deployment__name="canary")
    return sum(rows.values_list("count", flat=True))


def test_a_slow_canary_is_rolled_back_by_itself_and_the_gateway_drains_it(settings, serve_gateway):  # noqa: F811
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    with SimulatorServer(Simulator(models=dict(MODELS), seed=11)) as server:
        provider = make_provider(server)
        route = make_route("chat", provider, {"stable": ("base", 100), "canary": ("slow", 0)})
        rollout = Rollout.objects.create(route=route, canary=provider.deployments.get(name="canary"), plan=PLAN,
                                         guards=GUARDS, min_canary_requests=60, preflight_probes=2)
        key = client_key()
        gateway = serve_gateway(log_sample=0.0)
        gate(rollout.pk, "start", reason="rehearsal", actor="admin")
        states = [tick(rollout.pk) for _ in range(3)]  # one preflight probe per tick, then the first step
        assert states[-1] == RolloutState.RUNNING, states
        assert route.weights() == {"canary": 50, "stable": 50}

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(lambda _: served_by(gateway, key), range(260))) == {"canary", "stable"}
            assert wait_until(lambda: _canary_requests(route) >= 60, timeout=10)
            for seen in (160, 260):  # minutes pass: a rollback needs more than two adjacent minutes' evidence
                age(rollout)
                list(pool.map(lambda _: served_by(gateway, key), range(260)))
                assert wait_until(lambda seen=seen: _canary_requests(route) >= seen, timeout=10)
        assert tick(rollout.pk) == RolloutState.ROLLED_BACK

        rollout.refresh_from_db()
        assert route.weights() == {"canary": 0, "stable": 100}
        verdict = rollout.verdicts.first()
        assert verdict.verdict == "fail"
        assert verdict.sentence.startswith("p95 latency: median ")
        assert "clearly beyond +10 %" in verdict.sentence and verdict.sentence.endswith(": rolling back")
        version = Route.objects.get(pk=route.pk).version
        assert wait_until(lambda: gateway.gateway.recorder.metrics.snapshot_version >= version, timeout=2)
        assert {served_by(gateway, key) for _ in range(40)} == {"stable"}  # weight 0: not one request more
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.ROLLED_BACK
