"""/api/v1/alert-channels/ (CRUD, audited, and the test action) and /api/v1/alert-deliveries/ (the log).

Viewers read names, kinds and hints; staff with the model permissions change them. A test notification
needs `alerts.change_channel`, is sent at once and recorded in the audit trail with its outcome.
"""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.response import Response

from dashboard.alerts import delivery
from dashboard.alerts.models import Channel, Delivery
from routing.api.base import AuditedModelViewSet, ReadOnlyViewSet
from routing.api.filters import StrictFilterSet
from routing.api.views import REASON_PARAMETER

from . import serializers as s

TEST_PERMISSION = "alerts.change_channel"
WRITES = extend_schema(parameters=[REASON_PARAMETER])


class ChannelFilter(StrictFilterSet):
    class Meta:
        model = Channel
        fields = ["kind", "enabled"]


class DeliveryFilter(StrictFilterSet):
    class Meta:
        model = Delivery
        fields = ["channel", "outcome", "status", "test", "notification"]


@extend_schema_view(create=WRITES, update=WRITES, partial_update=WRITES, destroy=WRITES)
@extend_schema(tags=["alert channels"])
class ChannelViewSet(AuditedModelViewSet):
    """Where alert notifications go. `target` and `secret` are write-only; responses show `target_hint`."""

    queryset = Channel.objects.with_last_delivery()
    serializer_class = s.ChannelSerializer
    filterset_class = ChannelFilter
    lookup_value_regex = r"\d+"
    action_permissions = {"send_test": [TEST_PERMISSION]}

    @extend_schema(request=None, responses={200: s.DeliverySerializer},
                   description="Send a test notification to this channel now (once, no retries) and answer the "
                   "logged attempt: `outcome` ok or failed, with the HTTP status and the (redacted) error.")
    @action(detail=True, methods=["post"], url_path="test", url_name="test")
    def send_test(self, request, pk=None):
        channel = self.get_object()
        row = delivery.send_test_as(request.user, channel, reason=self.audit_context().reason or "test notification")
        return Response(s.DeliverySerializer(row).data)


@extend_schema(tags=["alert channels"])
class DeliveryViewSet(ReadOnlyViewSet):
    """Every delivery attempt of every notification, newest first (errors redacted)."""

    queryset = Delivery.objects.select_related("channel")
    serializer_class = s.DeliverySerializer
    filterset_class = DeliveryFilter

