"""REST API of alerting: alerts (read), and the configuration (rules, policies, inhibit rules, silences,
maintenance windows), validated and audited like the registry. Viewers read; staff change."""

from django.db import transaction
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from routing.api.base import AuditedModelViewSet, ReadOnlyViewSet
from routing.api.filters import StrictFilterSet
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
