"""Verdict quality of staged rollouts on the traffic routes really carry, through the controller's own decisions.

Simulated time, no sleeping. Requests arrive (Poisson) on a route whose
baseline and canary sit on different providers; the gateway assigns each
request to an arm by weight (per request: it does so while a rollout runs,
sticky session ids included). Every 10 s the real code looks:
`routing.rollouts.analysis.judge` over the step's per-minute rollup deltas
(probes.rollups.RollupDelta with real DDSketches, aligned per minute exactly as
`controller.step_window` builds them from the Rollup rows), then
`controller.decide` on a real (unsaved) Rollout decides: roll back, next step
(`controller.next_carried` hands the failure evidence on), drain and pause at
the step timeout, or hold. A step at 100 % is the promotion, as in
`controller._enter_step`.

Every case runs the default guards (analysis.DEFAULT_GUARDS: errors +1 pp,
TTFT p95 +20 %, time per output token p95 +20 %, alpha 0.01) and the plan
10 % -> 25 % -> 50 % -> 100 % with 60 s minimum dwell, unless it says
otherwise. Beside it, a Flagger-style rule on the same streams (same seed):
every minute the canary's error rate must stay under baseline + 1 pp and its
TTFT and time-per-token p95 under 1.2 x the baseline's in that minute; two
failed checks roll back, a passed check advances.

    .venv/bin/python bench/rollout_verdicts.py                 # 100 rollouts per case
    .venv/bin/python bench/rollout_verdicts.py --rollouts 400  # what bench/RESULTS.md reports
    .venv/bin/python bench/rollout_verdicts.py --case bursts   # one case
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from probes.rollups import RollupDelta  # noqa: E402
from routing.outcomes import Outcome  # noqa: E402
from routing.rollouts import analysis, controller  # noqa: E402
from routing.rollouts.models import Rollout  # noqa: E402

LOOK_S = 10
WARMUP_S = 1800
PLAN = ({"weight": 10, "min_dwell_s": 60}, {"weight": 25, "min_dwell_s": 60}, {"weight": 50, "min_dwell_s": 60},
        {"weight": 100})
EPOCH = datetime(2026, 12, 1, tzinfo=UTC)
BASE_ERROR_RATE = 0.01
TTFT_MEDIAN_MS, TTFT_SIGMA = 400.0, 0.5
TPOT_MEDIAN_MS, TPOT_SIGMA = 25.0, 0.3


@dataclass(frozen=True)
class Traffic:
    """What the requests look like; the canary's changes apply from `from_step` on (0: at once)."""

    rps: float = 10.0
    extra_errors: float = 0.0
    ttft_scale: float = 1.0
    ttft_sigma: float = TTFT_SIGMA
    tpot_scale: float = 1.0
    from_step: int = 0
    spells_per_hour: float = 0.0  # each provider's own bad spells (Poisson), errors during one: spell_error_rate
    spell_s: float = 30.0
    spell_error_rate: float = 0.0
    users: int = 0  # sticky heterogeneous users: prompt sizes scale their TTFT, sessions cluster their requests
    base_error_rate: float = BASE_ERROR_RATE


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    goal: str
    traffic: Traffic
    horizon_s: int
    plan: tuple = PLAN
    guards: tuple = analysis.DEFAULT_GUARDS
    wanted: str = "promoted"  # "promoted": a false rollback is a failure; "caught": anything but promotion


def _limits_guards():
    return ({"metric": "errors", "allowed": 0.01, "limit": 0.02}, {"metric": "ttft_p95", "allowed": 0.20,
                                                                    "limit": 1500.0},
            {"metric": "tpot_p95", "allowed": 0.20, "limit": None})


