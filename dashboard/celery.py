"""The Celery app for the scaled mode (probes run as Celery tasks).

Imported with the `dashboard` package (dashboard/__init__.py), so every process that queues a task (the
control plane's alert deliveries and ticks too, not only workers and beat) sends it through this app's
broker, not Celery's unconfigured default.
"""

import logging
import os

from celery import Celery, Task, signals
from django.db import InterfaceError, OperationalError
from kombu.transport import TRANSPORT_ALIASES

from dashboard.outages import OutageLog

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

log = logging.getLogger(__name__)
DATABASE_DOWN = (OperationalError, InterfaceError)
TASKS = OutageLog(log, "The database", "the Celery worker's tasks")


class WeathervaneTask(Task):
    """Every task of the app: a database outage is expected, not a bug.

    Celery logs an expected error at INFO without a traceback (instead of an ERROR with one per task and
    tick for as long as the database is down); the outage itself is logged once when it starts and once
    when it ends (`TASKS`). Retries and expiry stay declared on each task.
    """

    throws = DATABASE_DOWN


# redis:// and rediss:// brokers through kombu's Redis transport without its crash on a lost broker.
TRANSPORT_ALIASES.update(redis="dashboard.broker:Transport", rediss="dashboard.broker:Transport")

app = Celery("weathervane", task_cls=WeathervaneTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_failure.connect
def note_a_database_outage(exception=None, **kwargs):
    if isinstance(exception, DATABASE_DOWN):
        TASKS.failed(exception)


@signals.task_retry.connect
def note_a_retry_for_a_database_outage(reason=None, **kwargs):
    if isinstance(reason, DATABASE_DOWN):
        TASKS.failed(reason)


@signals.task_success.connect
def note_the_database_answering(**kwargs):
    """Every task reads or writes the database: one that succeeded ends an outage."""
    TASKS.answered()


@signals.worker_init.connect
@signals.beat_init.connect
def refuse_diverging_keys(**kwargs):
    """A worker or beat whose keys cannot read the database's secrets stops at start (routing/keycheck.py).

    SystemExit, because Celery logs and swallows the exceptions of signal handlers.
    """
    from routing.keycheck import KeysDiverge, verify_at_start

    try:
        verify_at_start()
    except KeysDiverge as exc:
        raise SystemExit(f"weathervane.E001: {exc}") from None
