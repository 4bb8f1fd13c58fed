"""celery beat's scheduler in the scaled mode: django-celery-beat's, riding out database outages.

The schedule lives in the database, so it can be edited while beat runs. django-celery-beat reads it at
start, asks before every tick whether it changed and writes run times back. During an outage the calls it
guards log a traceback each time (hundreds a second with our one-second entries), and the ones it does
not guard (the first read, a reload) end beat's loop: beat exits and no probe, rollout tick or alert tick
is sent again until someone restarts it.

Here no database error leaves the scheduler. Beat keeps sending the entries it last read, on time (the
broker is not the database); it asks the database again at most every RECHECK_S; run times it could not
write are written once the database answers. A broker that is down loses the entries due meanwhile (each
is sent at its next time). Either outage is logged once when it starts and once when it ends. A beat
started while the database is down sends nothing until the first read succeeds.

    CELERY_BEAT_SCHEDULER = "dashboard.beat:DatabaseScheduler"
"""

import logging
import time

from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, InterfaceError, close_old_connections, transaction
from django_celery_beat import schedulers

from dashboard.outages import OutageLog

log = logging.getLogger(__name__)
sent_log = logging.getLogger("celery.beat")  # where beat's own "Sending due task" lines go

RECHECK_S = 5.0  # while the database is down, it is asked again this often (not at every tick)
UNAVAILABLE = (DatabaseError, InterfaceError)


class DatabaseScheduler(schedulers.DatabaseScheduler):
    def __init__(self, *args, **kwargs):
        self.database = OutageLog(log, "The database", "celery beat's schedule")
        self.broker = OutageLog(log, "The broker", "celery beat")
        self._next_try = 0.0
        super().__init__(*args, **kwargs)

    def _failed(self, error):
        self.database.failed(error)
        self._next_try = time.monotonic() + RECHECK_S

    def _may_ask(self):
        """Return False while an outage's back-off runs: the entries in memory are sent without asking."""
        return not self.database.down or time.monotonic() >= self._next_try

    @property
    def schedule(self):
        """The entries last read; {} until a first read succeeds (tried again at the next tick)."""
        if self._schedule is None and not self._may_ask():
            return {}
        try:
            return super().schedule
        except UNAVAILABLE as exc:
            self._failed(exc)
            if self._schedule is None:
                self._initial_read = True
                return {}
            return self._schedule

    def schedule_changed(self):
        """Return True when the schedule was edited since it was last read (False while the database is down)."""
        if not self._may_ask():
            return False
        try:
            close_old_connections()
            self._end_transaction()
            stamp = self.Changes.last_change()
        except UNAVAILABLE as exc:
            self._failed(exc)
            return False
        self.database.answered()
        last = self._last_timestamp
        self._last_timestamp = stamp
        return bool(stamp and stamp > (last or stamp))

    @staticmethod
    def _end_transaction():
        # MySQL's REPEATABLE READ would hide other transactions' edits until this one ends (upstream issue #41).
        try:
            transaction.commit()
        except transaction.TransactionManagementError:
            pass

    def sync(self):
        """Write the run times of the entries sent since the last sync; those not written are tried again."""
        if not self._dirty or not self._may_ask():
            return
        try:
            close_old_connections()
            for name in list(self._dirty):
                if self._save(name):
                    self._dirty.discard(name)
        except UNAVAILABLE as exc:
            self._failed(exc)
        else:
            self.database.answered()

    def _save(self, name):
        try:
            self._schedule[name].save()
        except (KeyError, TypeError, ObjectDoesNotExist):
            return False  # kept for the next sync, as django-celery-beat does
        return True

    def apply_entry(self, entry, producer=None):
        """Send one due entry; a broker outage is logged once (celery logs a traceback per entry and second)."""
        sent_log.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # SchedulingError wrapping the broker's error; the entry is due again next time
            self.broker.failed(exc)
        else:
            self.broker.answered()

    def tick(self, *args, **kwargs):
        """One pass of beat's loop; a database error that still gets here waits RECHECK_S instead of ending beat."""
        try:
            return super().tick(*args, **kwargs)
        except UNAVAILABLE as exc:
            self._failed(exc)
            return RECHECK_S
