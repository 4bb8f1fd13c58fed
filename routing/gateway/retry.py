"""Pure retry policy: what a failure means, how long to wait, and how many
retries the process may afford.

Retryable before the first byte reached the client: connection errors,
timeouts before the first byte, 429 (after its Retry-After), 500/502/503/504,
malformed or truncated answers and an error as the first event of a stream.
Never retried: 400, 404, 422 and context-length errors (the same request would
fail again). 401/403 are the key's fault: the caller retries with another key.
"""

import math
import threading
import time
from email.utils import parsedate_to_datetime

from routing.models import RequestOutcome

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
BAD_KEY_STATUSES = frozenset({401, 403})
CONTEXT_MARKERS = ("context_length_exceeded", "context length", "maximum context", "context window", "too many tokens")


def classify_status(status, body=b""):
    """Return (outcome, retryable) for a non-2xx upstream status and its body."""
    if status in BAD_KEY_STATUSES:
        return RequestOutcome.BAD_KEY, True
    if status == 429:
        return RequestOutcome.RATE_LIMITED, True
    if status >= 500:
        return RequestOutcome.SERVER_ERROR, status in RETRYABLE_STATUSES
    if status in RETRYABLE_STATUSES:
        return RequestOutcome.TIMEOUT if status == 408 else RequestOutcome.CLIENT_ERROR, True
    return RequestOutcome.CLIENT_ERROR, False


def is_context_length_error(body):
    """Return True when an upstream error body says the prompt is too long for the model."""
    text = body[:2000].decode("utf-8", "replace").lower() if isinstance(body, bytes) else str(body).lower()
    return any(marker in text for marker in CONTEXT_MARKERS)


def parse_retry_after(headers, now=None):
    """Return the wait in seconds an upstream asked for, or None.

    Reads `retry-after-ms` (precise) first, then `Retry-After` as seconds or
    an HTTP-date. `headers` is any mapping with case-insensitive .get().
    """
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


def backoff(retry_number, rng, base=0.05, cap=2.0):
    """Return a full-jitter wait before retry number `retry_number` (1 = first retry).

    Uniform in [0, min(cap, base * 2 ** (retry_number - 1))], so simultaneous
    failures spread out instead of retrying in lock-step.
    """
    ceiling = min(cap, base * math.pow(2, max(retry_number - 1, 0)))
    return rng.uniform(0, ceiling)


class RetryBudget:
    """Retries may add at most `ratio` of the recent request rate, plus `min_per_s`.

    A token bucket: each request deposits `ratio` tokens, each retry withdraws
    one, and `min_per_s` tokens accrue per second so a quiet process can still
    retry. The bucket holds at most `burst` tokens. Thread-safe.
    """

    def __init__(self, ratio=0.2, min_per_s=10.0, burst=100.0, clock=time.monotonic):
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.updated = clock()
        self._lock = threading.Lock()

    def deposit(self):
        """Note one first attempt (called per request)."""
        self.tokens = min(self.burst, self.tokens + self.ratio)

    def withdraw(self):
        """Return True and spend a token when a retry is affordable now."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.min_per_s)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False
