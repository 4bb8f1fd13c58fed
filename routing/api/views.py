"""REST API for the routing registry (under /api/v1/).

Every create, update and delete runs in one transaction together with its
AuditEvent (actor = the requesting user, before/after snapshots without
secrets). A reason for the audit trail may be sent in the `X-Audit-Reason`
header; the weights endpoints take `reason` in the body instead, where it
is required.

Routes carry a `version`: GET returns it as `ETag: "<version>"`, and updates
(PUT/PATCH of the route, PUT of its weights, the revert) accept
`If-Match: "<version>"` (or `"version": N` in the body) and answer 409 with
the current version when the route changed meanwhile.
"""

import re

from django.db import transaction
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from routing import endpoints, projection, weights
from routing.api import serializers as s
from routing.api.base import MAX_REASON_LENGTH, REASON_HEADER, AuditedModelViewSet, ReadOnlyViewSet
from routing.api.filters import StrictFilterSet
from routing.api.permissions import WEIGHTS_PERMISSION, can_move_weights
from routing.audit import actor_name, snapshot
from routing.models import (
    ApiKey,
    AuditAction,
    AuditEvent,
    CircuitState,
    Deployment,
    DeploymentCircuit,
    Event,
    EventKind,
    GatewayKey,
    KeyState,
    Provider,
    ProviderKind,
    RequestLog,
    Route,
)
from routing.outcomes import Outcome

NAME_LOOKUP = r"[^/]+?(?:/[^/]+?)*?"  # names may contain "/" (e.g. "openai/gpt-4o")

# An empty If-Match is no precondition, like a missing one; "*" matches any version.
IF_MATCH = re.compile(r'\s*(?:\*|(?:W/)?"?(?P<version>[0-9]{1,9})"?)?\s*')

REASON_PARAMETER = OpenApiParameter(
    REASON_HEADER, {"type": "string", "maxLength": MAX_REASON_LENGTH}, OpenApiParameter.HEADER, required=False,
    description="Why this change is made; kept in the audit trail.",
)
IF_MATCH_SCHEMA = {"type": "string", "pattern": f"^{IF_MATCH.pattern.replace('?P<version>', '')}$"}
IF_MATCH_PARAMETER = OpenApiParameter(
    "If-Match", IF_MATCH_SCHEMA, OpenApiParameter.HEADER, required=False,
    description='The route version you edited, as returned in ETag (e.g. "3"). A mismatch answers 409.',
)


# --- Filters -------------------------------------------------------------------


class ProviderFilter(StrictFilterSet):
    kind = filters.ChoiceFilter(choices=ProviderKind.choices)

    class Meta:
        model = Provider
        fields = ["kind", "enabled"]


class ApiKeyFilter(StrictFilterSet):
    provider = filters.CharFilter(field_name="provider__name", help_text="Provider name")
    state = filters.ChoiceFilter(choices=KeyState.choices)

    class Meta:
        model = ApiKey
        fields = ["provider", "state", "enabled"]


class DeploymentFilter(StrictFilterSet):
    provider = filters.CharFilter(field_name="provider__name", help_text="Provider name")

    class Meta:
        model = Deployment
        fields = ["provider", "enabled"]


class RouteFilter(StrictFilterSet):
    deployment = filters.CharFilter(field_name="targets__deployment__name", distinct=True,
                                    help_text="Routes with this target")

    class Meta:
        model = Route
        fields = ["deployment"]


class GatewayKeyFilter(StrictFilterSet):
    route = filters.CharFilter(field_name="routes__name", distinct=True, help_text="Keys listing this route")

    class Meta:
        model = GatewayKey
        fields = ["enabled", "all_routes", "route"]


class TimeWindowFilter(StrictFilterSet):
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="At or after (ISO 8601)")
    until = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="Before (ISO 8601)")


class AuditEventFilter(TimeWindowFilter):
    action = filters.ChoiceFilter(choices=AuditAction.choices)

    class Meta:
        model = AuditEvent
        fields = ["object_type", "action", "actor", "object_id", "since", "until"]


