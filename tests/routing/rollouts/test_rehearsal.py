"""A rehearsal end to end: the simulator degrades a canary on schedule and the analysis rolls it back."""

import httpx
import pytest

from probes.rollups import RollupDelta
from routing.rollouts.analysis import Guard, Metric, StepWindow, Verdict, judge
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
        "canary": {"base": "fast", "error_rate": 0.01, "schedule": [{"after_s": 60, "error_rate_delta": 0.20}]},
    }
    with SimulatorServer(Simulator(models=models, seed=3, clock=clock)) as server:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer sk-x"}, timeout=5) as client:
            yield clock, client


def _window(client, minutes=6, per_minute=100, canary_every=4):
    """Send a few minutes of traffic, one request in canary_every to the canary; return its StepWindow."""
    arms = {"canary": [], "baseline": []}
    for _ in range(minutes):
        deltas = {"canary": RollupDelta(), "baseline": RollupDelta()}
        for i in range(per_minute):
            model = "canary" if i % canary_every == 0 else "baseline"
            status = client.post("/chat/completions", json={"model": model, "messages": []}).status_code
            deltas[model].add("server_error" if status >= 500 else "ok")
        for arm, delta in deltas.items():
            arms[arm].append(delta)
    return StepWindow(arms["canary"], arms["baseline"])


def test_a_canary_that_degrades_on_schedule_is_rolled_back_with_its_numbers(rehearsal):
    clock, client = rehearsal
    before = judge(_window(client), GUARDS)
    assert before.verdict != Verdict.FAIL
    clock.now = 60
    window = _window(client)
    after = judge(window, GUARDS)
    assert after.verdict == Verdict.FAIL, after.sentence
    canary_errors = sum(d.errors.get("server_error", 0) for d in window.canary)
    baseline_errors = sum(d.errors.get("server_error", 0) for d in window.baseline)
    assert after.sentence.startswith(f"canary errors {canary_errors} of 150 (")
    assert f"vs baseline {baseline_errors} of 450 (" in after.sentence
    assert "clearly beyond +0.5 pp" in after.sentence and after.sentence.endswith(": rolling back")
