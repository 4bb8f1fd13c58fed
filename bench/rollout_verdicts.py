"""Verdict quality of the rollout analysis, against a Flagger-style rule, on the same simulated streams.

Simulated time, no sleeping: a route at 10 requests/s, one-minute intervals,
Weathervane's verdict recomputed every 10 s by the real analysis code
(routing.rollouts.analysis.judge) over the current step's window. Each request
draws its arm, its failure and its latency from common random numbers, so both
judges see the same requests (their plans then move the weights apart).

- Weathervane: guards errors +0.5 pp and p95 latency +10 %, alpha 0.01 split
  over them by weight (analysis.BUDGET_WEIGHTS: errors 0.008, p95 0.002), at
  least 100 canary requests and one interval at a step before it can pass; a
  fail rolls back at the next look; a passed step's evidence is carried into
  the next (e-values of successive steps multiply). The latency threshold is
  the baseline's p95 over the 5 minutes before the rollout, frozen for it.
- Flagger-style: every interval, the canary's error rate over that interval
  must stay under baseline + 0.5 pp and its p95 under 1.1 x the same baseline
  p95; two failed checks roll back, a passed check moves to the next step.

Both run the plan 10 % -> 25 % -> 50 % -> promoted. Cases (issue 11):
identical arms for 10 intervals; canary latency x 1.5 held at 10 % for 3
intervals; canary errors +2 pp (1 % baseline) held at 50 % for 6 intervals.

    .venv/bin/python bench/rollout_verdicts.py            # 200 rollouts per case (~1 min)
    .venv/bin/python bench/rollout_verdicts.py --full     # 1,000 per case, as the issue asks
"""

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from routing.rollouts.analysis import ALPHA, Arm, Guard, Metric, Tail, Verdict, judge  # noqa: E402

RPS = 10
INTERVAL_S = 60
LOOK_S = 10
WARMUP_S = 300
PLAN = (10, 25, 50)
ALLOWED_ERRORS = 0.005
ALLOWED_P95 = 0.10
GUARDS = [Guard(Metric.ERRORS, allowed=ALLOWED_ERRORS), Guard(Metric.LATENCY_P95, allowed=ALLOWED_P95)]
FLAGGER_FAILED_CHECKS = 2
BASE_ERROR_RATE = 0.01
LATENCY_MEDIAN_MS = 400.0
LATENCY_SIGMA = 0.5  # log-normal: p99 = 1.28 s


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    intervals: int
    plan: tuple
    latency_scale: float = 1.0
    extra_errors: float = 0.0
    holds_step: bool = False  # a degraded canary is held at its one step for the whole horizon
    rps: int = RPS


CASES = [
    Case("identical", "identical canary and baseline, 10 intervals", 10, PLAN),
    Case("latency", "canary latency x 1.5 at a 10 % step, 3 intervals", 3, (10,), latency_scale=1.5,
         holds_step=True),
    Case("errors", "canary errors +2 pp over a 1 % baseline at a 50 % step, 6 intervals", 6, (50,),
         extra_errors=0.02, holds_step=True),
    # Not one of the cases: how much traffic promotion by evidence needs.
    Case("identical_100rps", "identical canary and baseline at 100 requests/s, 20 intervals", 20, PLAN, rps=100),
]


@dataclass
class Outcome:
    # "rolled_back"; "promoted"; "passed" (a held step passed: a degraded canary would move on);
    # "undecided" at the end of the horizon (the step's timeout would page an operator)
    verdict: str
    at_s: float | None = None


class Stream:
    """One rollout's requests: uniforms for the arm and the failure, normals for the latency."""

    def __init__(self, rng, seconds, case):
        n = seconds * case.rps
        self.arm_u = rng.random(n)
        self.fail_u = rng.random(n)
        self.z = rng.standard_normal(n)
        self.case = case
        self.threshold_ms = float(np.percentile(rng.lognormal(np.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA,
                                                              WARMUP_S * case.rps), 95))

    def slice(self, start_s, end_s, weight):
        """Return (canary mask, failed, latency ms) of the requests in [start_s, end_s) at weight %."""
        rps = self.case.rps
        sl = slice(start_s * rps, end_s * rps)
        canary = self.arm_u[sl] < weight / 100
        rate = np.where(canary, BASE_ERROR_RATE + self.case.extra_errors, BASE_ERROR_RATE)
        scale = np.where(canary, self.case.latency_scale, 1.0)
        latency = LATENCY_MEDIAN_MS * scale * np.exp(LATENCY_SIGMA * self.z[sl])
        return canary, self.fail_u[sl] < rate, latency


