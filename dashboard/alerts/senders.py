"""Sending one notification to one channel, once: Apprise, the signed JSON webhook, email.

Each sender returns a `Sent` and never raises for the channel's failure.
Error texts may still hold a secret (an upstream's echo of a token): the
caller redacts them with the channel's secret parts before they are stored
or logged. Retrying is the caller's business; `Sent.retryable` says whether
another attempt may help.

**Webhook signatures.** The body is `Message.as_json()` (UTF-8 JSON). With
the channel's secret, the receiver checks

    X-Weathervane-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>

where `timestamp` is the X-Weathervane-Timestamp header (Unix seconds),
rejects timestamps older than a few minutes (replays), compares in constant
time, and may drop an X-Weathervane-Delivery id it has already seen (the
same for every retry of one notification). `verify_signature` is that check.
"""

import hashlib
import hmac
import logging
import re
import smtplib
import threading
import time
from dataclasses import dataclass, replace

import httpx
import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.utils import timezone

from dashboard.alerts import targets
from dashboard.alerts.message import Status
from routing import netguard
from routing.httpx_guard import GuardedTransport, is_blocked
from routing.outcomes import RETRYABLE_STATUSES, error_message
from routing.requests_guard import guarded

SIGNATURE_HEADER = "X-Weathervane-Signature"
TIMESTAMP_HEADER = "X-Weathervane-Timestamp"
DELIVERY_HEADER = "X-Weathervane-Delivery"
USER_AGENT = "Weathervane-Alerts/1"
MAX_ERROR_BODY = 4096
REPLAY_WINDOW_S = 300
BLOCKED = f"refused: the host is on a loopback or private network; {netguard.ALLOW_HINT}"
APPRISE_STATUS = re.compile(r"error=(?P<status>[1-5][0-9][0-9])")  # in its warnings


@dataclass(frozen=True)
class Sent:
    """How one attempt ended. `error` is not yet redacted."""

    ok: bool
    http_status: int | None = None
    error: str = ""
    retryable: bool = False


def send(channel, message, notification):
    """Send `message` to `channel` once; `notification` is the id shared by the retries of one notification."""
    message = replace(message, sent_at=timezone.now())
    if channel.kind == targets.Kind.WEBHOOK:
        return send_webhook(channel.reveal(), channel.reveal_secret(), message, notification)
    if channel.kind == targets.Kind.APPRISE:
        return send_apprise(channel.reveal(), message)
    if channel.kind == targets.Kind.EMAIL:
        return send_email(channel.reveal(), message)
    return Sent(False, error=f"unknown channel kind {channel.kind!r}")


# --- Webhook ---------------------------------------------------------------------------------


def signature(secret, timestamp, body):
    """Return the X-Weathervane-Signature value of `body` (bytes) sent at `timestamp` (int seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret, timestamp, body, header, now=None, window_s=REPLAY_WINDOW_S):
    """Return True when `header` signs `body` at `timestamp` with `secret` and the timestamp is recent."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(age) > window_s:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), header or "")


_client = None
_client_lock = threading.Lock()


def client():
    """Return the process's shared httpx client for webhooks (thread-safe pool, no redirects): one TLS context
    for all, where a client per delivery would load the CA bundle every time (~0.2 s of CPU)."""
    global _client
    with _client_lock:
        if _client is None:
            limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
            _client = httpx.Client(transport=GuardedTransport(limits=limits), follow_redirects=False,
                                   headers={"User-Agent": USER_AGENT})
        return _client


def send_webhook(url, secret, message, notification, clock=time.time):
    body = orjson.dumps(message.as_json())
    timestamp = int(clock())
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: notification, TIMESTAMP_HEADER: str(timestamp)}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    timeout = httpx.Timeout(settings.ALERT_DELIVERY_TIMEOUT_S, connect=min(5.0, settings.ALERT_DELIVERY_TIMEOUT_S))
    try:
        # The guarded transport checks every address connected to (DNS rebinding); redirects are never followed.
        with client().stream("POST", url, content=body, headers=headers, timeout=timeout) as response:
            return _webhook_answer(response)
    except httpx.HTTPError as exc:
        if is_blocked(exc):
            return Sent(False, error=BLOCKED)
        return Sent(False, error=f"{type(exc).__name__}: {exc}", retryable=True)


def _webhook_answer(response):
    status = response.status_code
    if 200 <= status < 300:
        return Sent(True, http_status=status)
    if 300 <= status < 400:
        return Sent(False, http_status=status, error=f"answered {status} (a redirect; webhooks are not redirected)")
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    retryable = status in RETRYABLE_STATUSES or status >= 500
    return Sent(False, http_status=status, error=f"answered {status}: {error_message(body[:MAX_ERROR_BODY])}",
                retryable=retryable)


# --- Apprise ---------------------------------------------------------------------------------

NOTIFY_TYPES = {"critical": "failure", "warning": "warning", "info": "info"}


def notify_type(message):
    if message.status == Status.RESOLVED:
        return "success"
    return NOTIFY_TYPES.get(message.severity, "info")


def send_apprise(url, message):
    """Send through Apprise under the address policy: the target is re-checked (scheme, literal host) before
    every send, every address dialed is checked (routing.requests_guard), and no redirect is followed."""
    import apprise  # imported when first used: it loads some 180 plugins

    try:
        targets.clean_target(targets.Kind.APPRISE, url)  # a channel saved before today's rules meets them now
    except ValidationError as problem:
        return Sent(False, error=f"this channel's URL is no longer accepted ({problem.messages[0]}); set it again")
    app = apprise.Apprise(asset=targets.apprise_asset())
    if not app.add(url):
        return Sent(False, error="Apprise no longer accepts this channel's URL; set it again")
    with guarded() as refusals:
        result = app.notify(body=message.as_text(), title=message.subject(), notify_type=notify_type(message),
                            body_format=apprise.NotifyFormat.TEXT, timeout=settings.ALERT_DELIVERY_TIMEOUT_S)
    if result:
        return Sent(True)
    if refusals:
        return Sent(False, error=BLOCKED)
    said = "; ".join(entry.message for entry in result.logs()
                     if logging.getLevelName(entry.level) >= logging.WARNING)
    found = APPRISE_STATUS.search(said)
    status = int(found["status"]) if found else None
    retryable = status is None or status in RETRYABLE_STATUSES or status >= 500
    return Sent(False, http_status=status, error=said or "Apprise could not deliver the notification",
                retryable=retryable)


# --- Email -----------------------------------------------------------------------------------

# Refusals that another attempt would meet again.
PERMANENT_SMTP = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPAuthenticationError,
                  smtplib.SMTPNotSupportedError)


def send_email(recipients, message):
    email = EmailMessage(subject=message.subject(), body=message.as_text(), to=targets.recipients(recipients))
    try:
        email.send(fail_silently=False)
    except PERMANENT_SMTP as exc:
        return Sent(False, error=f"{type(exc).__name__}: {exc}")
    except (smtplib.SMTPException, OSError) as exc:
        return Sent(False, error=f"{type(exc).__name__}: {exc}", retryable=True)
    return Sent(True)
