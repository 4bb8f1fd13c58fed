"""The embedded scheduler: probes without a broker, inside the web process.

A daemon thread keeps a heap of (due slot, target) and hands each due probe
to a small thread pool that calls `runner.run_probe`, the function the Celery
task calls. Every few seconds it re-reads the targets, so edits, pauses and
new deployments take effect without a restart. Each target's slots are
spread over its interval (see probes.slots). At each re-read it also hands
the pool one tick of the staged rollouts (routing.rollouts.controller.tick_all),
one sweep of the key re-checks (probes.rechecks.run_due) and one of the
context-window checks (probes.windows.run_due) and prefill checks
(probes.prefill.run_due), each only when the previous one has finished, and
every ALERT_TICK_EVERY_S one tick of the alert engine (dashboard.alerts.engine).

    from probes import scheduler
    scheduler.start()   # idempotent; scheduler.stop() ends it
"""

import heapq
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, reset_queries

from probes import prefill, rechecks, runner, slots, windows
from probes.models import ProbeTarget
from probes.signals import ensure_all_targets

log = logging.getLogger(__name__)

REFRESH_S = 5.0
CATCH_UP_SPREAD_MS = 5000
MIN_ALERT_GAP_MS = 250  # between an alert tick and one brought forward for a pending alert's end