def weathervane(stream, case, alpha):
    """Run the plan with the real analysis, carrying each step's evidence into the next; return the Outcome."""
    step, step_start, totals, carried = 0, 0, np.zeros(7, dtype=np.int64), {}
    canary_limit = stream.threshold_ms * (1 + ALLOWED_P95)
    for now in range(LOOK_S, case.intervals * INTERVAL_S + 1, LOOK_S):
        canary, failed, latency = stream.slice(now - LOOK_S, now, case.plan[step])
        totals += _look_counts(canary, failed, latency, canary_limit, stream.threshold_ms)
        judgement = judge(*_arms(totals, canary_limit, stream.threshold_ms), GUARDS, alpha=alpha, carried=carried)
        if judgement.verdict == Verdict.FAIL:
            return Outcome("rolled_back", now)
        if judgement.verdict == Verdict.PASS and now - step_start >= INTERVAL_S:
            if case.holds_step:
                return Outcome("passed", now)
            carried = {m.metric: (m.log_fail, m.log_pass) for m in judgement.metrics}
            step, step_start, totals = step + 1, now, np.zeros(7, dtype=np.int64)
            if step == len(case.plan):
                return Outcome("promoted", now)
    return Outcome("undecided")


def _look_counts(canary, failed, latency, canary_limit, baseline_limit):
    base = ~canary
    return np.array([canary.sum(), (failed & canary).sum(), (canary & (latency > baseline_limit)).sum(),
                     (canary & (latency > canary_limit)).sum(),
                     base.sum(), (failed & base).sum(), (base & (latency > baseline_limit)).sum()])


def _arms(totals, canary_limit, baseline_limit):
    c_n, c_err, c_slow, c_beyond, b_n, b_err, b_slow = (int(v) for v in totals)
    canary = Arm(c_n, errors=c_err, latency=Tail(c_n, c_slow, baseline_limit, c_beyond, canary_limit))
    baseline = Arm(b_n, errors=b_err, latency=Tail(b_n, b_slow, baseline_limit))
    return canary, baseline


def flagger(stream, case):
    """Fixed per-interval thresholds; two failed checks roll back, a passed check advances."""
    step, failed_checks = 0, 0
    for interval in range(case.intervals):
        start = interval * INTERVAL_S
        canary, failed, latency = stream.slice(start, start + INTERVAL_S, case.plan[step])
        if _flagger_check_fails(canary, failed, latency, stream.threshold_ms):
            failed_checks += 1
            if failed_checks >= FLAGGER_FAILED_CHECKS:
                return Outcome("rolled_back", start + INTERVAL_S)
        elif not case.holds_step:
            step += 1
            if step == len(case.plan):
                return Outcome("promoted", start + INTERVAL_S)
    return Outcome("undecided")


def _flagger_check_fails(canary, failed, latency, baseline_p95):
    if not canary.any():
        return False
    error_rate = failed[canary].mean()
    p95 = np.percentile(latency[canary], 95)
    return error_rate > BASE_ERROR_RATE + ALLOWED_ERRORS or p95 > baseline_p95 * (1 + ALLOWED_P95)


def run_case(case, rollouts, seed, alpha):
    rng = np.random.default_rng(seed)
    results = {"weathervane": [], "flagger": []}
    for _ in range(rollouts):
        stream = Stream(rng, case.intervals * INTERVAL_S, case)
        results["weathervane"].append(weathervane(stream, case, alpha))
        results["flagger"].append(flagger(stream, case))
    return {judge_name: summarize(outcomes, rollouts) for judge_name, outcomes in results.items()}


def summarize(outcomes, rollouts):
    def times(kind):
        return [o.at_s for o in outcomes if o.verdict == kind]

    summary = {"rollouts": rollouts}
    for kind in ("rolled_back", "promoted", "passed", "undecided"):
        summary[kind] = len([o for o in outcomes if o.verdict == kind]) / rollouts
    for kind in ("rolled_back", "promoted"):
        summary[f"median_s_to_{kind}"] = statistics.median(times(kind)) if times(kind) else None
    return summary


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 rollouts per case")
    parser.add_argument("--rollouts", type=int, default=None, help="rollouts per case (default 200, --full 1000)")
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument("--alpha", type=float, default=ALPHA, help="false-alarm budget of the whole analysis")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/rollouts-<time>.json)")
    return parser.parse_args()


def main():
    args = parse_args()
    rollouts = args.rollouts or (1000 if args.full else 200)
    started = time.perf_counter()
    cases = {}
    for index, case in enumerate(CASES):
        cases[case.name] = {"title": case.title, **run_case(case, rollouts, args.seed + index, args.alpha)}
        print(case.name, json.dumps(cases[case.name]), flush=True)
    data = {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "rollouts": rollouts, "seed": args.seed,
        "alpha": args.alpha, "rps": RPS, "interval_s": INTERVAL_S, "look_s": LOOK_S, "plan": list(PLAN),
        "latency": {"median_ms": LATENCY_MEDIAN_MS, "sigma": LATENCY_SIGMA}, "base_error_rate": BASE_ERROR_RATE,
        "allowed_errors_pp": ALLOWED_ERRORS * 100, "allowed_p95": ALLOWED_P95,
        "seconds": round(time.perf_counter() - started, 1), "cases": cases,
    }
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"rollouts-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out} in {data['seconds']} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
