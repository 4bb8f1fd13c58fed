"""The channels page and its "send test notification" button (staff with `alerts.change_channel`)."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from dashboard.alerts import delivery
from dashboard.alerts.api.views import TEST_PERMISSION
from dashboard.alerts.models import Channel, DeliveryOutcome
from dashboard.views import dashboard_view


@dashboard_view
def channels(request):
    return render(request, "alerts/channels.html")


@require_POST
@dashboard_view
def send_test(request, pk):
    """Send a test notification now, audit it, and go back to the page that asked, which shows the outcome."""
    if not (request.user.is_staff and request.user.has_perm(TEST_PERMISSION)):
        raise PermissionDenied("Only staff who may change alert channels can send test notifications.")
    channel = get_object_or_404(Channel, pk=pk)
    row = delivery.send_test_as(request.user, channel, reason="test notification from the dashboard")
    if row.outcome == DeliveryOutcome.OK:
        messages.success(request, f"Test notification delivered to '{channel.name}'.")
    else:
        messages.error(request, f"Test notification to '{channel.name}' failed: {row.error or 'no details'}")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return redirect("alert-channels")
    return redirect(target)
