"""Create or update celery beat's periodic tasks: probes, rollout and alert ticks (django-celery-beat's DB scheduler).

Run once after `migrate` in the scaled mode; running it again is harmless and
picks up a changed WEATHERVANE_PROBE_DISPATCH_EVERY.
"""

from django.conf import settings
from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask

SCHEDULE = (
    ("probes: dispatch due probes", "probes.tasks.dispatch_due_probes", lambda: settings.PROBE_DISPATCH_EVERY_S),
    ("probes: re-check keys", "probes.tasks.recheck_keys", lambda: settings.PROBE_DISPATCH_EVERY_S),
    ("probes: check context windows", "probes.tasks.check_windows", lambda: 60),
    ("probes: check prefill support", "probes.tasks.check_prefill", lambda: settings.PROBE_DISPATCH_EVERY_S),
    ("probes: prune old data", "probes.tasks.prune_old_data", lambda: 3600),
    ("rollouts: tick", "routing.rollouts.tasks.tick_rollouts", lambda: settings.ROLLOUT_TICK_EVERY_S),
    ("alerts: tick", "dashboard.alerts.tasks.tick_alerts", lambda: settings.ALERT_TICK_EVERY_S),
)


class Command(BaseCommand):
    help = "Create or update the celery beat schedule that dispatches and prunes probes."

    def handle(self, *args, **options):
        for name, task, every in SCHEDULE:
            interval, _ = IntervalSchedule.objects.get_or_create(every=every(), period=IntervalSchedule.SECONDS)
            _, created = PeriodicTask.objects.update_or_create(
                name=name, defaults={"task": task, "interval": interval, "enabled": True, "expire_seconds": every()},
            )
            self.stdout.write(f"{'created' if created else 'updated'} {name!r}: every {every()} s")
