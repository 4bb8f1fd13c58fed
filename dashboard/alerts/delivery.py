"""Delivery of alert notifications to channels, off the request and probe paths.

The contract between the alert engine and delivery (the engine calls only
these two functions):

- `enqueue(message, channel_ids)`: hand one `Message` to each enabled channel
  in `channel_ids`, asynchronously (a Celery task with retries and back-off
  in the scaled mode, the in-process worker in the embedded mode). Returns at
  once; never raises for a channel's failure (every attempt is logged).
- `send_test(channel)`: send a test notification to one channel now and
  return the logged delivery attempt.

Both modes share one retry schedule: up to ALERT_DELIVERY_ATTEMPTS attempts,
waiting ALERT_DELIVERY_BACKOFF_S after the first failure and twice as long
after each next one (40, 80, 160, 320 s by default: five attempts over ten
minutes). A failure that another attempt cannot mend (a 4xx other than
408/409/429, a refused recipient, a blocked address) is not retried. Which
mode: settings.ALERT_DELIVERY_IN_PROCESS (by default, where the probes run).
"""

import heapq
import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from dashboard.alerts import senders
from dashboard.alerts.message import Message, Status, page_url
from dashboard.alerts.models import Channel, Delivery, DeliveryOutcome
from routing import crypto
from routing.outcomes import redact, storable

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 600  # Celery's retry_backoff_max default: the embedded worker waits no longer either
MAX_ERROR = 300
PRUNE_EVERY_S = 3600
WORKER_THREADS = 4
QUEUE_RETRY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5}


class RetryLater(Exception):
    """The attempt failed and another one is due (the Celery task retries on it)."""


def backoff_s(attempt):
    """Return the wait after failed attempt number `attempt` (1-based), as Celery's retry_backoff computes it."""
    return min(MAX_BACKOFF_S, settings.ALERT_DELIVERY_BACKOFF_S * 2 ** (attempt - 1))


def enqueue(message, channel_ids):
    """Hand `message` to each enabled channel of `channel_ids` and return how many; never waits on a channel.

    Called inside a transaction, the notifications leave when it commits (and never, if it rolls back), so an
    engine that records what it notified in the same transaction cannot send twice. Call it from sync code.
    """
    ids = list(Channel.objects.filter(pk__in=list(channel_ids), enabled=True).values_list("pk", flat=True))
    payload = message.as_json()
    jobs = [Job(channel_id, payload, notification=uuid.uuid4().hex) for channel_id in ids]
    transaction.on_commit(lambda: _dispatch(jobs))
    return len(jobs)


def _dispatch(jobs):
    for job in jobs:
        if settings.ALERT_DELIVERY_IN_PROCESS:
            worker().submit(job)
        else:
            _queue(job)


def send_test(channel):
    """Send a test notification to `channel` now (once, no retries) and return its Delivery row."""
    now = timezone.now()
    message = Message(
        group_key="weathervane-test", status=Status.FIRING, severity="info",
        title="Test notification from Weathervane",
        text=f"If you can read this, the alert channel '{channel.name}' works.",
        labels={"channel": channel.name}, url=page_url("/alerts/channels/"), sent_at=now,
    )
    return attempt(channel.pk, message, 1, uuid.uuid4().hex, test=True)


def send_test_as(user, channel, reason):
    """`send_test` on behalf of `user`, recorded in the audit trail with its outcome; returns the Delivery row."""
    from routing.audit import actor_name, record
    from routing.models import AuditAction

    row = send_test(channel)
    record(action=AuditAction.TEST, obj=channel, actor=actor_name(user), user=user, reason=reason,
           after={"outcome": row.outcome, "http_status": row.http_status, "delivery": row.pk})
    return row


def attempt(channel_id, message, number, notification, test=False):
    """Make attempt `number` of one notification to one channel, log it, and return the Delivery row.

    Returns None when the channel is gone or, unless `test`, disabled since. The row's `next_attempt_at`
    is set when another attempt is due.
    """
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None or not (channel.enabled or test):
        return None
    started = time.monotonic()
    sent = _send(channel, message, notification)
    duration_ms = int((time.monotonic() - started) * 1000)
    again = not sent.ok and sent.retryable and not test and number < settings.ALERT_DELIVERY_ATTEMPTS
    row = Delivery.objects.create(
        channel=channel, notification=notification, group_key=message.group_key[:500], status=message.status,
        test=test, attempt=number, outcome=DeliveryOutcome.OK if sent.ok else DeliveryOutcome.FAILED,
        http_status=sent.http_status, error=_redacted(channel, sent.error), duration_ms=duration_ms,
        next_attempt_at=timezone.now() + timedelta(seconds=backoff_s(number)) if again else None,
    )
    if not sent.ok:
        log.warning("alert delivery to channel %r failed (attempt %s%s): %s", channel.name, number,
                    ", will retry" if again else "", row.error)
    _prune_now_and_then()
    return row


