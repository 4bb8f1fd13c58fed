"""The project package. The Celery app is loaded with it (Celery's Django layout), so `shared_task`s queued
from any process use the configured broker."""

from dashboard.celery import app as celery_app

__all__ = ("celery_app",)
