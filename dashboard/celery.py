"""The Celery app for the scaled mode (probes run as Celery tasks)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("weathervane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