CASES = [
    Case("identical", "identical canary, 10 req/s, plan ending at 100 %", "< 1 % false rollbacks, 0 crashes",
         Traffic(), 3600),
    Case("bursts", "each provider has its own 30 s bad spells (6/h, 25 % errors), same long-run rate",
         "< 1 % false rollbacks", Traffic(spells_per_hour=6, spell_error_rate=0.25, base_error_rate=0.005), 3600),
    Case("sticky", "sticky sessions: 300 users, prompt sizes spread TTFT 0.5x-2x, requests in sessions",
         "< 1 % false rollbacks", Traffic(users=300), 3600),
    Case("high_inside", "500 req/s, canary +0.5 pp errors and TTFT x1.08 (inside +1 pp / +20 %)",
         "< 1 % rolled back", Traffic(rps=500, extra_errors=0.005, ttft_scale=1.08), 1200),
    Case("high_beyond", "500 req/s, canary +2 pp errors (beyond +1 pp)", ">= 90 % rolled back",
         Traffic(rps=500, extra_errors=0.02), 600, wanted="caught"),
    Case("low_0.5", "0.5 req/s, canary failing 20 % of requests", ">= 90 % rolled back within 10 min",
         Traffic(rps=0.5, extra_errors=0.19), 600, wanted="caught"),
    Case("low_2", "2 req/s, canary failing 20 % of requests", ">= 90 % rolled back within 10 min",
         Traffic(rps=2, extra_errors=0.19), 600, wanted="caught"),
    Case("low_0.5_at_25", "tuned plan: the same at 0.5 req/s with a first step of 25 % (25 → 50 → 100)",
         ">= 90 % rolled back within 10 min", Traffic(rps=0.5, extra_errors=0.19), 600,
         plan=({"weight": 25, "min_dwell_s": 60}, {"weight": 50, "min_dwell_s": 60}, {"weight": 100}),
         wanted="caught"),
    Case("ttft_only", "TTFT-only regression: +40 % at p95, median unchanged, 10 req/s", ">= 90 % caught",
         Traffic(ttft_sigma=TTFT_SIGMA + math.log(1.4) / 1.645), 1800, wanted="caught"),
    Case("ttft_only_tight", "tuned guard: the same with TTFT p95 +10 % allowed", ">= 90 % caught",
         Traffic(ttft_sigma=TTFT_SIGMA + math.log(1.4) / 1.645), 1800, wanted="caught",
         guards=({"metric": "errors", "allowed": 0.01, "limit": None},
                 {"metric": "ttft_p95", "allowed": 0.10, "limit": None},
                 {"metric": "tpot_p95", "allowed": 0.20, "limit": None})),
    Case("tpot_only", "time per output token +40 %, 10 req/s", ">= 90 % caught",
         Traffic(tpot_scale=1.4), 1800, wanted="caught"),
    Case("late", "regression from the 25 % step on (+3 pp errors, TTFT x1.5), 10 req/s", "never promoted",
         Traffic(extra_errors=0.03, ttft_scale=1.5, from_step=1), 3600, wanted="caught"),
    Case("limits", "identical canary with limits: errors <= 2 %, TTFT p99 <= 1,500 ms (true p99 ~1,280 ms)",
         "< 1 % false rollbacks", Traffic(), 3600, guards=_limits_guards()),
]


# --- the streams -------------------------------------------------------------------------------------


