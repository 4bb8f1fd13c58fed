"""REST API of staged rollouts (under /api/v1/rollouts/): create, list, detail, and the gates.

Viewers read; staff with the permissions of dashboard.roles create rollouts and press gates (the page asks the
same helper, and both press through controller.gate). Every gate needs a reason, is
recorded as a transition, an AuditEvent (with the latest verdict as evidence)
and a timeline Event. A gate that does not apply in the rollout's state
answers 409 and changes nothing.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from dashboard import roles
from routing.api.base import BodySizeLimitMixin
from routing.api.filters import StrictFilterSet
from routing.audit import actor_name

from .. import controller
from ..models import Rollout
from . import serializers as s

GATE_CONFLICT = OpenApiResponse(description="The gate does not apply in the rollout's present state.")


def _gate_action(name, url_path, description):
    """Return the POST action pressing gate `name` (named before @action reads the name)."""

    def press(self, request, pk=None):
        return self.press_gate(name)

    press.__name__ = name
    press = action(detail=True, methods=["post"], url_path=url_path, url_name=url_path)(press)
    return extend_schema(request=s.GateSerializer, responses={200: s.RolloutDetailSerializer, 409: GATE_CONFLICT},
                         description=description)(press)


class RolloutFilter(StrictFilterSet):
    """`?state=` is one of the states; present but empty is a 400, as everywhere in the API."""

    class Meta:
        model = Rollout
        fields = ["state"]


@extend_schema(tags=["rollouts"])
class RolloutViewSet(BodySizeLimitMixin, mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     viewsets.GenericViewSet):
    """Staged rollouts of a canary onto a route; created as drafts, moved by gates and the controller."""

    queryset = Rollout.objects.select_related("route", "canary")
    filterset_class = RolloutFilter
    action_permissions = {"create": roles.rollout_create_permissions(), "preview": roles.rollout_create_permissions(),
                          **{name: roles.gate_permissions(name) for name in controller.GATES}}

    def get_serializer_class(self):
        return s.RolloutDetailSerializer if self.action != "list" else s.RolloutSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        return queryset.prefetch_related("transitions") if self.action != "list" else queryset

    def perform_create(self, serializer):
        serializer.save_draft(self.request.user)

    def press_gate(self, name):
        rollout = self.get_object()
        payload = s.GateSerializer(data=self.request.data)
        payload.is_valid(raise_exception=True)
        try:
            controller.gate(rollout.pk, name, reason=payload.validated_data["reason"],
                            actor=actor_name(self.request.user), user=self.request.user)
        except controller.GateRefused as exc:
            return Response({"detail": str(exc), "state": rollout.state}, status=status.HTTP_409_CONFLICT)
        fresh = self.get_queryset().get(pk=rollout.pk)
        return Response(s.RolloutDetailSerializer(fresh, context=self.get_serializer_context()).data)

    @extend_schema(request=s.RolloutSerializer, responses={200: s.ForecastSerializer},
                   description="Dry run: validate a rollout as create does and say how long each step will likely "
                               "take to decide at the route's recent traffic; nothing is saved.")
    @action(detail=False, methods=["post"], url_path="preview", url_name="preview")
    def preview(self, request):
        serializer = s.RolloutSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return Response(serializer.forecast())

    start = _gate_action("start", "start", "Start a draft: preflight probes of the canary, then its first step.")
    approve = _gate_action("approve", "approve", "Approve the next step of a rollout awaiting approval.")
    pause = _gate_action("pause", "pause", "Pause: the split stays, ticks stop, manual weight changes are allowed.")
    resume = _gate_action("resume", "resume", "Resume a paused rollout; its current step starts afresh.")
    promote = _gate_action("promote", "promote-now", "Promote now: the canary takes the plan's final weight.")
    abort = _gate_action("abort", "abort", "Abort: the canary is drained and the baseline split restored.")
    retry = _gate_action("retry", "retry", "Retry a rolled-back or aborted rollout from its first step.")
