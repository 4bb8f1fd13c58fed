"""Rollout ticks run by themselves: beat's task in the scaled mode, the in-process scheduler in the embedded mode."""

import time
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django_celery_beat.models import PeriodicTask

from probes.scheduler import Scheduler
from routing.outcomes import Outcome
from routing.rollouts import tasks
from routing.rollouts.controller import gate
from routing.rollouts.models import Rollout, RolloutState
from routing.simulator import Personality, Simulator, SimulatorServer
from tests.routing.gateway.helpers import make_provider, make_route

from .helpers import GUARDS, PLAN, draft, probe_results, world


@pytest.mark.django_db
def test_the_beat_task_ticks_every_rollout_with_work():
    w = world()
    rollout = draft(w)
    gate(rollout.pk, "start", reason="go", actor="admin")
    probe_results(w.canary, [Outcome.OK] * 3)
    assert tasks.tick_rollouts() == 1
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.RUNNING
    assert w.route.weights() == {"canary": 10, "stable": 90}


@pytest.mark.django_db
def test_setup_probe_schedule_adds_the_rollout_tick_once(settings):
    settings.ROLLOUT_TICK_EVERY_S = 4
    call_command("setup_probe_schedule", stdout=mock.Mock())
    call_command("setup_probe_schedule", stdout=mock.Mock())
    entry = PeriodicTask.objects.get(task="routing.rollouts.tasks.tick_rollouts")
    assert entry.interval.every == 4 and entry.enabled


def _state(pk):
    try:
        return Rollout.objects.get(pk=pk).state
    except OperationalError:  # the in-memory test database locks while the scheduler's threads write
        return None


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_the_embedded_scheduler_preflights_a_canary_against_the_simulator_and_gives_it_its_first_step(settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    with SimulatorServer(Simulator(models={"instant": Personality()}, seed=5)) as server:
        provider = make_provider(server)
        route = make_route("chat", provider, {"stable": ("instant", 100), "canary": ("instant", 0)})
        rollout = Rollout.objects.create(route=route, canary=provider.deployments.get(name="canary"), plan=PLAN,
                                         guards=GUARDS)
        gate(rollout.pk, "start", reason="go", actor="admin")
        scheduler = Scheduler(threads=2, refresh_s=0.3).start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _state(rollout.pk) != RolloutState.RUNNING:
                time.sleep(0.2)
        finally:
            scheduler.stop()
    assert Rollout.objects.get(pk=rollout.pk).state == RolloutState.RUNNING
    assert route.weights() == {"canary": 10, "stable": 90}
