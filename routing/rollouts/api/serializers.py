"""REST representations of rollouts: a strictly validated plan and guards in, transitions and verdicts out."""

from django.db import transaction
from rest_framework import serializers

from routing.api.serializers import StrictFieldsMixin, StrictIntegerField
from routing.audit import actor_name, record, snapshot
from routing.models import AuditAction, Deployment, Route
from routing.weights import MAX_REASON_LENGTH

from .. import forecast
from ..analysis import DEFAULT_GUARDS, Guard, Metric
from ..models import ACTIVE_STATES, Rollout, RolloutTransition, RolloutVerdict

MAX_STEPS = 20
# Bounds of what a plan may ask for: a week is the longest a step may run (step_timeout_s), ten million the most
# canary requests a rollout may wait for (min_canary_requests). Beyond them a value is a typo, not a plan.
MAX_STEP_S = 7 * 86400
MAX_REQUESTS = 10**7
MAX_ALLOWED = 10.0  # +1000 % on a p95: anything more guards nothing
MAX_LIMIT = 1e9  # a p99 of 11 days, a billion tokens/s or dollars per request


class StepSerializer(StrictFieldsMixin, serializers.Serializer):
    weight = StrictIntegerField(required=False, min_value=1, max_value=100, help_text="Canary weight, 1-100")
    min_dwell_s = StrictIntegerField(required=False, min_value=0, max_value=MAX_STEP_S, default=0,
                                     help_text="Least seconds at this weight (at most 604800: 7 days)",
                                     error_messages={"max_value": "At most {max_value} s (7 days)."})
    min_requests = StrictIntegerField(required=False, min_value=0, max_value=MAX_REQUESTS, default=0,
                                      help_text="Least canary requests at this weight (at most 10,000,000)",
                                      error_messages={"max_value": "At most {max_value} requests."})
    pause = serializers.BooleanField(required=False, default=False, help_text="Wait here for a human's approval")
    shadow = StrictIntegerField(required=False, min_value=1, max_value=100,
                                help_text="Mirror this % of the route's requests to the canary, answers discarded")

    def to_representation(self, step):
        return dict(step)  # as stored: {pause: true} or the weight's (or shadow's) fields

    def validate(self, data):
        if [data["pause"], "weight" in data, "shadow" in data].count(True) != 1:
            raise serializers.ValidationError("A step is either {weight, min_dwell_s, min_requests}, "
                                              "{shadow, min_dwell_s, min_requests} or {pause: true}.")
        return {"pause": True} if data["pause"] else {k: v for k, v in data.items() if k != "pause"}


