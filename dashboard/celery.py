"""The Celery app for the scaled mode (probes run as Celery tasks)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("weathervane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
