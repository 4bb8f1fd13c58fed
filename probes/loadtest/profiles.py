"""When requests start: pure schedules, testable on a fake clock.

A profile is a list of phases run one after the other. A closed-loop phase
keeps `concurrency` requests in flight; an open-loop phase starts requests at
arrival times (constant rate, seeded Poisson, or a ramp of k6-style stages)
whatever the target's answers, which is how a real audience behaves.
"""

import math
import random
from dataclasses import dataclass, field

from django.db import models


class ProfileKind(models.TextChoices):
    SYNCHRONOUS = "synchronous", "Synchronous (one at a time)"
    CONCURRENT = "concurrent", "Fixed concurrency"
    CONSTANT = "constant", "Constant rate"
    POISSON = "poisson", "Poisson arrivals"
    SWEEP = "sweep", "Sweep (synchronous, maximum, rates between)"
    STAGES = "stages", "Stages (ramps)"


SWEEP_MAX_CONCURRENCY = 32  # the "maximum throughput" step of a sweep


@dataclass(frozen=True)
class Phase:
    """One step of a profile: closed loop (`concurrency`) or open loop (`rate` or `stages`)."""

    label: str
    concurrency: int | None = None
    rate: float | None = None
    poisson: bool = False
    seed: int = 0
    stages: tuple = field(default=())  # ((duration_s, target rate/s), ...)

    @property
    def open_loop(self):
        return self.concurrency is None


def constant_arrivals(rate, start=0.0):
    """Yield arrival times (s) every 1/rate from `start`, forever."""
    for n in range_forever():
        yield start + n / rate


def poisson_arrivals(rate, seed, start=0.0):
    """Yield Poisson arrival times (exponential gaps of mean 1/rate), the same for the same seed."""
    rng = random.Random(seed)
    at = start
    while True:
        at += rng.expovariate(rate)
        yield at


def stage_arrivals(stages, start=0.0):
    """Yield arrival times for a rate that moves linearly to each stage's target
    over its duration (from 0 before the first); ends with the last stage.

    The n-th arrival is where the integrated rate reaches n (first at 0 when the rate starts above 0).
    """
    rate_before, stage_start, done = 0.0, start, 0.0
    n = 0
    for duration, target in stages:
        area = (rate_before + target) / 2 * duration
        while n <= done + area - 1e-9:
            yield stage_start + _time_for(n - done, rate_before, target, duration)
            n += 1
        done += area
        stage_start += duration
        rate_before = target


def _time_for(count, r0, r1, duration):
    """Return t in [0, duration] where r0*t + (r1-r0)*t²/(2*duration) = count."""
    slope = (r1 - r0) / duration
    if abs(slope) < 1e-12:
        return count / r0 if r0 else 0.0
    return (-r0 + math.sqrt(max(r0 * r0 + 2 * slope * count, 0.0))) / slope


def range_forever():
    n = 0
    while True:
        yield n
        n += 1


def arrivals(phase, start=0.0):
    """Return the arrival-time iterator of an open-loop phase."""
    if phase.stages:
        return stage_arrivals(phase.stages, start)
    if phase.poisson:
        return poisson_arrivals(phase.rate, phase.seed, start)
    return constant_arrivals(phase.rate, start)


def phases_for(kind, concurrencies=(1,), rate=None, seed=0, stages=()):
    """Return the fixed phases of a profile (a sweep's rate phases come later: `sweep_rates`)."""
    if kind == ProfileKind.SYNCHRONOUS:
        return [Phase("synchronous", concurrency=1)]
    if kind == ProfileKind.CONCURRENT:
        return [Phase(f"concurrency {c}", concurrency=c) for c in concurrencies]
    if kind == ProfileKind.CONSTANT:
        return [Phase(f"{rate:g}/s", rate=rate)]
    if kind == ProfileKind.POISSON:
        return [Phase(f"Poisson {rate:g}/s", rate=rate, poisson=True, seed=seed)]
    if kind == ProfileKind.STAGES:
        return [Phase("stages", stages=tuple(tuple(s) for s in stages))]
    if kind == ProfileKind.SWEEP:
        return [Phase("synchronous", concurrency=1), Phase("maximum", concurrency=SWEEP_MAX_CONCURRENCY)]
    raise ValueError(f"unknown profile {kind!r}")


def sweep_rates(synchronous_rps, maximum_rps, steps):
    """Return `steps` rates evenly spaced strictly between the synchronous and the maximum rate."""
    low, high = sorted((synchronous_rps, maximum_rps))
    gap = (high - low) / (steps + 1)
    return [round(low + gap * (i + 1), 3) for i in range(steps)]


def sweep_phases(synchronous_rps, maximum_rps, steps):
    return [Phase(f"{r:g}/s", rate=r) for r in sweep_rates(synchronous_rps, maximum_rps, steps) if r > 0]
