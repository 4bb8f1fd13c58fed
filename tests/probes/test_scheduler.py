"""The embedded scheduler probes on its own, spread over the interval, with no broker."""

import time

import pytest
from django.db import OperationalError

from probes import slots
from probes.models import ProbeResult, ProbeTarget, Rollup
from probes.scheduler import Scheduler

pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db(transaction=True)]


def wait_for(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OperationalError:  # the in-memory test database locks whole tables while the probe threads write
            pass
        time.sleep(0.1)
    return False


@pytest.fixture
def scheduler():
    running = Scheduler(threads=4, refresh_s=0.5)
    yield running
    running.stop()


def test_it_probes_every_target_by_itself_and_rollups_appear_within_10_seconds(make_target, scheduler):
    targets = [make_target("instant", interval_s=5) for _ in range(3)]
    scheduler.start()
    assert wait_for(lambda: Rollup.objects.filter(source="probe").count() >= 1
                    and all(ProbeResult.objects.filter(target=t).exists() for t in targets), timeout=10)
    lags = list(ProbeResult.objects.values_list("lag_ms", flat=True))
    assert max(lags) < 1000, lags


def test_a_paused_target_stops_being_probed(make_target, scheduler):
    target = make_target("instant", interval_s=5, enabled=False)
    scheduler.start()
    time.sleep(1.5)
    assert scheduler.intervals == {} and not ProbeResult.objects.exists()
    ProbeTarget.objects.filter(pk=target.pk).update(enabled=True)
    assert wait_for(lambda: scheduler.intervals == {target.pk: 5}, timeout=3)


def test_it_re_checks_a_suspect_key_by_itself(make_target, scheduler):
    from routing.models import ApiKey, KeyState
    from tests.probes.conftest import BAD_KEY, GOOD_KEY

    target = make_target("instant", keys=(GOOD_KEY, BAD_KEY), enabled=False)  # no regular probe gets there first
    key = ApiKey.objects.get(provider=target.deployment.provider, label="key-1")
    ApiKey.suspect(key.pk, "the upstream refused it once: HTTP 401", "system:gateway")
    scheduler.start()
    assert wait_for(lambda: ApiKey.objects.get(pk=key.pk).state == KeyState.INVALID, timeout=10)
    assert "a probe confirmed the 401" in ApiKey.objects.get(pk=key.pk).state_reason


def test_it_finds_a_new_deployments_context_window_by_itself(make_target, simulator, scheduler):
    from routing.models import Deployment, WindowSource

    simulator.simulator.configure("windowed", context_window=6000)
    target = make_target("windowed", enabled=False)
    scheduler.start()
    assert wait_for(lambda: Deployment.objects.get(pk=target.deployment_id).window()
                    == (6000, WindowSource.PROVIDER), timeout=10)


def test_stop_ends_the_thread(scheduler):
    scheduler.start()
    assert scheduler.running
    scheduler.stop()
    assert not scheduler.running


def test_slots_of_many_targets_are_spread_over_the_interval():
    interval_ms = 10_000
    offsets = sorted(slots.offset_ms(target_id, interval_ms) for target_id in range(1, 201))
    # 200 targets in 10 s would be 50 ms apart if perfectly even; no second holds more than a fifth of them.
    per_second = [sum(1 for o in offsets if s * 1000 <= o < (s + 1) * 1000) for s in range(10)]
    assert max(per_second) <= 40 and min(per_second) >= 5


def test_slot_arithmetic_lands_on_the_targets_grid():
    first = slots.slot_at_or_after(7, 10, 1_000_000)
    assert first >= 1_000_000 and (first - slots.offset_ms(7, 10_000)) % 10_000 == 0
    assert slots.slots_between(7, 10, first, first + 30_000) == [first, first + 10_000, first + 20_000]


def test_a_target_never_probed_gets_a_first_probe_at_once_whatever_its_interval(make_target, scheduler):
    target = make_target("instant", interval_s=3600)
    scheduler.start()
    assert wait_for(lambda: ProbeResult.objects.filter(target=target).exists(), timeout=8)
    time.sleep(1)
    assert ProbeResult.objects.filter(target=target).count() == 1  # then back to its hourly slots


def test_long_running_probe_threads_keep_no_growing_query_log_in_debug_mode(make_target, settings):
    # DEBUG keeps every query a thread runs until a request starts; the scheduler's threads never see one.
    from django.db import connection

    target = make_target("instant", interval_s=5)
    settings.DEBUG = True
    first = slots.slot_at_or_after(target.pk, 5, int(time.time() * 1000))
    running, logged = Scheduler(threads=1), []
    for n in range(10):
        running._probe(target.pk, first + n * 5000)  # what a pool thread runs for each due slot
        running.refresh(int(time.time() * 1000))  # and the scheduler thread every few seconds
        logged.append(len(connection.queries_log))
    assert ProbeResult.objects.filter(target=target).count() == 10
    assert logged[-1] <= logged[0]