class EventFilter(TimeWindowFilter):
    kind = filters.ChoiceFilter(choices=EventKind.choices)
    route = filters.CharFilter(field_name="route__name", help_text="Route name")
    deployment = filters.CharFilter(field_name="deployment__name", help_text="Deployment name")
    actor = filters.CharFilter(field_name="data__actor", help_text="Who made the change (a user, system:<part>)")

    class Meta:
        model = Event
        fields = ["kind", "route", "deployment", "actor", "api_key", "since", "until"]


class RequestLogFilter(TimeWindowFilter):
    outcome = filters.ChoiceFilter(choices=Outcome.choices)
    route = filters.CharFilter(field_name="route_name", help_text="Route name")
    deployment = filters.CharFilter(field_name="deployment__name", help_text="Deployment name")

    class Meta:
        model = RequestLog
        fields = ["outcome", "route", "deployment", "request_id", "since", "until"]


class CircuitFilter(StrictFilterSet):
    state = filters.ChoiceFilter(choices=CircuitState.choices)
    deployment = filters.CharFilter(field_name="deployment__name", help_text="Deployment name")

    class Meta:
        model = DeploymentCircuit
        fields = ["state", "deployment"]


# --- Registry ------------------------------------------------------------------

WRITES = extend_schema(parameters=[REASON_PARAMETER])
AUDITED = extend_schema_view(create=WRITES, update=WRITES, partial_update=WRITES, destroy=WRITES)


@AUDITED
@extend_schema(tags=["providers"])
class ProviderViewSet(AuditedModelViewSet):
    """Upstream providers (OpenAI-compatible base URLs), looked up by name."""

    queryset = Provider.objects.all()
    serializer_class = s.ProviderSerializer
    filterset_class = ProviderFilter
    lookup_field = "name"
    lookup_value_regex = NAME_LOOKUP

    def perform_create(self, serializer):
        reason = serializer.validated_data.pop("reason", "")
        with transaction.atomic():
            provider = serializer.save()
            self._record(AuditAction.CREATE, provider, None, snapshot(provider), reason)

    def perform_update(self, serializer):
        """Save with its audit record; a new base URL also leaves a timeline event with the reason."""
        reason = serializer.validated_data.pop("reason", "")
        old_url = serializer.instance.base_url
        with transaction.atomic():
            before = snapshot(serializer.instance)
            provider = serializer.save()
            self._record(AuditAction.UPDATE, provider, before, snapshot(provider), reason)
            if provider.base_url != old_url:
                endpoints.note_base_url_change(provider, old_url, actor=actor_name(self.request.user), reason=reason)


@AUDITED
@extend_schema(tags=["keys"])
class ApiKeyViewSet(AuditedModelViewSet):
    """Provider API keys. `secret` is write-only; responses show `masked`."""

    queryset = ApiKey.objects.select_related("provider")
    serializer_class = s.ApiKeySerializer
    filterset_class = ApiKeyFilter
    lookup_value_regex = r"\d+"


@AUDITED
@extend_schema(tags=["deployments"])
class DeploymentViewSet(AuditedModelViewSet):
    """A model at a provider, with its prices; looked up by name."""

    queryset = Deployment.objects.select_related("provider")
    serializer_class = s.DeploymentSerializer
    filterset_class = DeploymentFilter
    lookup_field = "name"
    lookup_value_regex = NAME_LOOKUP


@AUDITED
@extend_schema(tags=["gateway keys"])
class GatewayKeyViewSet(AuditedModelViewSet):
    """Keys that clients present to the gateway. The full key is returned once, by create."""

    queryset = GatewayKey.objects.prefetch_related("routes")
    filterset_class = GatewayKeyFilter
    lookup_value_regex = r"\d+"

    def get_serializer_class(self):
        return s.GatewayKeyCreatedSerializer if self.action == "create" else s.GatewayKeySerializer

    @extend_schema(parameters=[REASON_PARAMETER], responses={201: s.GatewayKeyCreatedSerializer})
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)


