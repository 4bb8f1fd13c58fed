"""The Celery tasks' logic without a broker: dispatch once per slot, claims, pruning, the beat schedule."""

from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from probes import runner, slots, tasks
from probes.models import ProbeResult, ProbeSlot, ProbeTarget, Rollup
from probes.rollups import Aggregator, save_deltas
from probes.signals import ensure_all_targets
from routing.models import ApiKey, Deployment
from tests.probes.conftest import BAD_KEY, GOOD_KEY

pytestmark = pytest.mark.timeout(30)


def test_each_due_slot_is_handed_out_once_whatever_the_number_of_dispatchers(make_target):
    target = make_target("instant", interval_s=5)
    now = runner.now_ms()
    first = runner.plan_dispatch(10, now=now)
    due = slots.slots_between(target.pk, 5, now - 2000, now + 10_000)
    assert [(t, s) for t, s, _ in first] == [(target.pk, s) for s in due]
    assert runner.plan_dispatch(10, now=now) == []  # a second beat at the same moment gets nothing
    later = runner.plan_dispatch(10, now=now + 5000)
    assert len(later) == 1 and later[0][1] == first[-1][1] + 5000


def test_paused_and_disabled_targets_are_not_dispatched(make_target):
    paused = make_target("instant", enabled=False)
    off = make_target("instant")
    Deployment.objects.filter(pk=off.deployment_id).update(enabled=False)
    assert {t for t, _, _ in runner.plan_dispatch(60)} & {paused.pk, off.pk} == set()


def test_dispatch_enqueues_each_probe_at_its_slot_with_an_expiry(make_target, settings):
    settings.PROBE_DISPATCH_EVERY_S = 5
    target = make_target("instant", interval_s=5)
    with mock.patch.object(tasks.run_probe, "apply_async") as enqueue:
        count = tasks.dispatch_due_probes()
    assert count == enqueue.call_count >= 2
    for call in enqueue.call_args_list:
        (target_id, slot), eta, expires = call.args[0], call.kwargs["eta"], call.kwargs["expires"]
        assert target_id == target.pk and eta.timestamp() * 1000 == pytest.approx(slot, abs=1)
        assert (expires - eta) == timedelta(seconds=5)


def test_the_probe_task_runs_a_slot_once(make_target):
    target = make_target("instant")
    first = tasks.run_probe(target.pk, 123_000)
    assert first is not None and tasks.run_probe(target.pk, 123_000) is None
    assert ProbeResult.objects.filter(target=target, slot=123_000).count() == 1


def test_a_slot_leased_by_a_live_worker_is_busy_and_an_expired_lease_is_taken_over(make_target):
    target = make_target("instant")
    ProbeSlot.objects.create(target=target, slot=7_000, lease_until=timezone.now() + timedelta(seconds=30), attempts=1)
    with pytest.raises(runner.SlotBusy) as busy:
        runner.run_probe(target.pk, 7_000)
    assert 25 < busy.value.retry_in_s <= 30
    ProbeSlot.objects.filter(slot=7_000).update(lease_until=timezone.now() - timedelta(seconds=1))  # that worker died
    assert runner.run_probe(target.pk, 7_000).outcome == "ok"
    assert ProbeSlot.objects.get(slot=7_000).attempts == 2


def test_the_probe_task_retries_a_busy_slot_by_its_declared_policy():
    assert runner.SlotBusy in tasks.run_probe.autoretry_for and tasks.run_probe.acks_late
    assert tasks.run_probe.max_retries * tasks.run_probe.retry_backoff_max >= 120 + runner.LEASE_MARGIN_S


def test_a_probe_of_a_deleted_target_does_nothing(db):
    assert tasks.run_probe(987_654, 1_000) is None


def test_pruning_drops_only_data_past_its_retention(make_target, settings):
    settings.PROBE_RAW_RETENTION_DAYS, settings.ROLLUP_RETENTION_DAYS = 7, 90
    target = make_target("instant")
    old, recent = runner.run_probe(target.pk, 1_000), runner.run_probe(target.pk, 2_000)
    ProbeResult.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(days=8))
    ProbeSlot.objects.filter(slot=1_000).update(created_at=timezone.now() - timedelta(days=2))
    agg = Aggregator("probe")
    agg.add(target.deployment_id, when=timezone.now() - timedelta(days=91), outcome="ok", latency_ms=5)
    save_deltas(agg.drain())
    deleted = tasks.prune_old_data()
    assert deleted["results"] == 1 and deleted["rollups"] == 1 and deleted["slots"] == 1
    assert list(ProbeResult.objects.values_list("pk", flat=True)) == [recent.pk]
    assert Rollup.objects.count() == 1


def test_setup_probe_schedule_creates_the_beat_entries_once(db, settings):
    settings.PROBE_DISPATCH_EVERY_S = 3
    call_command("setup_probe_schedule", stdout=mock.Mock())
    call_command("setup_probe_schedule", stdout=mock.Mock())
    dispatch = PeriodicTask.objects.get(task="probes.tasks.dispatch_due_probes")
    assert dispatch.interval.every == 3 and dispatch.enabled
    assert PeriodicTask.objects.filter(task="probes.tasks.prune_old_data").count() == 1
    recheck = PeriodicTask.objects.get(task="probes.tasks.recheck_keys")
    assert recheck.interval.every == 3 and recheck.enabled


def test_beat_hands_out_each_due_key_re_check_and_the_task_runs_it_once(make_target, simulator):
    simulator.simulator.keys = frozenset({GOOD_KEY, BAD_KEY})  # the refused key works again
    target = make_target("instant", keys=(GOOD_KEY, BAD_KEY))
    key = ApiKey.objects.get(provider=target.deployment.provider, label="key-1")
    ApiKey.suspect(key.pk, "the upstream refused it once: HTTP 401", "system:gateway")
    with mock.patch.object(tasks.recheck_key, "delay") as enqueue:
        assert tasks.recheck_keys() == 1
    enqueue.assert_called_once_with(key.pk)
    tasks.recheck_key(key.pk)
    tasks.recheck_key(key.pk)  # delivered twice: nothing more is sent
    assert len([a for a in simulator.simulator.attempts() if a.key == "…" + BAD_KEY[-4:]]) == 1
    assert ApiKey.objects.get(pk=key.pk).suspect_since is None


def test_every_enabled_deployment_gets_one_target_automatically(make_target):
    target = make_target("instant")
    deployment = target.deployment
    deployment.display_name = "renamed"
    deployment.save()
    assert ProbeTarget.objects.filter(deployment=deployment).count() == 1
    off = Deployment.objects.create(name="off", provider=deployment.provider, upstream_model="x", enabled=False)
    assert not ProbeTarget.objects.filter(deployment=off).exists()
    Deployment.objects.filter(pk=off.pk).update(enabled=True)  # e.g. enabled by a bulk update: no signal
    assert ensure_all_targets() == 1 and ProbeTarget.objects.filter(deployment=off).count() == 1
