"""`{% alert_channel_rows as rows %}` and `{% channel_controls as controls %}`: what the channels section shows
and offers, so any page can include templates/alerts/_channels.html without preparing its context."""

from django import template

from dashboard.alerts.models import Channel
from dashboard.roles import may, model_permissions

register = template.Library()


@register.simple_tag
def alert_channel_rows():
    """Return [{"channel": Channel, "last": its latest Delivery or None}] by name (hints only, never targets)."""
    return [{"channel": channel, "last": channel.last_delivery} for channel in Channel.objects.with_last_delivery()]


@register.simple_tag(takes_context=True)
def channel_controls(context):
    """Return {"add", "change"}: whether the signed-in user may add channels, and change them (edit, test), by the
    API's rule (dashboard.roles.may)."""
    user = context["request"].user
    return {action: may(user, model_permissions(Channel, action)) for action in ("add", "change")}
