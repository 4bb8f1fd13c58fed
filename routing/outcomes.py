"""What an upstream's answer means: the one vocabulary of probes and the gateway.

Pure functions (no Django request or ORM work) that both transports call:
httpx in the probes, aiohttp in the gateway. One outcome list, one
classification of HTTP statuses, one Retry-After parser, one error-message
extractor that redacts secrets before anything is stored, logged or relayed,
and one error type. Server-sent events are read by `routing.sse`.
"""

import math
import re
import time
from email.utils import parsedate_to_datetime

import orjson
from django.db import models


class Outcome(models.TextChoices):
    """How one probe, gateway request or upstream attempt ended. Only OK counts as a success.

    Rollups count errors under these names whichever source recorded them.
    The last five never come from an upstream: the gateway records them, and
    the client's own (closed, deadline) never count against a deployment.
    """

    OK = "ok", "OK"
    TIMEOUT = "timeout", "Timeout"
    CONNECT_ERROR = "connect_error", "Connect error"
    BAD_KEY = "bad_key", "Bad key (401)"
    RATE_LIMITED = "rate_limited", "Rate-limited (429)"
    CLIENT_ERROR = "client_error", "Client error (4xx)"
    SERVER_ERROR = "server_error", "Server error (5xx)"
    MALFORMED = "malformed", "Malformed response"
    TRUNCATED = "truncated", "Truncated stream"
    WRONG_ANSWER = "wrong_answer", "Wrong answer"
    CLIENT_CLOSED = "client_closed", "Client disconnected"
    CLIENT_DEADLINE = "client_deadline", "Client's own deadline passed"
    NO_CAPACITY = "no_capacity", "No usable key or target"
    REJECTED = "rejected", "Refused by the gateway (auth, limits, bad input)"


# Failures that say something about the deployment's health: not the key's
# (bad_key, rate_limited), not the client's (client_error, client_closed,
# client_deadline), and not the gateway's own refusals.
DEPLOYMENT_FAILURES = frozenset({Outcome.TIMEOUT, Outcome.CONNECT_ERROR, Outcome.SERVER_ERROR, Outcome.MALFORMED,
                                 Outcome.TRUNCATED})

# The client's own doing (a bad request, its deadline, its disconnect): shown apart, never held against anyone.
CLIENT_CAUSED = frozenset({Outcome.CLIENT_ERROR, Outcome.CLIENT_CLOSED, Outcome.CLIENT_DEADLINE})


def deployment_errors(errors):
    """Return how many of `errors` ({outcome: count}) are the deployment's own failures: the one definition of
    a deployment's error (its "deployment error rate" on every page, API figure, alert and rollout)."""
    return sum(n for kind, n in errors.items() if kind in DEPLOYMENT_FAILURES)


def client_errors(errors):
    """Return how many of `errors` ({outcome: count}) the client caused (CLIENT_CAUSED)."""
    return sum(n for kind, n in errors.items() if kind in CLIENT_CAUSED)


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
BAD_KEY_STATUSES = frozenset({401})
RETRY_AFTER_STATUSES = frozenset({429, 503})
CONTEXT_MARKERS = ("context_length_exceeded", "context length", "maximum context", "context window", "too many tokens")
MAX_RETRY_AFTER_S = 3600.0
MAX_MESSAGE = 300
REDACTED = "[redacted]"
SECRET_PATTERNS = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"  # an Authorization header value
    r"|\b(sk|pk|rk|key|wv)-[A-Za-z0-9_*.-]{6,}"  # OpenAI-, Anthropic- and gateway-style keys
    r"|\b(api[_-]?key|access[_-]?token|secret)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"  # key=value forms
)


def classify_status(status, body=b""):
    """Return (outcome, retryable) for a non-2xx upstream status and its body.

    401 is the key's fault (retryable with another key). 403 is not: many
    providers answer it for one request (moderation, model access), so it is
    the client's and passed through. 408 is the upstream giving up on us, a
    timeout; 429 and 500/502/503/504 may pass; other 4xx, and context-length
    errors, would fail again.
    """
    if status in BAD_KEY_STATUSES:
        return Outcome.BAD_KEY, True
    if status == 429:
        return Outcome.RATE_LIMITED, True
    if status == 408:
        return Outcome.TIMEOUT, True
    if status >= 500:
        return Outcome.SERVER_ERROR, status in RETRYABLE_STATUSES
    if status in RETRYABLE_STATUSES and not is_context_length_error(body):
        return Outcome.CLIENT_ERROR, True
    return Outcome.CLIENT_ERROR, False


