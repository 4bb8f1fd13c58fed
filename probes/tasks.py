"""Celery tasks for the scaled mode. Thin: they take ids and call probes.runner.

Beat runs `dispatch_due_probes` every PROBE_DISPATCH_EVERY_S seconds (see
`manage.py setup_probe_schedule`); it hands each due (target, slot) out once
and enqueues `run_probe` with a countdown to the slot's due time, so probes
are spread over their interval. `run_probe` claims its slot, so a message
delivered twice (a second beat, a worker killed before acking) still leaves
exactly one result. `recheck_keys` (same period) hands out the re-checks of
invalid and suspect keys that are due, each claimed the same way; `check_windows` asks
providers and the catalogue for the context windows nobody typed (probes.windows), and
`check_prefill` (same period as the key re-checks) checks deployments' prefill support.
"""

from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from probes import prefill, rechecks, runner, windows
from probes.loadtest import jobs

# A dispatch covers two beat periods, so one late or lost tick skips nothing.
HORIZON_PERIODS = 2


@shared_task(
    acks_late=True, reject_on_worker_lost=True, ignore_result=True,
    autoretry_for=(runner.SlotBusy, OperationalError, InterfaceError),
    retry_backoff=2, retry_backoff_max=30, retry_jitter=False, max_retries=8,
    expires=600, soft_time_limit=150, time_limit=180,
)
def run_probe(target_id, slot):
    """Probe one target for one slot (epoch ms), at most once."""
    result = runner.run_probe(target_id, slot)
    return result.pk if result is not None else None


@shared_task(ignore_result=True, expires=30)
def dispatch_due_probes():
    """Enqueue every (target, slot) due in the next two beat periods. Returns how many."""
    planned = runner.plan_dispatch(settings.PROBE_DISPATCH_EVERY_S * HORIZON_PERIODS)
    for target_id, slot, interval in planned:
        due = datetime.fromtimestamp(slot / 1000, tz=UTC)
        expires = datetime.fromtimestamp(slot / 1000 + interval, tz=UTC)
        run_probe.apply_async((target_id, slot), eta=due, expires=expires)
    return len(planned)


@shared_task(ignore_result=True, expires=30)
def recheck_keys():
    """Enqueue the re-check of every invalid or suspect key that is due (probes.rechecks). Returns how many."""
    due = rechecks.plan()
    for key_id in due:
        recheck_key.delay(key_id)
    return len(due)


@shared_task(
    acks_late=True, reject_on_worker_lost=True, ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=30, max_retries=4,
    expires=300, soft_time_limit=150, time_limit=180,
)
def recheck_key(key_id):
    """Re-check one key with a one-token probe, if still due and not claimed elsewhere."""
    rechecks.recheck(key_id)


@shared_task(ignore_result=True, expires=60, soft_time_limit=300, time_limit=330)
def check_windows():
    """Ask each provider's model list and the catalogue for the windows of the deployments that are due
    (probes.windows). Returns how many were checked."""
    return windows.run_due()


@shared_task(ignore_result=True, expires=30)
def check_prefill():
    """Enqueue the prefill check of every deployment that is due (probes.prefill). Returns how many."""
    due = list(prefill.due_deployments(timezone.now()).values_list("pk", flat=True)[:prefill.MAX_PER_SWEEP])
    for deployment_id in due:
        check_prefill_of.delay(deployment_id)
    return len(due)


@shared_task(
    acks_late=True, reject_on_worker_lost=True, ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=30, max_retries=4,
    expires=300, soft_time_limit=150, time_limit=180,
)
def check_prefill_of(deployment_id):
    """Check whether one deployment continues an assistant prefill, if still due and not claimed elsewhere."""
    prefill.check(deployment_id)


@shared_task(ignore_result=True, acks_late=True, expires=3600)
def prune_old_data():
    """Delete probe data past its retention, and close load tests whose process died (disabling their gateway
    keys); returns {kind: rows deleted}."""
    jobs.close_abandoned()
    return runner.prune()
