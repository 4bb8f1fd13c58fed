"""REST API of alerting: alerts (read), and the configuration (rules, policies, inhibit rules, silences,
maintenance windows), validated and audited like the registry. Viewers read; staff change.

/api/v1/alert-channels/ (CRUD, audited, and the test action) and /api/v1/alert-deliveries/ (the log).

Viewers read names, kinds and hints; staff with the model permissions change them. A test notification
needs `alerts.change_channel`, is sent at once and recorded in the audit trail with its outcome."""

from django.db import transaction
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.response import Response

from dashboard.alerts import delivery
from dashboard.alerts.models import Channel, Delivery
from routing.api.base import AuditedModelViewSet, ReadOnlyViewSet
from routing.api.filters import StrictFilterSet
from routing.api.views import REASON_PARAMETER
from routing.audit import snapshot
from routing.models import AuditAction

from ..models import (
    Alert,
    AlertRule,
    AlertState,
    ConditionKind,
    InhibitRule,
    MaintenanceWindow,
    NotificationPolicy,
    Severity,
    Silence,
)
from . import serializers
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


class AlertFilter(StrictFilterSet):
    state = filters.ChoiceFilter(choices=AlertState.choices)
    rule = filters.CharFilter(field_name="rule__name", help_text="Rule name")

    class Meta:
        model = Alert
        fields = ["state", "rule"]


class AlertRuleFilter(StrictFilterSet):
    kind = filters.ChoiceFilter(choices=ConditionKind.choices)
    severity = filters.ChoiceFilter(choices=Severity.choices)

    class Meta:
        model = AlertRule
        fields = ["kind", "severity", "enabled"]


class AlertViewSet(ReadOnlyViewSet):
    """Alerts, newest first: pending, firing (with why one is not being sent) and resolved."""

    queryset = Alert.objects.select_related("rule")
    serializer_class = serializers.AlertSerializer
    filterset_class = AlertFilter


class ConfigViewSet(AuditedModelViewSet):
    lookup_value_regex = r"\d+"


class AlertRuleViewSet(ConfigViewSet):
    queryset = AlertRule.objects.all()
    serializer_class = serializers.AlertRuleSerializer
    filterset_class = AlertRuleFilter


class NotificationPolicyViewSet(ConfigViewSet):
    queryset = NotificationPolicy.objects.prefetch_related("channels")
    serializer_class = serializers.NotificationPolicySerializer


class InhibitRuleViewSet(ConfigViewSet):
    queryset = InhibitRule.objects.all()
    serializer_class = serializers.InhibitRuleSerializer


class SilenceViewSet(ConfigViewSet):
    queryset = Silence.objects.all()
    serializer_class = serializers.SilenceSerializer
    action_permissions = {"expire": ["alerts.change_silence"]}

    @extend_schema(request=None, responses=serializers.SilenceSerializer)
    @action(detail=True, methods=["post"])
    def expire(self, request, pk=None):
        """End the silence now (an already ended one is left as it is); audited."""
        with transaction.atomic():
            silence = Silence.objects.select_for_update().get(pk=self.get_object().pk)
            now = timezone.now()
            if silence.ends_at > now:
                before = snapshot(silence)
                silence.ends_at = max(now, silence.starts_at)
                silence.save(update_fields=["ends_at"])
                self._record(AuditAction.UPDATE, silence, before, snapshot(silence), reason=self._reason("expired"))
        return Response(self.get_serializer(silence).data)

    def _reason(self, default):
        return self.audit_context().reason or default


class MaintenanceWindowViewSet(ConfigViewSet):
    queryset = MaintenanceWindow.objects.all()
    serializer_class = serializers.MaintenanceWindowSerializer