def is_context_length_error(body):
    """Return True when an upstream error body says the prompt is too long for the model."""
    text = body[:2000].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:2000]
    text = text.lower()
    return any(marker in text for marker in CONTEXT_MARKERS)


def parse_retry_after(headers, now=None, cap=MAX_RETRY_AFTER_S):
    """Return the wait in seconds an upstream asked for, or None when it asked for none.

    Reads `retry-after-ms` (precise) first, then `Retry-After` as seconds or an
    HTTP-date. The result is finite, at least 0 and at most `cap`; a value
    that is not a number or a date (or is NaN) counts as not given. `headers`
    is any mapping with a case-insensitive .get().
    """
    value = headers.get("retry-after-ms")
    seconds = _number(value, 1000.0) if value else None
    if seconds is None:
        value = headers.get("retry-after")
        if not value:
            return None
        seconds = _number(value, 1.0)
        if seconds is None:
            seconds = _seconds_until(value, now)
    if seconds is None:
        return None
    return min(max(seconds, 0.0), cap)


def _number(text, per_second):
    try:
        value = float(text) / per_second
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _seconds_until(text, now):
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return when.timestamp() - (now if now is not None else time.time())


# Text PostgreSQL refuses (NUL) and control characters that only garble a log line.
UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def storable(text, limit):
    """Return `text` cut to `limit` characters without the characters a database refuses (NUL above all)."""
    text = text or ""
    return UNSTORABLE.sub("", text)[:limit] if UNSTORABLE.search(text) else text[:limit]


def redact(text, secrets=()):
    """Return `text` with each of `secrets` and anything that looks like a credential replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return SECRET_PATTERNS.sub(_redacted, text)


def _redacted(match):
    if match.group(1):
        return f"{match.group(1)} {REDACTED}"
    if match.group(2):
        return f"{match.group(2)}-{REDACTED}"
    return f"{match.group(3)}{match.group(4)}{REDACTED}"


def redact_bytes(body, secrets=()):
    """Return an upstream body with secrets redacted (unchanged, and not copied, when it holds none)."""
    text = body.decode("utf-8", "replace")
    clean = redact(text, secrets)
    return body if clean == text else clean.encode()


def error_message(body, secrets=(), limit=MAX_MESSAGE):
    """Return the readable, redacted message of an upstream error body (bytes, str or a parsed object)."""
    if isinstance(body, (bytes, str)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return _clean(text[: limit * 4], secrets, limit) or "no details"
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message") or error.get("code") or error.get("type") or "error"
    return _clean(str(error if error is not None else "no details"), secrets, limit) or "no details"


def _clean(text, secrets, limit):
    return redact(text.strip(), secrets)[:limit]


class UpstreamError(Exception):
    """An upstream call failed; `outcome` is an Outcome, `retryable` says whether trying again may help.

    `message` is already redacted. `body` is the upstream's error body as it
    came (bounded), for passing a non-retryable error through; redact it with
    `redact_bytes` before relaying it. `too_long` marks a context-length error:
    the request's fault, which a target with a larger window may still serve.
    """

    def __init__(self, outcome, message, retryable, status=None, retry_after=None, body=b"", content_type=None,
                 too_long=False):
        super().__init__(message)
        self.too_long = too_long
        self.outcome = outcome
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.content_type = content_type


def http_failure(status, headers, body, secrets=()):
    """Return the UpstreamError for a non-2xx answer (status, its headers and its bounded body)."""
    outcome, retryable = classify_status(status, body)
    wait = parse_retry_after(headers) if status in RETRY_AFTER_STATUSES else None
    message = f"HTTP {status}: {error_message(body, secrets)}"
    too_long = outcome == Outcome.CLIENT_ERROR and status != 429 and is_context_length_error(body)
    return UpstreamError(outcome, message, retryable, status, wait, body, headers.get("content-type"), too_long)
