"""The tick runs by itself: a beat entry in the scaled mode, the embedded scheduler otherwise."""

import time
from unittest import mock

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from dashboard.alerts import tasks
from dashboard.alerts.models import Alert, EngineLease

from .conftest import make_rule, set_health


@pytest.mark.django_db
def test_setup_probe_schedule_adds_the_alert_tick_once(settings):
    settings.ALERT_TICK_EVERY_S = 7
    call_command("setup_probe_schedule", stdout=mock.Mock())
    call_command("setup_probe_schedule", stdout=mock.Mock())
    entry = PeriodicTask.objects.get(task="dashboard.alerts.tasks.tick_alerts")
    assert entry.interval.every == 7 and entry.enabled


@pytest.mark.django_db
def test_the_beat_task_runs_one_leased_tick(world, sent):
    make_rule()
    set_health(world.canary, "down")
    assert tasks.tick_alerts() == {"firing": 1, "pending": 0, "sent": 0}
    assert EngineLease.objects.get().ticks == 1 and Alert.objects.get().state == "firing"


@pytest.mark.django_db(transaction=True)
def test_the_embedded_scheduler_ticks_the_alerts(settings, sent):
    from probes.scheduler import Scheduler
    from tests.factories import canary_world

    world = canary_world()
    make_rule()
    set_health(world.canary, "down")
    settings.ALERT_TICK_EVERY_S = 1
    scheduler = Scheduler(threads=2, refresh_s=3600).start()
    try:
        deadline = time.monotonic() + 60  # generous: the machine is shared
        while time.monotonic() < deadline and not Alert.objects.filter(state="firing").exists():
            time.sleep(0.2)
    finally:
        scheduler.stop()
    assert Alert.objects.filter(state="firing").count() == 1
