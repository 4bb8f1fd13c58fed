"""Celery task of the scaled mode: beat runs `tick_alerts` every ALERT_TICK_EVERY_S seconds (see
`manage.py setup_probe_schedule`). The tick claims the engine's lease, so a second beat or a redelivered
message never sends a notification twice.

Celery tasks of alert delivery (the scaled mode). Thin: ids and the JSON message in, dashboard.alerts.delivery
does the work. The retry schedule is declared here and matches `delivery.backoff_s` (no jitter)."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from dashboard.alerts import delivery
from dashboard.alerts.message import Message
from probes import scheduler

from . import engine

log = logging.getLogger(__name__)


@shared_task(
    bind=True, acks_late=True, ignore_result=True,
    autoretry_for=(delivery.RetryLater,), max_retries=settings.ALERT_DELIVERY_ATTEMPTS - 1,
    retry_backoff=settings.ALERT_DELIVERY_BACKOFF_S, retry_backoff_max=delivery.MAX_BACKOFF_S, retry_jitter=False,
    default_retry_delay=settings.ALERT_DELIVERY_BACKOFF_S,
    soft_time_limit=settings.ALERT_DELIVERY_TIMEOUT_S * 3, time_limit=settings.ALERT_DELIVERY_TIMEOUT_S * 3 + 10,
)
def deliver_notification(self, channel_id, message, notification):
    """Make the next attempt of one notification (`message`: Message.as_json()) to one channel; returns the
    Delivery id, or None when the channel is gone or disabled. Raises RetryLater when another attempt is due."""
    row = delivery.attempt(channel_id, Message.from_json(message), self.request.retries + 1, notification)
    if row is not None and row.next_attempt_at is not None:
        raise delivery.RetryLater(f"channel {channel_id}: attempt {row.attempt} failed")
    return row.pk if row is not None else None


@shared_task(ignore_result=True, expires=30, soft_time_limit=50, time_limit=60,
             autoretry_for=(OperationalError, InterfaceError), max_retries=2)
def tick_alerts():
    """Run one alert evaluation; return its counts, or None when another tick holds the lease."""
    return engine.tick()


def tick_soon():
    """Have the alert engine tick soon, never on the calling thread: a page that changed silences must not run
    the tick in its web request (every rule and matcher, under the engine's lease). The embedded scheduler ticks
    on its next turn; in the scaled mode a `tick_alerts` task is queued once the caller's transaction commits."""
    if settings.PROBES_IN_PROCESS:
        scheduler.bring_alerts_forward()
    else:
        transaction.on_commit(_queue_tick)


def _queue_tick():
    try:
        tick_alerts.apply_async(retry=True, retry_policy=delivery.QUEUE_RETRY)
    except Exception as exc:  # the broker is away: beat's next tick does it
        log.warning("could not queue an alert tick: %s", type(exc).__name__)
