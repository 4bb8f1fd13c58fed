"""How often the health judge changes its mind: the demo's simulated deployments, replayed in simulated time.

Each demo deployment (seed_demo: steady-gpt, tail-gpt, flaky-gpt) is probed at
the demo's cadence (WEATHERVANE_PROBE_INTERVAL, 30 s) for 30 minutes, its
outcomes drawn from its simulator personality exactly as the simulator draws
them (a 429 with rate_429, else a 5xx with error_rate, else an answer after a
log-normal latency), and every probe goes through the REAL judge
(probes.health.judge, thresholds from the settings). No sleeping: a seed runs
in microseconds. A seed also shifts the probes' phase within the interval.

Scenarios, each on every deployment:
- as seeded: the personality unchanged for 30 minutes;
- outage: from minute 10, three minutes of 5xx (the simulator's schedule
  Change(error_rate_delta=1)); what is left of a 429 rate stays;
- slow: from minute 10, five minutes at 150x the latency (40 ms -> 6 s, over
  the 5 s threshold).

Reported per deployment and scenario: state changes in the 30 minutes (the
first verdict out of "unknown" counted apart), time spent in each state, and
for the outage and the slowdown, how long until the judge said so (down /
degraded) and until it said the deployment was back.

    .venv/bin/python bench/health_flaps.py                 # 1,000 seeds per case (a few seconds)
    .venv/bin/python bench/health_flaps.py --seeds 200 --out bench/results/health.json
"""

import argparse
import json
import os
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from dashboard.management.commands.seed_demo import PROVIDERS  # noqa: E402
from probes.health import Thresholds, judge  # noqa: E402
from probes.models import HealthState  # noqa: E402
from routing.outcomes import Outcome  # noqa: E402
from routing.simulator.personalities import PERSONALITIES, Change  # noqa: E402

DURATION_S = 30 * 60
PROBE_TIMEOUT_S = 10.0  # ProbeTarget.timeout_s default
PROBE_TOKENS = 8  # ProbeTarget.max_tokens default
CHANGE_AT_S = 600


@dataclass(frozen=True)
class Scenario:
    name: str
    change: Change | None
    looks_for: frozenset = frozenset()  # the states the change should bring


SCENARIOS = [
    Scenario("as seeded", None),
    Scenario("outage 3 min", Change(after_s=CHANGE_AT_S, until_s=CHANGE_AT_S + 180, error_rate_delta=1.0),
             frozenset({HealthState.DOWN})),
    Scenario("slow 5 min", Change(after_s=CHANGE_AT_S, until_s=CHANGE_AT_S + 300, latency_scale=150.0),
             frozenset({HealthState.DEGRADED, HealthState.DOWN})),
]


def draw(personality, rng):
    """Return (outcome, total ms) of one probe, drawn in the simulator's order (429, then 5xx, then an answer)."""
    latency_ms = personality.sample_latency_s(rng) * 1000
    if latency_ms > PROBE_TIMEOUT_S * 1000:
        return Outcome.TIMEOUT, None
    roll = rng.random()
    if roll < personality.rate_429:
        return Outcome.RATE_LIMITED, latency_ms
    if roll < personality.rate_429 + personality.error_rate:
        return Outcome.SERVER_ERROR, latency_ms
    pace_ms = 1000 * PROBE_TOKENS / personality.tokens_per_s if personality.tokens_per_s else 0.0
    return Outcome.OK, latency_ms + pace_ms


def replay(base, scenario, seed, interval_s, thresholds):
    """Return [(time s, new state)] for one seed: every state change the judge made over DURATION_S."""
    rng = random.Random(seed)
    personality = base if scenario.change is None else _with_change(base, scenario.change)
    state, failures, successes, recent = HealthState.UNKNOWN, 0, 0, []
    changes = []
    t = rng.uniform(0, interval_s)
    while t < DURATION_S:
        outcome, total_ms = draw(personality.at(t), rng)
        verdict = judge(state, failures, successes, recent, outcome, total_ms, thresholds)
        if verdict.state != state:
            changes.append((t, verdict.state))
        state, failures, successes, recent = verdict.state, verdict.failures, verdict.successes, verdict.recent
        t += interval_s
    return changes


