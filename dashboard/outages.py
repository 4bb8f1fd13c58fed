"""Outages of the database or Redis as background loops and request paths see them: logged once when one
starts and once when it ends, never once per failed call.

A loop that polls every second (the gateway's config refresh, its change-notice listener, celery beat's
schedule check) would otherwise write a warning with a traceback every second per process for as long as a
dependency is down, and bury the one line that says what happened.

    DATABASE_DOWN = OutageLog(log, "The database", "the gateway's config refresh")
    try:
        ...
    except DatabaseError as exc:
        DATABASE_DOWN.failed(exc)    # logged on the first failure only
    else:
        DATABASE_DOWN.answered()     # logged once, when an outage ends
"""

import logging
import threading
import time

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse


class OutageLog:
    """Whether `dependency` failed for one use (`what`) since it last answered; thread-safe.

    `down` is True from the first failure until the next success. The warning that starts an outage names
    the error's type and message (no traceback: where the call failed is not news during an outage).
    """

    def __init__(self, logger, dependency, what, clock=time.monotonic):
        self.logger = logger
        self.dependency = dependency
        self.what = what
        self.clock = clock
        self.since = None  # clock time of the first failure of the current outage
        self._lock = threading.Lock()

    @property
    def down(self):
        return self.since is not None

    def failed(self, error):
        """Note a failed call; return True when it starts an outage (the call that logs)."""
        with self._lock:
            if self.since is not None:
                return False
            self.since = self.clock()
        self.logger.warning("%s is unavailable to %s (%s: %s); going on without it until it answers",
                            self.dependency, self.what, type(error).__name__, _first_line(error))
        return True

    def answered(self):
        """Note a successful call; return True when it ends an outage (logged with how long it lasted)."""
        if self.since is None:  # the common case: no lock, nothing to do
            return False
        with self._lock:
            if self.since is None:
                return False
            lasted = self.clock() - self.since
            self.since = None
        self.logger.warning("%s answers %s again (unavailable for %.1f s)", self.dependency, self.what, lasted)
        return True


def _first_line(error):
    """psycopg's messages go on over several lines (hints); the first says what happened."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


# --- the control plane's requests while the database is down ---------------------------------------------

RETRY_AFTER_S = 5  # what a 503 asks clients to wait: about how long a restarting database takes
API_PREFIX = "/api/"
PAGE_503 = (b"<!doctype html><title>Weathervane: unavailable</title><h1>The database is unavailable</h1>"
            b"<p>Weathervane keeps routing traffic; this page will load again once the database answers. "
            b"Try again in a few seconds.</p>")

log = logging.getLogger(__name__)
REQUESTS = OutageLog(log, "The database", "the control plane's requests")


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After, not an HTML 500, when the database does not answer a request.

    The API answers JSON ({"detail": ...}, like its other errors), pages a short HTML page. The outage is
    logged once; its end is noted at the first API answer below 400 (which needed the database to
    authenticate). Last in MIDDLEWARE, so its process_exception sees a view's error first.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if REQUESTS.down and response.status_code < 400 and request.path.startswith(API_PREFIX):
            REQUESTS.answered()
        return response

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        REQUESTS.failed(exception)
        if request.path.startswith(API_PREFIX):
            detail = "The database is unavailable; try again shortly."
            response = JsonResponse({"detail": detail}, status=503)
        else:
            response = HttpResponse(PAGE_503, status=503, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        response["Cache-Control"] = "no-store"
        # Django logs every 5xx answer ("Service Unavailable: <path>"): one line per request during an outage.
        # The outage itself is logged once above; this flag is how Django marks a response it need not log.
        response._has_been_logged = True
        return response
