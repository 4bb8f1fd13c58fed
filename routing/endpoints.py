"""Changing where a provider's traffic (and so its keys) goes.

A new base URL sends every key of the provider to the new host, so the API
and the admin both refuse the change without a reason, and both call
`note_base_url_change` to leave a timeline event beside the audit record.
"""

from urllib.parse import urlsplit

from django.db import transaction

from dashboard import live
from routing.models import Event, EventKind

REASON_REQUIRED = "Changing base_url sends this provider's keys to the new host: give a reason."


def needs_reason(provider, new_url, reason):
    """Return True when `new_url` changes the saved provider's base URL and no reason is given."""
    return provider.pk is not None and new_url is not None and new_url != provider.base_url and not reason.strip()


def display_url(url):
    """Return `url` as scheme://host[:port]/path, without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def note_base_url_change(provider, old_url, *, actor, reason):
    """Save the timeline Event for a base URL change (call inside the saving transaction) and return it."""
    before, after = display_url(old_url), display_url(provider.base_url)
    event = Event.objects.create(
        kind=EventKind.PROVIDER_URL, message=f"{provider.name}: base URL {before} → {after} ({actor}: {reason})"[:500],
        data={"provider": provider.name, "before": before, "after": after, "actor": actor, "reason": reason},
    )
    transaction.on_commit(lambda: live.timeline_event(event))  # live.timeline_event builds Event.payload()
    return event
