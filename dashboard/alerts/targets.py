"""What a channel's target may be, how it is shown, and which of its parts are secret.

A target is an Apprise URL, a webhook URL or a list of email recipients. It
holds secrets (tokens in paths and queries, passwords), so error messages
here never repeat it, its display hint keeps at most the scheme, host and
last four characters, and `secret_parts` lists what redaction must hide.
Apprise and webhook hosts follow the upstream address policy of
routing.netguard (loopback and private networks only with
WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS): judged without resolving at save, and
on every address actually dialed when sending (routing.httpx_guard,
routing.requests_guard). Apprise channels take the HTTP schemes of
APPRISE_SCHEMES only.
"""

import re
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from routing import netguard

MAX_TARGET = 2000
MAX_RECIPIENTS = 20
MIN_SECRET = 16
MAX_SECRET = 256
RECIPIENT_SEPARATORS = re.compile(r"[,;\s]+")
VISIBLE_ASCII = re.compile(r"[!-~]+")
HINT_LENGTH = 60
# Apprise schemes a channel may use: services reached over HTTP(S) only, so every connection goes through the
# address policy of routing.requests_guard (email has its own channel kind; SMTP, MQTT, XMPP are not guarded).
APPRISE_SCHEMES = frozenset({
    "discord", "gchat", "gotify", "gotifys", "json", "jsons", "matrix", "matrixs", "mmost", "mmosts", "ntfy", "ntfys",
    "opsgenie", "pagerduty", "pover", "rocket", "rockets", "signal", "signals", "slack", "tgram", "webex",
    "workflows", "wxteams", "zulip",
})
GENERIC_JSON = ("json", "jsons")  # posts to any URL: POST only, no headers of the caller's choosing


class Kind:
    """The ChannelKind values (models import this module, so the names are repeated here once)."""

    APPRISE = "apprise"
    WEBHOOK = "webhook"
    EMAIL = "email"


def clean_target(kind, value):
    """Return the normalised target for a channel of `kind`; raise ValidationError saying what is wrong
    (never repeating the value)."""
    value = (value or "").strip()
    if not value:
        raise ValidationError("This field is required.", code="required")
    if len(value) > MAX_TARGET:
        raise ValidationError(f"Keep the target under {MAX_TARGET} characters.", code="max_length")
    if kind == Kind.APPRISE:
        return _apprise_url(value)
    if kind == Kind.WEBHOOK:
        return _webhook_url(value)
    if kind == Kind.EMAIL:
        return ", ".join(recipients(value, check=True))
    raise ValidationError("Unknown channel kind.", code="kind")


def clean_secret(kind, value):
    """Return the webhook signing secret; raise ValidationError when it is unfit or the kind takes none."""
    if kind != Kind.WEBHOOK:
        raise ValidationError("Only webhook channels have a signing secret.", code="not_webhook")
    if not MIN_SECRET <= len(value) <= MAX_SECRET or not VISIBLE_ASCII.fullmatch(value):
        raise ValidationError(
            f"A signing secret is {MIN_SECRET} to {MAX_SECRET} visible ASCII characters without spaces "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))').", code="secret")
    return value


def recipients(value, check=False):
    """Return the email addresses in `value` (comma, semicolon or space separated)."""
    found = [address for address in RECIPIENT_SEPARATORS.split(value) if address]
    if check:
        if not 1 <= len(found) <= MAX_RECIPIENTS:
            raise ValidationError(f"Give 1 to {MAX_RECIPIENTS} email addresses.", code="recipients")
        for number, address in enumerate(found, start=1):
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"Recipient {number} is not an email address.", code="email") from None
    return found


@lru_cache(maxsize=1)
def apprise_asset():
    """Apprise's settings for Weathervane: nothing persisted to disk."""
    import apprise

    return apprise.AppriseAsset(storage_mode="memory")


def _apprise_url(value):
    import apprise

    if any(ch.isspace() for ch in value) or "," in value:
        raise ValidationError("Give one Apprise URL per channel.", code="several")
    plugin = apprise.Apprise.instantiate(value, asset=apprise_asset())
    if plugin is None:
        raise ValidationError(
            "Apprise does not accept this URL: check its scheme and the parts that service needs "
            "(see https://appriseit.com/services/).", code="apprise")
    _check_apprise_scheme(value, plugin)
    _check_host(urlsplit(value).hostname)
    return value


def _check_apprise_scheme(value, plugin):
    """Refuse schemes off the allow-list, and a json:// URL that Apprise reads as another method or extra
    headers (asked of Apprise's own parse, so no spelling of them slips past)."""
    scheme = urlsplit(value).scheme.lower()
    if scheme not in APPRISE_SCHEMES:
        raise ValidationError(f"Apprise channels use one of: {', '.join(sorted(APPRISE_SCHEMES))} "
                              "(HTTP services only; a generic endpoint is a webhook channel).", code="scheme")
    if scheme in GENERIC_JSON:
        if getattr(plugin, "headers", None):
            raise ValidationError("A json:// channel sends no extra headers (+name=value).", code="headers")
        if str(getattr(plugin, "method", "POST")).upper() != "POST":
            raise ValidationError("A json:// channel only POSTs.", code="method")


def _webhook_url(value):
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValidationError("A webhook URL starts with http:// or https://.", code="scheme")
    if not parts.hostname:
        raise ValidationError("A webhook URL names a host.", code="host")
    try:
        _ = parts.port
    except ValueError:
        raise ValidationError("The webhook URL has an invalid port.", code="port") from None
    if parts.fragment:
        raise ValidationError("A webhook URL has no #fragment.", code="fragment")
    _check_host(parts.hostname)
    return value


def _check_host(host):
    if not host:
        return
    try:
        netguard.check_host(host, resolve=False)
    except netguard.UpstreamBlocked:
        raise ValidationError(
            f"This URL points at a loopback or private address; {netguard.ALLOW_HINT}", code="private") from None


def hint(kind, value):
    """Return the display form of a target: `slack://…a1b2`, `https://hooks.example.com/…a1b2`,
    `ops@…example.com +1`."""
    if not value:
        return ""
    if kind == Kind.EMAIL:
        found = recipients(value)
        first = found[0].rpartition("@")[2] if found else ""
        more = f" +{len(found) - 1}" if len(found) > 1 else ""
        return f"…@{first}{more}"[:HINT_LENGTH]
    parts = urlsplit(value)
    tail = value[-4:] if len(value) >= 16 else ""
    if kind == Kind.WEBHOOK:
        head = f"{parts.scheme}://{(parts.hostname or '')[:HINT_LENGTH - 20]}/"
    else:
        head = f"{parts.scheme}://"
    return f"{head}…{tail}"[:HINT_LENGTH]


def secret_parts(kind, value):
    """Return the parts of a target that redaction must hide: the whole of it and every piece of its URL
    (user, password, host, path segments, query values), decoded and as written; an email channel's addresses."""
    if not value:
        return []
    if kind == Kind.EMAIL:
        return sorted({value, *recipients(value)}, key=len, reverse=True)
    parts = urlsplit(value)
    pieces = [value, parts.netloc, parts.username, parts.password, parts.hostname, parts.query]
    pieces += parts.path.split("/")
    pieces += [v for _, v in parse_qsl(parts.query, keep_blank_values=False)]
    pieces += [unquote(p) for p in pieces if p]
    # Longest first, so a whole secret is replaced before a piece of it could split it.
    return sorted({p for p in pieces if p and len(p) >= 4}, key=len, reverse=True)
