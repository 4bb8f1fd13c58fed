"""Celery task of the scaled mode: beat runs `tick_alerts` every ALERT_TICK_EVERY_S seconds (see
`manage.py setup_probe_schedule`). The tick claims the engine's lease, so a second beat or a redelivered
message never sends a notification twice."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import engine


@shared_task(ignore_result=True, expires=30, soft_time_limit=50, time_limit=60,
             autoretry_for=(OperationalError, InterfaceError), max_retries=2)
def tick_alerts():
    """Run one alert evaluation; return its counts, or None when another tick holds the lease."""
    return engine.tick()