def expected_version(request, body_version=None):
    """Return the route version the caller edited (If-Match, else body `version`), or None.

    Raises ValidationError naming If-Match when the header is not an ETag we issued.
    """
    match = IF_MATCH.fullmatch(request.headers.get("If-Match", ""))
    if match is None:
        raise serializers.ValidationError({"If-Match": ['Send the ETag of the route as returned by GET, e.g. "3".']})
    return int(match["version"]) if match["version"] else body_version


def _body_version(request):
    value = request.data.get("version") if hasattr(request.data, "get") else None
    if value is not None and type(value) is not int:
        raise serializers.ValidationError({"version": ["A whole number is required."]})
    return value


ROUTE_WRITES = extend_schema(parameters=[REASON_PARAMETER, IF_MATCH_PARAMETER])
CONFLICT = OpenApiResponse(description='The route changed meanwhile; the body has the current "version".')


@extend_schema_view(create=WRITES, update=ROUTE_WRITES, partial_update=ROUTE_WRITES, destroy=WRITES)
@extend_schema(tags=["routes"])
class RouteViewSet(AuditedModelViewSet):
    """Routes (the model names clients ask the gateway for) with their weighted targets.

    Looked up by name. Reads carry `ETag: "<version>"`; writes honour If-Match.
    """

    queryset = Route.objects.prefetch_related("targets__deployment", "fallbacks__deployment")
    serializer_class = s.RouteSerializer
    filterset_class = RouteFilter
    lookup_field = "name"
    lookup_value_regex = NAME_LOOKUP
    action_permissions = {"set_weights": [WEIGHTS_PERMISSION], "revert_weights": [WEIGHTS_PERMISSION],
                          "set_fallbacks": [WEIGHTS_PERMISSION]}

    def perform_update(self, serializer):
        changes_routing = {"targets", "fallback_chain"} & set(serializer.validated_data)
        if changes_routing and not can_move_weights(self.request.user):
            raise PermissionDenied(f"Changing a route's targets or fallbacks also needs the {WEIGHTS_PERMISSION} "
                                   "permission.")
        with transaction.atomic():
            current = Route.objects.select_for_update().get(pk=serializer.instance.pk)
            wanted = expected_version(self.request, _body_version(self.request))
            if wanted is not None and wanted != current.version:
                raise weights.StaleVersion(current.version)
            serializer.instance.version = current.version
            super().perform_update(serializer)

    def finalize_response(self, request, response, *args, **kwargs):
        data = getattr(response, "data", None)
        if response.status_code < 300 and isinstance(data, dict) and isinstance(data.get("version"), int):
            response["ETag"] = f'"{data["version"]}"'
        return super().finalize_response(request, response, *args, **kwargs)

    def _validated(self, serializer_class):
        payload = serializer_class(data=self.request.data)
        payload.is_valid(raise_exception=True)
        return payload.validated_data

    def _route_response(self, route):
        route = self.get_queryset().get(pk=route.pk)
        return Response(s.RouteSerializer(route, context=self.get_serializer_context()).data)

    @extend_schema(
        request=s.WeightsChangeSerializer, parameters=[IF_MATCH_PARAMETER],
        responses={200: s.RouteSerializer, 409: CONFLICT},
        description="Set the traffic split: every target once, integers 0-100 summing to 100, "
        "weight > 0 only on enabled deployments, and a reason. Optionally `fallbacks` sets the fallback chain in the "
        "same change (\"primary 100 %, fallback on failure\" is one call). With \"dry_run\": true the split is "
        "checked the same way but not applied: the answer is its projection at the current volume (spend per day, "
        "p95, error rate) next to today's split.",
    )
    @action(detail=True, methods=["put", "patch"], url_path="weights", url_name="weights")
    def set_weights(self, request, name=None):
        route = self.get_object()
        payload = self._validated(s.WeightsChangeSerializer)
        if payload["dry_run"]:
            return self._projection(route, payload["weights"], payload.get("fallbacks"))
        route = weights.apply_weights(
            route, payload["weights"], reason=payload["reason"], actor=actor_name(request.user), user=request.user,
            expected_version=expected_version(request, payload.get("version")), fallbacks=payload.get("fallbacks"),
        )
        return self._route_response(route)

    @extend_schema(
        request=s.FallbacksChangeSerializer, parameters=[IF_MATCH_PARAMETER],
        responses={200: s.RouteSerializer, 409: CONFLICT},
        description="Set the fallback chain (deployments tried in order after every weighted target failed or has "
        "an open circuit), with a reason; the split stays. Audited like a weights change. Allowed while a rollout "
        "drives the split.",
    )
    @action(detail=True, methods=["put"], url_path="fallbacks", url_name="fallbacks")
    def set_fallbacks(self, request, name=None):
        route = self.get_object()
        payload = self._validated(s.FallbacksChangeSerializer)
        route = weights.apply_weights(
            route, None, reason=payload["reason"], actor=actor_name(request.user), user=request.user,
            expected_version=expected_version(request, payload.get("version")), fallbacks=payload["fallbacks"],
        )
        return self._route_response(route)

    def _projection(self, route, proposed, fallbacks=None):
        """Answer a dry run: the split (and chain) checked like a real change, projected, nothing applied."""
        names = {t.deployment.name for t in route.targets.select_related("deployment")}
        errors = weights.check_weights(proposed, targets=names)
        if fallbacks is not None:
            errors.update(weights.check_fallbacks(fallbacks, proposed))
        if errors:
            raise weights.WeightsInvalid(errors)
        return Response({"dry_run": True, "route": route.name, "version": route.version,
                         "projection": projection.route_projection(route, proposed)})

    @extend_schema(
        request=s.WeightsRevertSerializer, parameters=[IF_MATCH_PARAMETER],
        responses={200: s.RouteSerializer, 409: CONFLICT},
        description="Restore the split that was in force before the last weights change (with a reason).",
    )
    @action(detail=True, methods=["post"], url_path="weights/revert", url_name="weights-revert")
    def revert_weights(self, request, name=None):
        route = self.get_object()
        payload = self._validated(s.WeightsRevertSerializer)
        route = weights.revert_weights(
            route, reason=payload["reason"], actor=actor_name(request.user), user=request.user,
            expected_version=expected_version(request, payload.get("version")),
        )
        return self._route_response(route)

    @extend_schema(responses=s.AuditEventSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], url_path="weights/history", url_name="weights-history", filterset_class=None)
    def weights_history(self, request, name=None):
        """The weights changes of this route (audit events), newest first."""
        page = self.paginate_queryset(weights.weights_history(self.get_object()).select_related("user"))
        return self.get_paginated_response(s.AuditEventSerializer(page, many=True).data)