class GuardSerializer(StrictFieldsMixin, serializers.Serializer):
    metric = serializers.ChoiceField(choices=Metric.choices)
    allowed = serializers.FloatField(required=False, allow_null=True, default=None, max_value=MAX_ALLOWED,
                                     help_text="Allowed regression: points for rates (0.005 = +0.5 pp), "
                                               "relative for p95s (0.1 = +10%, at most 10 = +1000 %)")
    limit = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0, max_value=MAX_LIMIT,
                                   help_text="Absolute limit: a rate, a p99 in ms, a minimum tokens/s or a cost")

    def validate(self, data):
        try:
            Guard(**data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return data


class RolloutTransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = RolloutTransition
        fields = ["from_state", "to_state", "step", "actor", "reason", "evidence", "at"]


class RolloutVerdictSerializer(serializers.ModelSerializer):
    class Meta:
        model = RolloutVerdict
        fields = ["step", "verdict", "sentence", "canary_requests", "baseline_requests", "evidence", "at"]


class RolloutSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    route = serializers.SlugRelatedField(slug_field="name", queryset=Route.objects.all())
    canary = serializers.SlugRelatedField(slug_field="name", queryset=Deployment.objects.all())
    plan = StepSerializer(many=True, allow_empty=False, max_length=MAX_STEPS)
    guards = GuardSerializer(many=True, allow_empty=False, max_length=len(Metric.choices), required=False,
                             default=lambda: [dict(g) for g in DEFAULT_GUARDS],
                             help_text="Default: errors +1 pp, p95 time to first token +20 %, "
                                       "p95 time per output token +20 %")
    alpha = serializers.FloatField(required=False, min_value=1e-6, max_value=0.2, default=0.01)

    class Meta:
        model = Rollout
        fields = ["id", "route", "canary", "state", "step", "plan", "guards", "alpha", "min_canary_requests",
                  "step_timeout_s", "preflight_probes", "baseline", "created_by", "created_at", "updated_at"]
        read_only_fields = ["state", "step", "baseline", "created_by", "created_at", "updated_at"]
        extra_kwargs = {"min_canary_requests": {"min_value": 10, "max_value": MAX_REQUESTS},
                        "step_timeout_s": {"min_value": 10, "max_value": MAX_STEP_S},
                        "preflight_probes": {"min_value": 1, "max_value": 20}}

    def to_internal_value(self, data):
        given = sorted(name for name in self.Meta.read_only_fields + ["id"] if isinstance(data, dict) and name in data)
        if given:
            raise serializers.ValidationError({name: ["Read-only field; set by the rollout itself."] for name in given})
        return super().to_internal_value(data)

    def validate_plan(self, plan):
        weights = [step["weight"] for step in plan if "weight" in step]
        if not weights:
            raise serializers.ValidationError("The plan needs at least one step with a weight.")
        if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
            raise serializers.ValidationError(f"Weights must strictly increase step by step, not {weights}.")
        first_weight = next(n for n, step in enumerate(plan) if "weight" in step)
        if any("shadow" in step for step in plan[first_weight:]):
            raise serializers.ValidationError("Shadow steps come before the first step with a weight.")
        return plan

    def validate_guards(self, guards):
        metrics = [g["metric"] for g in guards]
        if len(set(metrics)) != len(metrics):
            raise serializers.ValidationError("Guard each metric once.")
        return guards

    def validate(self, data):
        route, canary = data["route"], data["canary"]
        split = route.weights()
        if canary.name not in split:
            raise serializers.ValidationError({"canary": [f"{canary.name!r} is not a target of route {route.name!r}."]})
        first = next(step["weight"] for step in data["plan"] if "weight" in step)
        if split[canary.name] >= first:
            raise serializers.ValidationError({"canary": [
                f"{canary.name!r} already has weight {split[canary.name]} on {route.name!r}; "
                f"the first step ({first}) must give it more."]})
        if split[canary.name] and any("shadow" in step for step in data["plan"]):
            raise serializers.ValidationError({"plan": [
                f"A shadow step needs {canary.name!r} at weight 0 on {route.name!r} (it has {split[canary.name]})."]})
        if not any(w for name, w in split.items() if name != canary.name):
            raise serializers.ValidationError({"route": [f"Route {route.name!r} has no baseline traffic to compare."]})
        busy = Rollout.objects.filter(canary=canary, state__in=ACTIVE_STATES).first()
        if busy is not None:
            raise serializers.ValidationError({"canary": [f"{canary.name!r} is the canary of {busy}, still active."]})
        return data

    def forecast(self):
        """Return forecast.forecast_plan of the validated rollout: the API's dry run and the form's preview."""
        data = self.validated_data
        fields = {name: data.get(name, Rollout._meta.get_field(name).default)
                  for name in ("step_timeout_s", "min_canary_requests")}
        return forecast.forecast_plan(data["route"], data["plan"], data["guards"], **fields)

    def save_draft(self, user):
        """Save the validated rollout as a draft with its audit row (one transaction); return it. The API and the
        page's form both create drafts here."""
        actor = actor_name(user)
        with transaction.atomic():
            rollout = self.save(created_by=actor)
            record(action=AuditAction.CREATE, obj=rollout, actor=actor, user=user, after=snapshot(rollout),
                   reason="rollout drafted")
        return rollout


class RolloutDetailSerializer(RolloutSerializer):
    transitions = RolloutTransitionSerializer(many=True, read_only=True)
    verdicts = serializers.SerializerMethodField()

    class Meta(RolloutSerializer.Meta):
        fields = [*RolloutSerializer.Meta.fields, "step_started_at", "transitions", "verdicts"]
        read_only_fields = [*RolloutSerializer.Meta.read_only_fields, "step_started_at"]

    def get_verdicts(self, rollout) -> list:
        return RolloutVerdictSerializer(rollout.verdicts.all()[:50], many=True).data


class GateSerializer(StrictFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=MAX_REASON_LENGTH, help_text="Why; kept in the audit trail")


class StepForecastSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    label = serializers.CharField()
    weight = serializers.IntegerField(allow_null=True)
    canary_rps = serializers.FloatField()
    requests_needed = serializers.IntegerField(allow_null=True, help_text="Canary requests an unchanged canary needs")
    guards = serializers.ListField(child=serializers.DictField())
    seconds = serializers.IntegerField(allow_null=True, help_text="Likely seconds to a decision at recent traffic")
    decides_in_time = serializers.BooleanField()


class ForecastSerializer(serializers.Serializer):
    route_rps = serializers.FloatField(help_text="The route's requests per second over the last window_s")
    window_s = serializers.IntegerField()
    steps = StepForecastSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
