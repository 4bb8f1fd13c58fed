"""Redis on a request path: short timeouts, no retries, and a back-off after a failure.

redis-py's defaults (5 s socket timeouts, then up to 10 retries with
back-off) turn a hung Redis into seconds added to every request that touches
it. Every Redis use on a request path (the gateway's limit counters, the
config-change notice, live publishes, the API's throttle cache) builds its
client with `client_options()` and remembers a failure in an `Outage`, so
one request pays the timeout and the next ones skip Redis until a back-off
has passed. Each outage is logged once, not once per request.
"""

import logging
import threading
import time

from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

FIRST_RECHECK_S = 2.0  # after a failure, Redis is tried again this much later, then twice as late, ...
MAX_RECHECK_S = 30.0


def client_options(timeout=None):
    """Return redis-py client keyword arguments that bound every command to about two `timeout`s (connect + reply).

    `timeout` defaults to WEATHERVANE_REDIS_TIMEOUT.
    """
    seconds = settings.REDIS_TIMEOUT_S if timeout is None else timeout
    return {"socket_timeout": seconds, "socket_connect_timeout": seconds, "retry": Retry(NoBackoff(), 0)}


class Outage:
    """Whether Redis failed recently for one use (`what`), logged once per outage.

    `skip()` is True while the back-off after a failure runs (first 2 s, then
    doubling up to 30 s while Redis keeps failing); after it, the next call
    tries Redis again and reports `failed()` or `answered()`. Thread-safe.
    """

    def __init__(self, what, first_recheck_s=FIRST_RECHECK_S, max_recheck_s=MAX_RECHECK_S, clock=time.monotonic):
        self.what = what
        self.first_recheck_s = first_recheck_s
        self.max_recheck_s = max_recheck_s
        self.clock = clock
        self.failures = 0  # calls that failed, in all
        self.since = None  # clock time the current outage began (None: Redis answers)
        self._retry_at = 0.0
        self._wait = first_recheck_s
        self._lock = threading.Lock()

    def skip(self):
        """Return True when Redis should not be tried now."""
        return self.since is not None and self.clock() < self._retry_at

    def failed(self, error):
        """Note a failed call; the first of an outage is logged."""
        with self._lock:
            self.failures += 1
            now = self.clock()
            first = self.since is None
            if first:
                self.since, self._wait = now, self.first_recheck_s
            self._retry_at = now + self._wait
            self._wait = min(self._wait * 2, self.max_recheck_s)
        if first:
            log.warning("Redis did not answer for %s (%s: %s); going on without it and trying again in %g s",
                        self.what, type(error).__name__, error, self._retry_at - now)

    def answered(self):
        """Note a successful call; ends an outage (logged)."""
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            lasted = self.clock() - self.since
            self.since = None
        log.warning("Redis answers again for %s (after %.1f s)", self.what, lasted)
