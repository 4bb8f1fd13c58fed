"""Each profile's schedule: arrival times and concurrency, on a fake clock (no sleeping)."""

import itertools
import statistics

import pytest

from probes.loadtest import profiles
from probes.loadtest.profiles import Phase, ProfileKind
from probes.loadtest.prompts import builtin
from probes.loadtest.runner import LoadTest, Plan, RunStatus
from tests.probes.loadtest.fakes import FakeClock, FakeTarget


def first(iterator, n):
    return list(itertools.islice(iterator, n))


def run(phases, requests=100, duration_s=1000.0, seconds=1.0, sweep_steps=0, max_in_flight=512):
    clock = FakeClock()
    target = FakeTarget(clock, seconds=seconds)
    plan = Plan(phases=phases, prompts=builtin(), max_requests=requests, max_duration_s=duration_s,
                sweep_steps=sweep_steps, max_in_flight=max_in_flight)
    test = LoadTest(plan, target.send, clock=clock)
    result = __import__("asyncio").run(clock.drive(test.execute()))
    return target, result


def test_constant_rate_arrives_every_one_over_rate():
    assert first(profiles.constant_arrivals(4.0), 5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_poisson_arrivals_are_seeded_and_average_the_rate():
    one = first(profiles.poisson_arrivals(10.0, seed=3), 5000)
    assert one == first(profiles.poisson_arrivals(10.0, seed=3), 5000)
    assert one != first(profiles.poisson_arrivals(10.0, seed=4), 5000)
    gaps = [b - a for a, b in zip(one, one[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.1, rel=0.1)  # exponential: sd equals the mean


def test_a_ramp_from_zero_to_ten_per_second_over_ten_seconds_sends_fifty_requests_denser_at_the_end():
    times = list(profiles.stage_arrivals([(10.0, 10.0)]))
    assert len(times) == 50
    assert times[-1] <= 10.0
    # the integrated rate t²/2 reaches n at sqrt(2n)
    assert times[8] == pytest.approx(4.0)
    assert times[32] == pytest.approx(8.0)


def test_stages_ramp_up_hold_and_down():
    times = list(profiles.stage_arrivals([(2.0, 4.0), (3.0, 4.0), (2.0, 0.0)]))
    in_hold = [t for t in times if 2.0 <= t < 5.0]
    assert len(in_hold) == 12  # 4/s for 3 s
    assert len(times) == pytest.approx(4 + 12 + 4, abs=1)


def test_a_sweep_spreads_rates_evenly_between_synchronous_and_maximum():
    assert profiles.sweep_rates(2.0, 12.0, 4) == [4.0, 6.0, 8.0, 10.0]


def test_synchronous_sends_one_at_a_time_back_to_back():
    target, result = run(profiles.phases_for(ProfileKind.SYNCHRONOUS), requests=5, seconds=2.0)
    assert target.starts == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert target.most_in_flight == 1
    assert result["summary"]["count"] == 5


def test_fixed_concurrency_keeps_that_many_in_flight():
    target, result = run(profiles.phases_for(ProfileKind.CONCURRENT, [4]), requests=12, seconds=1.0)
    assert target.most_in_flight == 4
    assert target.starts == [0.0] * 4 + [1.0] * 4 + [2.0] * 4


def test_several_concurrencies_run_one_after_the_other_with_a_share_of_the_cap_each():
    target, result = run(profiles.phases_for(ProfileKind.CONCURRENT, [1, 3]), requests=6, seconds=1.0)
    assert target.starts == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert [p["label"] for p in result["phases"]] == ["concurrency 1", "concurrency 3"]
    assert [p["count"] for p in result["phases"]] == [3, 3]


def test_constant_rate_starts_on_schedule_whatever_the_answers_take():
    target, result = run(profiles.phases_for(ProfileKind.CONSTANT, rate=2.0), requests=6, seconds=5.0)
    assert target.starts == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert target.most_in_flight == 6  # open loop: slow answers do not slow the arrivals
    assert result["client_limited"] is False


def test_poisson_profile_follows_its_seeded_schedule():
    phase = profiles.phases_for(ProfileKind.POISSON, rate=5.0, seed=11)
    target, _ = run(phase, requests=20, seconds=0.1)
    assert target.starts == pytest.approx(first(profiles.poisson_arrivals(5.0, 11), 20))


def test_a_sweep_measures_synchronous_and_maximum_then_runs_the_rates_between():
    target, result = run(profiles.phases_for(ProfileKind.SWEEP), requests=384, seconds=1.0, sweep_steps=2,
                         duration_s=40.0)
    labels = [p["label"] for p in result["phases"]]
    assert labels[:2] == ["synchronous", "maximum"]
    # 96 requests a phase; synchronous: 1/s; maximum: three rounds of 32 in 3 s -> 32/s; between: 11.333 and 21.667/s
    assert labels[2:] == ["11.333/s", "21.667/s"]


def test_the_request_cap_holds():
    target, result = run([Phase("fast", rate=100.0)], requests=7, seconds=0.01)
    assert len(target.starts) == 7


def test_the_time_cap_cancels_what_is_in_flight_and_counts_it_apart():
    target, result = run([Phase("c", concurrency=3)], requests=100, seconds=4.0, duration_s=10.0)
    assert result["summary"]["count"] == 6  # two rounds of three finished by t=8; the third round is cut at t=10
    assert result["cancelled"] == 3
    assert result["status"] == RunStatus.FINISHED
    assert result["stop_reason"] == "time cap reached"


def test_arrivals_that_find_every_slot_taken_mark_the_run_as_limited_by_the_client():
    target, result = run([Phase("r", rate=10.0)], requests=20, seconds=5.0, max_in_flight=5)
    assert result["client_limited"] is True
    assert "request slots" in result["client_limited_reason"]
