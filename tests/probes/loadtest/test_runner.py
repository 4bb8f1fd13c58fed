"""Caps, stop, thresholds and abort on the fake clock."""

import asyncio

from probes.loadtest.profiles import Phase
from probes.loadtest.prompts import builtin
from probes.loadtest.runner import LoadTest, Plan, RunStatus, stall_reason
from probes.loadtest.thresholds import parse
from tests.probes.loadtest.fakes import FakeClock, FakeTarget


def load_test(clock, target, **plan):
    fields = {"phases": [Phase("c", concurrency=2)], "prompts": builtin(), "max_requests": 1000,
              "max_duration_s": 100.0}
    return LoadTest(Plan(**{**fields, **plan}), target.send, clock=clock)


def test_stop_ends_the_run_at_once_and_cancels_what_is_in_flight():
    clock = FakeClock()
    target = FakeTarget(clock, seconds=1.0)
    test = load_test(clock, target)

    async def main():
        async def stop_later():
            await clock.sleep_until(3.5)
            test.stop()
        stopper = asyncio.ensure_future(stop_later())
        result = await test.execute()
        await stopper
        return result

    result = asyncio.run(clock.drive(main()))
    assert result["status"] == RunStatus.STOPPED
    assert result["summary"]["count"] == 6  # three rounds of two by t=3
    assert result["cancelled"] == 2
    assert clock.now() < 4.0


def test_a_failing_threshold_fails_the_run_without_stopping_it():
    clock = FakeClock()
    target = FakeTarget(clock, seconds=0.1, outcome="server_error")
    test = load_test(clock, target, max_requests=30, thresholds=[parse("error_rate < 1%")])
    result = asyncio.run(clock.drive(test.execute()))
    assert result["status"] == RunStatus.FINISHED
    assert result["summary"]["count"] == 30
    assert result["passed"] is False
    assert result["thresholds"] == [{"threshold": "error_rate < 1%", "value": 1.0, "ok": False}]


def test_abort_on_fail_stops_the_run_once_a_threshold_is_crossed():
    clock = FakeClock()
    target = FakeTarget(clock, seconds=0.1, outcome="server_error")
    test = load_test(clock, target, max_requests=1000, thresholds=[parse("error_rate < 1%")], abort_on_fail=True)
    result = asyncio.run(clock.drive(test.execute()))
    assert result["status"] == RunStatus.ABORTED
    assert "error_rate < 1%" in result["stop_reason"]
    assert 20 <= result["summary"]["count"] < 100


def test_thresholds_that_hold_pass_the_run():
    clock = FakeClock()
    target = FakeTarget(clock, seconds=0.1)
    test = load_test(clock, target, max_requests=10, thresholds=[parse("error_rate < 1%"), parse("p95(e2e) < 200ms")])
    result = asyncio.run(clock.drive(test.execute()))
    assert result["passed"] is True


def test_progress_reports_done_planned_and_the_phase():
    clock = FakeClock()
    target = FakeTarget(clock, seconds=0.3)
    seen = []

    async def on_progress(progress):
        seen.append(progress)

    test = LoadTest(Plan(phases=[Phase("c", concurrency=1)], prompts=builtin(), max_requests=10, max_duration_s=100.0),
                    target.send, clock=clock, on_progress=on_progress)
    asyncio.run(clock.drive(test.execute()))
    assert seen
    assert seen[-1]["planned"] == 10
    assert 0 < seen[-1]["done"] <= 10
    assert seen[-1]["phase"] == "c"


def test_a_generator_too_busy_to_keep_time_says_the_run_was_limited_by_the_client():
    import time

    from probes.loadtest.metrics import Sample

    async def hog(prompt):  # the client itself burns the event loop's time
        end = time.perf_counter() + 0.06
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)
        return Sample(e2e=60.0)

    plan = Plan(phases=[Phase("c", concurrency=1)], prompts=builtin(), max_requests=15, max_duration_s=30.0)
    result = asyncio.run(LoadTest(plan, hog).execute())
    assert result["client_limited"] is True
    assert "event loop woke" in result["client_limited_reason"]
    assert result["generator_cpu_share"] > 0.1  # how much more depends on the machine's other work


def test_a_late_loop_is_blamed_on_the_generator_when_it_was_busy_and_on_the_machine_when_it_was_not():
    assert "it was busy, using 90% of a core" in stall_reason(60, 0.9)
    assert "the machine is busy, using 20% of a core" in stall_reason(60, 0.2)


def test_a_run_with_time_to_spare_is_not_limited_by_the_client():
    # On the fake clock: how late a real event loop wakes depends on the machine's other work (the
    # real-clock blame is tested above); here only the generator's own bookkeeping can flag the run.
    clock = FakeClock()
    target = FakeTarget(clock, seconds=0.01)
    plan = Plan(phases=[Phase("r", rate=50.0)], prompts=builtin(), max_requests=25, max_duration_s=30.0)
    result = asyncio.run(clock.drive(LoadTest(plan, target.send, clock=clock).execute()))
    assert result["summary"]["count"] == 25
    assert result["client_limited"] is False, result["client_limited_reason"]
    assert target.most_in_flight == 1  # 10 ms answers 20 ms apart never overlap