class World:
    """One rollout's world: both providers' bad spells and the users, drawn once from a seed."""

    def __init__(self, seed, traffic, horizon_s):
        self.rng = np.random.default_rng(seed)
        self.traffic = traffic
        span = horizon_s + WARMUP_S
        self.spells = {arm: self._spells(span) for arm in ("baseline", "canary")}
        if traffic.users:
            self.user_scale = np.exp(self.rng.normal(0, 0.35, traffic.users))
            self.user_weight = self.rng.pareto(1.5, traffic.users) + 0.1  # a few heavy users

    def _spells(self, span):
        t = self.traffic
        if not t.spells_per_hour:
            return np.zeros((0, 2))
        n = self.rng.poisson(t.spells_per_hour * span / 3600)
        starts = self.rng.uniform(-WARMUP_S, span - WARMUP_S, n)
        return np.column_stack([starts, starts + self.rng.exponential(t.spell_s, n)])

    def requests(self, start_s, weight, step):
        """Return (canary mask, failed, ttft ms, tpot ms) of the requests in [start_s, start_s + LOOK_S)."""
        t, rng = self.traffic, self.rng
        n = rng.poisson(t.rps * LOOK_S)
        when = start_s + rng.uniform(0, LOOK_S, n)
        canary = rng.random(n) < weight / 100
        changed = canary & (step >= t.from_step)
        rate = np.full(n, t.base_error_rate)
        rate[_in_spells(when, self.spells["canary"]) & canary] += t.spell_error_rate
        rate[_in_spells(when, self.spells["baseline"]) & ~canary] += t.spell_error_rate
        rate[changed] += t.extra_errors
        failed = rng.random(n) < rate
        sigma = np.where(changed, t.ttft_sigma, TTFT_SIGMA)
        ttft = TTFT_MEDIAN_MS * np.exp(sigma * rng.standard_normal(n)) * self._user_scales(n, start_s)
        ttft[changed] *= t.ttft_scale
        tpot = TPOT_MEDIAN_MS * np.exp(TPOT_SIGMA * rng.standard_normal(n))
        tpot[changed] *= t.tpot_scale
        return canary, failed, ttft, tpot

    def _user_scales(self, n, start_s):
        """Each request's user, drawn from the users in session now (a session is ~3 minutes)."""
        if not self.traffic.users:
            return 1.0
        session = int((start_s + WARMUP_S) // 180)
        active = np.random.default_rng(session * 7919 + len(self.user_scale)).random(len(self.user_scale)) < 0.3
        weights = self.user_weight * active
        users = self.rng.choice(len(weights), n, p=weights / weights.sum()) if n else np.zeros(0, int)
        return self.user_scale[users]


def _in_spells(when, spells):
    if not len(spells):
        return np.zeros(len(when), bool)
    return ((when[:, None] >= spells[:, 0]) & (when[:, None] < spells[:, 1])).any(axis=1)


def _add_many(target, values):
    """Add many positive values to a DDSketch at once (the sketch's own key mapping, vectorised)."""
    if not len(values):
        return
    mapping = target._mapping
    keys = np.ceil(np.log2(values) * mapping._multiplier + mapping._offset).astype(int)
    for key, count in zip(*np.unique(keys, return_counts=True), strict=True):
        target._store.add(int(key), float(count))
    target._count += len(values)
    target._sum += float(values.sum())
    target._min = min(target._min, float(values.min()))
    target._max = max(target._max, float(values.max()))


def _fold(delta, failed, ttft, tpot):
    delta.count += len(failed)
    errors = int(failed.sum())
    delta.ok += len(failed) - errors
    if errors:
        delta.errors[Outcome.SERVER_ERROR] = delta.errors.get(Outcome.SERVER_ERROR, 0) + errors
    _add_many(delta.ttft, ttft)
    _add_many(delta.tpot, tpot)


# --- the judges ----------------------------------------------------------------------------------------


@dataclass
class Result:
    outcome: str  # rolled_back, promoted, paused (timed out: canary drained), running (horizon), crashed
    at_s: float | None = None
    incidents: int = 0


@dataclass
class Minutes:
    """Per-minute deltas of each arm, as the Rollup rows hold them."""

    canary: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)

    def fold(self, minute, canary, failed, ttft, tpot):
        for arm, mask in ((self.canary, canary), (self.baseline, ~canary)):
            _fold(arm.setdefault(minute, RollupDelta()), failed[mask], ttft[mask], tpot[mask])

    def window(self, since_minute, now_minute):
        """The StepWindow controller.step_window would build: the baseline's minutes from
        analysis.REFERENCE_MINUTES before the step as its reference."""
        reference = [self.baseline[m] for m in range(since_minute - analysis.REFERENCE_MINUTES, now_minute + 1)
                     if m in self.baseline]
        minutes = [m for m in range(since_minute, now_minute + 1) if m in self.canary or m in self.baseline]
        return analysis.StepWindow([self.canary.get(m) or RollupDelta() for m in minutes],
                                   [self.baseline.get(m) or RollupDelta() for m in minutes], reference)


