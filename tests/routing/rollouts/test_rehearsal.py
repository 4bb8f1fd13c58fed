"""A rehearsal end to end: the simulator degrades a canary on schedule and the analysis rolls it back."""

import httpx
import pytest

from routing.rollouts.analysis import Arm, Guard, Metric, Verdict, judge
from routing.simulator import Simulator, SimulatorServer

GUARDS = [Guard(Metric.ERRORS, allowed=0.005)]


class FakeClock:
    now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def rehearsal():
    clock = FakeClock()
    models = {
        "baseline": {"base": "fast", "error_rate": 0.01},
        "canary": {"base": "fast", "error_rate": 0.01, "schedule": [{"after_s": 60, "error_rate_delta": 0.10}]},
    }
    with SimulatorServer(Simulator(models=models, seed=3, clock=clock)) as server:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer sk-x"}, timeout=5) as client:
            yield clock, client


def _window(client, requests=400, canary_every=4):
    """Send a window of traffic, one request in canary_every to the canary; return (canary, baseline) Arms."""
    counts = {"canary": [0, 0], "baseline": [0, 0]}
    for i in range(requests):
        model = "canary" if i % canary_every == 0 else "baseline"
        status = client.post("/chat/completions", json={"model": model, "messages": []}).status_code
        counts[model][0] += 1
        counts[model][1] += status >= 500
    return Arm(*counts["canary"]), Arm(*counts["baseline"])


def test_a_canary_that_degrades_on_schedule_is_rolled_back_with_its_numbers(rehearsal):
    clock, client = rehearsal
    before = judge(*_window(client), GUARDS)
    assert before.verdict != Verdict.FAIL
    clock.now = 60
    canary, baseline = _window(client)
    after = judge(canary, baseline, GUARDS)
    assert after.verdict == Verdict.FAIL
    assert after.sentence.startswith(f"canary errors {canary.errors} of 100 vs baseline {baseline.errors} of 300")
    assert after.sentence.endswith("worse than the baseline): rolling back")