def _send(channel, message, notification):
    try:
        return senders.send(channel, message, notification)
    except crypto.SecretUnreadable:
        return senders.Sent(False, error="the channel's stored target cannot be decrypted with the configured keys")
    except Exception as exc:  # one broken channel must not stop the others; the text is redacted before use
        return senders.Sent(False, error=f"{type(exc).__name__}: {exc}", retryable=True)


def _redacted(channel, error):
    if not error:
        return ""
    try:
        secrets = channel.secret_parts()
    except crypto.SecretUnreadable:
        secrets = []
    return storable(redact(error, [*secrets, settings.EMAIL_HOST_PASSWORD]), MAX_ERROR)


_pruned_at = 0.0


def _prune_now_and_then():
    global _pruned_at
    if time.monotonic() - _pruned_at < PRUNE_EVERY_S and _pruned_at:
        return
    _pruned_at = time.monotonic()
    Delivery.objects.prune()


# --- Scaled mode: Celery ---------------------------------------------------------------------


def _queue(job):
    from dashboard.alerts import tasks

    try:
        # A broker that is away gets a second short try, not kombu's default of several seconds of retries.
        tasks.deliver_notification.apply_async((job.channel_id, job.message, job.notification), retry=True,
                                               retry_policy=QUEUE_RETRY)
    except Exception as exc:  # the broker is down: say so in the log of deliveries, do not fail the caller
        log.warning("could not queue an alert delivery for channel %s: %s", job.channel_id, type(exc).__name__)
        message = Message.from_json(job.message)
        Delivery.objects.create(
            channel_id=job.channel_id, notification=job.notification, group_key=message.group_key[:500],
            status=message.status, attempt=1, outcome=DeliveryOutcome.FAILED,
            error=f"the task queue could not be reached ({type(exc).__name__})",
        )


# --- Embedded mode: an in-process worker -------------------------------------------------------


@dataclass(frozen=True)
class Job:
    channel_id: int
    message: dict  # Message.as_json()
    notification: str
    number: int = 1


class Worker:
    """A heap of jobs by due time, run by a few threads; a failed attempt goes back in with its back-off.

    `clock` is injectable: tests drive `run_due()` themselves with a fake clock and never start the thread.
    """

    def __init__(self, clock=time.monotonic, threads=WORKER_THREADS):
        self.clock = clock
        self.threads = threads
        self._heap = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = None
        self._pool = None

    def submit(self, job, delay_s=0.0):
        with self._wake:
            heapq.heappush(self._heap, (self.clock() + delay_s, next(self._order), job))
            self._wake.notify()

    def pending(self):
        with self._wake:
            return [job for _, _, job in sorted(self._heap)]

    def run_due(self):
        """Run every due job in this thread; return how many ran."""
        due = self._take_due()
        for job in due:
            self.run(job)
        return len(due)

    def run(self, job):
        """Make one attempt of `job` and schedule the next one when it is due."""
        try:
            row = attempt(job.channel_id, Message.from_json(job.message), job.number, job.notification)
        except Exception:  # e.g. the database is away: the job is dropped, the worker lives on
            log.exception("alert delivery worker: attempt for channel %s failed", job.channel_id)
            row = None
        if row is not None and row.next_attempt_at is not None:
            next_job = Job(job.channel_id, job.message, job.notification, job.number + 1)
            self.submit(next_job, delay_s=backoff_s(job.number))

    def _take_due(self):
        now = self.clock()
        due = []
        with self._wake:
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[2])
        return due

    def start(self):
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop = False
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="alert-delivery")
        self._thread = threading.Thread(target=self._loop, name="alert-delivery", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _loop(self):
        while True:
            with self._wake:
                if self._stop:
                    return
                wait = self._heap[0][0] - self.clock() if self._heap else None
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    continue
            for job in self._take_due():
                self._pool.submit(self._run_pooled, job)

    def _run_pooled(self, job):
        try:
            self.run(job)
        finally:
            close_old_connections()


_worker = None
_worker_lock = threading.Lock()


def worker():
    """The process's delivery worker, started on first use."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = Worker()
        return _worker.start()


def stop_worker():
    """Stop the process's worker (jobs not yet due are dropped)."""
    global _worker
    with _worker_lock:
        if _worker is not None:
            _worker.stop()
            _worker = None