def weathervane(world, case):
    """Run the plan through analysis.judge and controller.decide; return the Result."""
    rollout = Rollout(plan=list(case.plan), guards=list(case.guards), alpha=analysis.ALPHA, step=0)
    guards = [analysis.Guard(**g) for g in case.guards]
    minutes = Minutes()
    _warm_up(world, minutes)
    step, weight, started, incidents = 0, case.plan[0]["weight"], 0.0, 0
    rollout.step_started_at = EPOCH
    for now in range(LOOK_S, case.horizon_s + 1, LOOK_S):
        canary, failed, ttft, tpot = world.requests(now - LOOK_S, weight, step)
        minutes.fold((now - LOOK_S) // 60, canary, failed, ttft, tpot)
        window = minutes.window(int(started // 60), (now - 1) // 60)
        judgement = controller.judge_window(rollout, window, guards)
        incidents += judgement.incident
        decision = controller.decide(rollout, judgement, window.requests()[0], EPOCH + timedelta(seconds=now))
        if decision == controller.Decision.ROLL_BACK:
            return Result("rolled_back", now, incidents)
        if decision == controller.Decision.TIMED_OUT:
            return Result("paused", now, incidents)
        if decision == controller.Decision.NEXT_STEP:
            rollout.carried = controller.next_carried(judgement)
            step += 1
            weight = case.plan[step]["weight"]
            if weight == 100:
                return Result("promoted", now, incidents)
            rollout.step, started = step, float(now)
            rollout.step_started_at = EPOCH + timedelta(seconds=now)
    return Result("running", None, incidents)


def _warm_up(world, minutes):
    for start in range(-WARMUP_S, 0, LOOK_S):
        canary, failed, ttft, tpot = world.requests(start, 0, 0)
        minutes.fold(start // 60, canary, failed, ttft, tpot)


def flagger(world, case):
    """Every minute: canary error rate <= baseline + 1 pp, TTFT and TPOT p95 <= 1.2 x the baseline's."""
    step, weight, failed_checks, bucket = 0, case.plan[0]["weight"], 0, []
    for now in range(LOOK_S, case.horizon_s + 1, LOOK_S):
        bucket.append(world.requests(now - LOOK_S, weight, step))
        if now % 60:
            continue
        canary, failed, ttft, tpot = (np.concatenate(parts) for parts in zip(*bucket, strict=True))
        bucket = []
        if _flagger_check_fails(canary, failed, ttft, tpot):
            failed_checks += 1
            if failed_checks >= 2:
                return Result("rolled_back", now)
            continue
        if canary.any():
            step += 1
            weight = case.plan[step]["weight"]
            if weight == 100:
                return Result("promoted", now)
    return Result("running")


def _flagger_check_fails(canary, failed, ttft, tpot):
    if not canary.any() or canary.all():
        return False
    base = ~canary
    if failed[canary].mean() > failed[base].mean() + 0.01:
        return True
    return any(np.percentile(x[canary], 95) > 1.2 * np.percentile(x[base], 95) for x in (ttft, tpot))


# --- the run ---------------------------------------------------------------------------------------------


def run_case(case, rollouts, seed):
    summary = {}
    for name, judge in (("weathervane", weathervane), ("flagger", flagger)):
        results = []
        for index in range(rollouts):
            world = World(seed + index, case.traffic, case.horizon_s)
            try:
                results.append(judge(world, case))
            except Exception as exc:  # a crash is a result of its own (the 100 % step used to divide by zero)
                results.append(Result("crashed"))
                print(f"{case.name} {name} #{index}: {exc!r}", file=sys.stderr)
        summary[name] = summarize(results, case)
    return summary


def summarize(results, case):
    n = len(results)
    share = {kind: sum(r.outcome == kind for r in results) / n
             for kind in ("rolled_back", "promoted", "paused", "running", "crashed")}
    times = [r.at_s for r in results if r.outcome == "rolled_back"]
    promoted = [r.at_s for r in results if r.outcome == "promoted"]
    met = share["promoted"] if case.wanted == "promoted" else 1 - share["promoted"] - share["running"]
    return {"rollouts": n, **share, "good": met, "incident_holds": sum(r.incidents > 0 for r in results) / n,
            "median_s_to_rolled_back": statistics.median(times) if times else None,
            "median_s_to_promoted": statistics.median(promoted) if promoted else None,
            "within_10_min": sum(t <= 600 for t in times) / n}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=100, help="rollouts per case")
    parser.add_argument("--case", action="append", help="run only these cases (repeatable)")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/rollouts-<time>.json)")
    return parser.parse_args()


def main():
    args = parse_args()
    started = time.perf_counter()
    cases = {}
    for index, case in enumerate(c for c in CASES if not args.case or c.name in args.case):
        t0 = time.perf_counter()
        cases[case.name] = {"title": case.title, "goal": case.goal, "wanted": case.wanted,
                            **run_case(case, args.rollouts, args.seed + 100_000 * index)}
        print(case.name, f"{time.perf_counter() - t0:.0f}s", json.dumps(cases[case.name]), flush=True)
    data = {"at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "rollouts": args.rollouts, "seed": args.seed,
            "alpha": analysis.ALPHA, "plan": [dict(s) for s in PLAN], "guards": list(analysis.DEFAULT_GUARDS),
            "seconds": round(time.perf_counter() - started, 1), "cases": cases}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"rollouts-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out} in {data['seconds']} s")


if __name__ == "__main__":
    main()
