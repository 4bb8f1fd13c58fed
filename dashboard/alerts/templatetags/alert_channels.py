"""`{% alert_channel_rows as rows %}`: what the channels section shows, so any page can include
templates/alerts/_channels.html without preparing its context."""

from django import template

from dashboard.alerts.models import Channel

register = template.Library()


@register.simple_tag
def alert_channel_rows():
    """Return [{"channel": Channel, "last": its latest Delivery or None}] by name (hints only, never targets)."""
    return [{"channel": channel, "last": channel.last_delivery} for channel in Channel.objects.with_last_delivery()]