def _with_change(base, change):
    from dataclasses import replace

    return replace(base, schedule=(*base.schedule, change))


def time_in_states(changes):
    """Return {state: share of the 30 minutes}."""
    shares = {}
    marks = [(0.0, HealthState.UNKNOWN), *changes, (DURATION_S, None)]
    for (start, state), (end, _) in zip(marks, marks[1:], strict=False):
        shares[state] = shares.get(state, 0.0) + (end - start) / DURATION_S
    return shares


def detection(changes, scenario):
    """Return (seconds from the change until the judge said one of scenario.looks_for, seconds from the change's
    end until it left them), either None when it did not happen within the run."""
    change = scenario.change
    before = [s for t, s in changes if t < change.after_s]
    if before and before[-1] in scenario.looks_for:
        said = change.after_s  # already there (flaky-gpt is degraded by its errors before it slows down)
    else:
        said = next((t for t, s in changes if t >= change.after_s and s in scenario.looks_for), None)
    if said is None:
        return None, None
    back = next((t for t, s in changes if t > said and s not in scenario.looks_for), None)
    return said - change.after_s, None if back is None else back - change.until_s


def summarise(runs, scenario):
    counts = [len(changes) for changes in runs]
    after_first = [len(changes) - 1 if changes else 0 for changes in runs]
    shares = [time_in_states(changes) for changes in runs]
    row = {
        "changes_mean": statistics.fmean(counts), "changes_p95": _quantile(counts, 0.95), "changes_max": max(counts),
        "after_first_mean": statistics.fmean(after_first), "after_first_max": max(after_first),
        "share": {state: statistics.fmean(s.get(state, 0.0) for s in shares) for state in HealthState.values},
    }
    if scenario.looks_for:
        found = [detection(changes, scenario) for changes in runs]
        said = [d for d, _ in found if d is not None]
        back = [b for _, b in found if b is not None]
        row["detected_share"] = len(said) / len(runs)
        row["detected_s"] = _spread(said)
        row["back_s"] = _spread(back)
    return row


def _quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spread(values):
    if not values:
        return None
    return {"median": statistics.median(values), "p95": _quantile(values, 0.95), "max": max(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    interval_s = settings.PROBE_DEFAULT_INTERVAL_S
    thresholds = Thresholds.from_settings()
    results = []
    for _, personality_name, deployment, _, _ in PROVIDERS:
        base = PERSONALITIES[personality_name]
        assert base.fault is None, "the demo's personalities have no faults; draw() does not play them"
        for scenario in SCENARIOS:
            runs = [replay(base, scenario, seed, interval_s, thresholds) for seed in range(args.seeds)]
            results.append({"deployment": deployment, "scenario": scenario.name, **summarise(runs, scenario)})
    print(f"{args.seeds} seeds x 30 min, a probe every {interval_s} s; {thresholds}")
    for row in results:
        print(format_row(row))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seeds": args.seeds, "interval_s": interval_s,
                                        "thresholds": thresholds.__dict__, "results": results}, indent=1))


def format_row(row):
    share = ", ".join(f"{state} {value:.0%}" for state, value in row["share"].items() if value >= 0.005)
    text = (f"{row['deployment']:11} {row['scenario']:13} changes mean {row['changes_mean']:.2f} "
            f"p95 {row['changes_p95']} max {row['changes_max']} (after the first verdict: mean "
            f"{row['after_first_mean']:.2f}, max {row['after_first_max']}); time: {share}")
    if "detected_s" in row:
        said, back = row["detected_s"], row["back_s"]
        text += f"\n{'':25} detected in {row['detected_share']:.1%}"
        if said:
            text += f", after median {said['median']:.0f} s p95 {said['p95']:.0f} s max {said['max']:.0f} s"
        if back:
            text += f"; back after the change ended: median {back['median']:.0f} s p95 {back['p95']:.0f} s"
    return text


if __name__ == "__main__":
    main()
