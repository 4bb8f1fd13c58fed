"""REST API for probes (under /api/v1/): targets (list, edit, pause, probe now),
results (filterable, paginated), rollup series for charts, and health per target.

Permissions are the project's default: staff write, viewers read. Every change
to a target is saved with its AuditEvent in one transaction.
"""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from probes import runner
from probes.api import serializers as s
from probes.models import HealthState, ProbeResult, ProbeTarget, Source
from probes.rollups import SPAN, merge_rows, read_window, select_rows
from routing.api.base import AuditedModelViewSet, ReadOnlyViewSet
from routing.api.filters import StrictBooleanFilter, StrictFilterSet
from routing.audit import record, snapshot
from routing.models import AuditAction
from routing.outcomes import Outcome


class ProbeTargetFilter(StrictFilterSet):
    deployment = filters.CharFilter(field_name="deployment__name", help_text="Deployment name")
    health = filters.ChoiceFilter(choices=HealthState.choices)
    per_key = StrictBooleanFilter(field_name="api_key", lookup_expr="isnull", exclude=True,
                                  help_text="Only per-key targets")

    class Meta:
        model = ProbeTarget
        fields = ["deployment", "api_key", "enabled", "health", "per_key"]


class ProbeResultFilter(StrictFilterSet):
    deployment = filters.CharFilter(field_name="deployment__name", help_text="Deployment name")
    outcome = filters.MultipleChoiceFilter(choices=Outcome.choices)
    since = filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte", help_text="At or after (ISO 8601)")
    until = filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt", help_text="Before (ISO 8601)")

    class Meta:
        model = ProbeResult
        fields = ["target", "deployment", "api_key", "outcome", "model_swapped", "since", "until"]


def target_windows(target, windows=s.HEALTH_WINDOWS, now=None):
    """Return {window: figures} from the target's own rollup rows."""
    now = now or timezone.now()
    return {name: merge_rows(select_rows(target.deployment_id, Source.PROBE, now - SPAN[name],
                                         api_key_id=target.api_key_id, exact_key=True))
            for name in windows}


def health_of(target):
    return {
        "target": target.pk, "deployment": target.deployment.name, "api_key": target.api_key_id,
        "state": target.health, "reason": target.health_reason, "since": target.health_since,
        "consecutive_failures": target.consecutive_failures, "last_outcome": target.last_outcome,
        "last_probe_at": target.last_probe_at, "windows": target_windows(target),
    }


class ProbeTargetViewSet(AuditedModelViewSet):
    """Probe targets: one per enabled deployment (made automatically), plus per-key ones on request."""

    queryset = ProbeTarget.objects.select_related("deployment", "api_key")
    serializer_class = s.ProbeTargetSerializer
    filterset_class = ProbeTargetFilter
    lookup_value_regex = r"\d+"
    action_permissions = {name: ["probes.change_probetarget"] for name in ("pause", "resume", "probe")}

    def _set_enabled(self, request, enabled):
        target = self.get_object()
        body = s.PauseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if target.enabled != enabled:
            with transaction.atomic():
                before = snapshot(target)
                target.enabled = enabled
                target.save(update_fields=["enabled", "updated_at"])
                audit = self.audit_context()
                record(action=AuditAction.UPDATE, obj=target, actor=audit.actor, user=audit.user, before=before,
                       after=snapshot(target), reason=body.validated_data.get("reason") or audit.reason)
        return Response(self.get_serializer(target).data)

    def destroy(self, request, *args, **kwargs):
        if self.get_object().api_key_id is None:
            return Response({"detail": "A deployment's own probe target cannot be deleted; pause it instead."},
                            status=status.HTTP_400_BAD_REQUEST)
        return super().destroy(request, *args, **kwargs)

    @extend_schema(request=s.PauseSerializer, responses=s.ProbeTargetSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        """Stop probing this target (health is kept as it was)."""
        return self._set_enabled(request, False)

    @extend_schema(request=s.PauseSerializer, responses=s.ProbeTargetSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._set_enabled(request, True)

    @extend_schema(request=None, responses=s.ProbeResultSerializer)
    @action(detail=True, methods=["post"])
    def probe(self, request, pk=None):
        """Probe now, whatever the schedule (also a paused target), and return the result."""
        target = self.get_object()
        if request.data:
            return Response({"detail": "This call takes no body."}, status=status.HTTP_400_BAD_REQUEST)
        result = runner.run_probe(target.pk, runner.now_ms())
        if result is None:
            return Response({"detail": "A probe for this moment already ran; try again."},
                            status=status.HTTP_409_CONFLICT)
        return Response(s.ProbeResultSerializer(result).data)

    @extend_schema(responses=s.HealthSerializer)
    @action(detail=True, methods=["get"])
    def health(self, request, pk=None):
        """The target's health state and its figures over 5 minutes, an hour, a day and a week."""
        return Response(s.HealthSerializer(health_of(self.get_object())).data)


class ProbeResultViewSet(ReadOnlyViewSet):
    """Raw probe results, newest first (kept WEATHERVANE_PROBE_RETENTION_DAYS days)."""

    queryset = ProbeResult.objects.select_related("deployment", "api_key")
    serializer_class = s.ProbeResultSerializer
    filterset_class = ProbeResultFilter


class RollupSeriesView(APIView):
    """Per-minute chart points and a summary for one deployment, from probes or real traffic."""

    serializer_class = s.RollupSeriesSerializer

    @extend_schema(parameters=[s.RollupQuerySerializer], responses=s.RollupSeriesSerializer)
    def get(self, request):
        query = s.RollupQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        now = timezone.now()
        since = now - SPAN[q["window"]]
        key_id = q["api_key"].pk if q.get("api_key") else None
        route = q.get("route")
        rows = select_rows(q["deployment"].pk, q["source"], since, None, key_id, route_id=route.pk if route else None)
        summary, points = read_window(rows, since, now, timedelta(minutes=q["step"]))
        return Response({
            "deployment": q["deployment"].name, "source": q["source"], "window": q["window"], "api_key": key_id,
            "route": route.name if route else None, "step_minutes": q["step"], "since": since, "until": now,
            "summary": summary, "points": points,
        })