class Scheduler:
    def __init__(self, threads=None, refresh_s=REFRESH_S):
        self.threads = threads or settings.PROBE_THREADS
        self.refresh_s = refresh_s
        self.intervals = {}  # target id → effective interval s
        self.heap = []  # (slot ms, target id, interval s, repeats)
        self.started = 0  # probes handed to the pool
        self._stop = threading.Event()
        self._wake = threading.Event()  # set to re-plan the loop's sleep (stopping, an alert falling due sooner)
        self._alerts_due_ms = None  # when the engine said a pending alert's `for` ends
        self._thread = None
        self._pool = None
        self._rechecking = None  # the Future of the key re-check sweep under way
        self._checking_windows = None  # the Future of the context-window sweep under way
        self._checking_prefill = None  # the Future of the prefill check sweep under way

    def start(self):
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="probe")
        self._thread = threading.Thread(target=self._loop, name="probe-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop scheduling; probes under way may finish within `timeout`."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def _loop(self):
        next_refresh = next_alerts = 0.0
        while not self._stop.is_set():
            now = runner.now_ms()
            if now >= next_refresh:
                self._safely(self.refresh, now)
                self._pool.submit(self._tick_rollouts)
                if self._rechecking is None or self._rechecking.done():
                    self._rechecking = self._pool.submit(self._recheck_keys)
                if self._checking_windows is None or self._checking_windows.done():
                    self._checking_windows = self._pool.submit(self._check_windows)
                if self._checking_prefill is None or self._checking_prefill.done():
                    self._checking_prefill = self._pool.submit(self._check_prefill)
                next_refresh = now + self.refresh_s * 1000
            due = self._alerts_due_ms
            if now >= next_alerts or (due is not None and now >= due):
                self._alerts_due_ms = None
                self._pool.submit(self._tick_alerts)
                next_alerts = now + settings.ALERT_TICK_EVERY_S * 1000
            self._fire_due(now)
            due = self._alerts_due_ms
            wake = min(self.heap[0][0] if self.heap else next_refresh, next_refresh, next_alerts, due or next_alerts)
            self._wake.wait(max(wake - runner.now_ms(), 0) / 1000)
            self._wake.clear()
        close_old_connections()

    def refresh(self, now):
        """Re-read the targets: schedule new ones from their next slot, drop paused or deleted ones.

        A target seen for the first time that was never probed, or not within
        its interval, also gets one catch-up probe in the next few seconds, so
        a freshly started dashboard has figures at once.
        """
        ensure_all_targets()
        current = {target_id: interval for target_id, interval, _ in runner.schedulable_targets()}
        new = [target_id for target_id, interval in current.items() if self.intervals.get(target_id) != interval]
        stale = self._stale(new, current, now)
        close_old_connections()
        reset_queries()
        for target_id in new:
            interval = current[target_id]
            heapq.heappush(self.heap, (slots.slot_at_or_after(target_id, interval, now), target_id, interval, True))
        for i, target_id in enumerate(stale):
            due = now + i * CATCH_UP_SPREAD_MS // len(stale)
            heapq.heappush(self.heap, (due, target_id, current[target_id], False))
        self.intervals = current

    def _stale(self, target_ids, intervals, now):
        rows = ProbeTarget.objects.filter(pk__in=target_ids).values_list("pk", "last_probe_at")
        return [pk for pk, last in rows if last is None or now - last.timestamp() * 1000 > intervals[pk] * 1000]

    def _fire_due(self, now):
        while self.heap and self.heap[0][0] <= now:
            slot, target_id, interval, repeat = heapq.heappop(self.heap)
            if self.intervals.get(target_id) != interval:
                continue  # paused, deleted or rescheduled since it was queued
            self._pool.submit(self._probe, target_id, slot)
            self.started += 1
            if repeat:
                heapq.heappush(self.heap, (slot + int(interval * 1000), target_id, interval, True))

    def _probe(self, target_id, slot):
        try:
            runner.run_probe(target_id, slot)
        except runner.SlotBusy:
            pass  # a Celery worker or another process has this slot
        except Exception:  # one broken probe must not stop the others
            log.exception("probe of target %s failed", target_id)
        finally:
            close_old_connections()
            reset_queries()  # DEBUG keeps a thread's queries until a request starts: none does in this pool

    def _tick_rollouts(self):
        from routing.rollouts import controller

        try:
            controller.tick_all()
        except Exception:  # a broken rollout must not stop the probes
            log.exception("rollout tick failed")
        finally:
            close_old_connections()

    def _recheck_keys(self):
        try:
            rechecks.run_due()
        except Exception:  # a broken re-check must not stop the probes
            log.exception("key re-check failed")
        finally:
            close_old_connections()
            reset_queries()

    def _check_windows(self):
        try:
            windows.run_due()
        except Exception:  # a provider's odd model list must not stop the probes
            log.exception("context-window check failed")
    def _check_prefill(self):
        try:
            prefill.run_due()
        except Exception:  # a broken check must not stop the probes
            log.exception("prefill check failed")
        finally:
            close_old_connections()
            reset_queries()

    def _tick_alerts(self):
        from dashboard.alerts import engine

        try:
            if engine.tick() is None:  # leased: a tick still running elsewhere makes this one a no-op
                return
            due = engine.next_due()  # a pending alert fires when its `for` ends, not up to a tick later
            if due is not None:
                self._alerts_due_ms = max(int(due.timestamp() * 1000), runner.now_ms() + MIN_ALERT_GAP_MS)
                self._wake.set()
        except Exception:  # a broken rule must not stop the probes
            log.exception("alert tick failed")
        finally:
            close_old_connections()
            reset_queries()

    def alerts_due_now(self):
        """Tick the alert engine on the loop's next turn (on its own thread, not the caller's)."""
        self._alerts_due_ms = runner.now_ms()
        self._wake.set()

    def _safely(self, func, *args):
        try:
            func(*args)
        except Exception:
            log.exception("probe scheduler: %s failed", func.__name__)


_scheduler = None
_lock = threading.Lock()


def start(threads=None):
    """Start the process's embedded scheduler (once) and return it."""
    global _scheduler
    with _lock:
        if _scheduler is None:
            _scheduler = Scheduler(threads)
        return _scheduler.start()


def bring_alerts_forward():
    """Have this process's scheduler tick the alert engine now; return False when none runs here."""
    current = _scheduler
    if current is None or not current.running:
        return False
    current.alerts_due_now()
    return True


def stop():
    global _scheduler
    with _lock:
        if _scheduler is not None:
            _scheduler.stop()
            _scheduler = None