# --- Read-only streams -----------------------------------------------------------


@extend_schema(tags=["audit"])
class AuditEventViewSet(ReadOnlyViewSet):
    """The audit trail of configuration changes, newest first."""

    queryset = AuditEvent.objects.select_related("user")
    serializer_class = s.AuditEventSerializer
    filterset_class = AuditEventFilter


@extend_schema(tags=["events"])
class EventViewSet(ReadOnlyViewSet):
    """Operational events for the timeline (weights, health, circuits, keys), newest first."""

    queryset = Event.objects.select_related("route", "deployment", "api_key__provider")
    serializer_class = s.EventSerializer
    filterset_class = EventFilter


@extend_schema(tags=["circuits"])
class DeploymentCircuitViewSet(ReadOnlyViewSet):
    """The gateway's circuit-breaker state per deployment, as last reported."""

    queryset = DeploymentCircuit.objects.select_related("deployment").order_by("deployment__name")
    serializer_class = s.DeploymentCircuitSerializer
    filterset_class = CircuitFilter


@extend_schema(tags=["request log"])
class RequestLogViewSet(ReadOnlyViewSet):
    """The gateway's sampled request log: every failure and a share of successes, newest first."""

    queryset = RequestLog.objects.select_related("deployment", "gateway_key")
    serializer_class = s.RequestLogSerializer
    filterset_class = RequestLogFilter
