"""Pure retry policy: how long to wait, and how many retries the process may
afford. What a failure means is `routing.outcomes.classify_status`.

Retryable before the first byte reached the client: connection errors,
timeouts before the first byte, 429 (after its Retry-After), 500/502/503/504,
malformed or truncated answers and an error as the first event of a stream.
Never retried: 400, 404, 422 and context-length errors (the same request would
fail again). 401/403 are the key's fault: the caller retries with another key.
"""

import math
import threading
import time


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
