"""Celery tasks of the scaled mode: beat runs `tick_rollouts` every ROLLOUT_TICK_EVERY_S seconds
(see `manage.py setup_probe_schedule`). Each rollout's tick claims a lease, so a second beat or a
redelivered message never advances a rollout twice."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import controller


@shared_task(ignore_result=True, expires=30, soft_time_limit=50, time_limit=60,
             autoretry_for=(OperationalError, InterfaceError), max_retries=2)
def tick_rollouts():
    """Tick every rollout that has work; return how many ticks were claimed."""
    return controller.tick_all()
