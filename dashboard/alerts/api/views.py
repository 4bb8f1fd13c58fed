"""REST API of alerting: alerts (read), and the configuration (rules, policies, inhibit rules, silences,
maintenance windows), validated and audited like the registry. Viewers read; staff change."""

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from routing.api.base import AuditedModelViewSet, ReadOnlyViewSet
from routing.audit import snapshot
from routing.models import AuditAction

from ..models import Alert, AlertRule, InhibitRule, MaintenanceWindow, NotificationPolicy, Silence
from . import serializers


class AlertViewSet(ReadOnlyViewSet):
    """Alerts, newest first: pending, firing (with why one is not being sent) and resolved."""

    queryset = Alert.objects.select_related("rule")
    serializer_class = serializers.AlertSerializer
    filterset_fields = ["state", "suppressed"]


class ConfigViewSet(AuditedModelViewSet):
    lookup_value_regex = r"\d+"


class AlertRuleViewSet(ConfigViewSet):
    queryset = AlertRule.objects.all()
    serializer_class = serializers.AlertRuleSerializer
    filterset_fields = ["kind", "severity", "enabled"]


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
