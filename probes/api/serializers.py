"""REST representations of probe targets, results, rollup queries and health."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from probes.models import HealthState, ProbeResult, ProbeTarget, Source
from probes.rollups import SPAN, Window
from routing.api.serializers import StrictFieldsMixin, StrictIntegerField
from routing.models import ApiKey, Deployment, Route
from routing.outcomes import Outcome

HEALTH_WINDOWS = (Window.M5, Window.H1, Window.H24, Window.D7)
MAX_POINTS = 720


class ApiKeyLabelMixin:
    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_api_key_label(self, obj):
        """The label of the probed key, or None for a target that rotates over the deployment's keys."""
        return obj.api_key.label if obj.api_key_id else None


class ProbeTargetSerializer(ApiKeyLabelMixin, StrictFieldsMixin, serializers.ModelSerializer):
    deployment = serializers.SlugRelatedField(slug_field="name", queryset=Deployment.objects.all())
    api_key = serializers.PrimaryKeyRelatedField(queryset=ApiKey.objects.all(), allow_null=True, required=False,
                                                 help_text="Probe only this key "
                                                           "(empty: rotate over the deployment's keys)")
    api_key_label = serializers.SerializerMethodField()
    interval_s = StrictIntegerField(min_value=5, max_value=86400, required=False,
                                    help_text="Seconds between probes (at least 5)")
    max_tokens = StrictIntegerField(min_value=1, max_value=16, required=False)
    degraded_latency_ms = StrictIntegerField(min_value=1, allow_null=True, required=False)
    timeout_s = serializers.FloatField(min_value=0.5, max_value=120, required=False)
    last_outcome = serializers.ChoiceField(choices=Outcome.choices, allow_blank=True, read_only=True,
                                           help_text="Empty until the first probe")

    class Meta:
        model = ProbeTarget
        fields = [
            "id", "deployment", "api_key", "api_key_label", "enabled", "interval_s", "timeout_s", "prompt",
            "max_tokens",
            "reasoning_effort", "expected_pattern", "expected_json", "degraded_latency_ms",
            "health", "health_reason", "health_since", "consecutive_failures", "consecutive_successes",
            "last_outcome", "last_error", "last_probe_at", "created_at", "updated_at",
        ]
        read_only_fields = ["health", "health_reason", "health_since", "consecutive_failures", "consecutive_successes",
                            "last_outcome", "last_error", "last_probe_at"]
        validators = []  # the (deployment, key) uniqueness is checked in validate() with a clear message

    def validate(self, attrs):
        if self.instance is not None:
            for name in ("deployment", "api_key"):
                if name in attrs and attrs[name] != getattr(self.instance, name):
                    raise serializers.ValidationError({name: ["A probe target cannot move; create another one."]})
            return attrs
        deployment, key = attrs["deployment"], attrs.get("api_key")
        if key is not None and key.provider_id != deployment.provider_id:
            raise serializers.ValidationError({"api_key": ["The key must belong to the deployment's provider."]})
        if ProbeTarget.objects.filter(deployment=deployment, api_key=key).exists():
            raise serializers.ValidationError({"api_key": ["This deployment already has a probe target for this key."]})
        return attrs


class ProbeResultSerializer(ApiKeyLabelMixin, serializers.ModelSerializer):
    deployment = serializers.CharField(source="deployment.name", read_only=True)
    api_key_label = serializers.SerializerMethodField()

    class Meta:
        model = ProbeResult
        fields = [
            "id", "target", "deployment", "api_key", "api_key_label", "slot", "started_at", "lag_ms", "outcome",
            "status_code", "ttfb_ms", "ttft_ms", "total_ms", "tokens_per_s", "tokens_in", "tokens_out", "cost",
            "completed", "finish_reason", "model_reported", "model_swapped", "retry_after_s", "error",
        ]
        read_only_fields = fields


class PauseSerializer(StrictFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class RollupQuerySerializer(serializers.Serializer):
    """Query parameters of GET /rollups/."""

    deployment = serializers.SlugRelatedField(slug_field="name", queryset=Deployment.objects.all(),
                                              error_messages={"does_not_exist": "No deployment is named {value}."})
    source = serializers.ChoiceField(choices=Source.choices, default=Source.PROBE)
    window = serializers.ChoiceField(choices=Window.choices, default=Window.H1)
    api_key = serializers.PrimaryKeyRelatedField(queryset=ApiKey.objects.all(), required=False)
    route = serializers.SlugRelatedField(slug_field="name", queryset=Route.objects.all(), required=False,
                                         help_text="Only gateway traffic that came through this route",
                                         error_messages={"does_not_exist": "No route is named {value}."})
    step = serializers.IntegerField(min_value=1, max_value=1440, required=False,
                                    help_text="Minutes per point (default: 1, more for long windows)")

    def validate(self, attrs):
        attrs["window"] = Window(attrs["window"])
        window_minutes = SPAN[attrs["window"]].total_seconds() / 60
        attrs.setdefault("step", max(1, int(-(-window_minutes // MAX_POINTS))))
        if window_minutes / attrs["step"] > MAX_POINTS * 2:
            least = int(window_minutes // (MAX_POINTS * 2)) + 1
            raise serializers.ValidationError({"step": [f"Too many points; use a step of at least {least}."]})
        key = attrs.get("api_key")
        if key is not None and key.provider_id != attrs["deployment"].provider_id:
            raise serializers.ValidationError({"api_key": ["The key does not belong to this deployment's provider."]})
        return attrs


class RollupFiguresSerializer(serializers.Serializer):
    """Merged figures of a window or a bucket (probes.rollups.RollupDelta.figures)."""

    count = serializers.IntegerField()
    ok = serializers.IntegerField()
    errors = serializers.DictField(child=serializers.IntegerField(), help_text="{outcome: count}")
    error_rate = serializers.FloatField(
        allow_null=True, help_text="Deployment error rate: the deployment's own failures (timeout, connect_error, "
        "server_error, malformed, truncated) over all requests; never a client's error or a key's 429")
    availability = serializers.FloatField(allow_null=True, help_text="1 - error_rate")
    client_errors = serializers.IntegerField(
        help_text="Requests the client caused to fail: client_error (4xx), client_deadline, client_closed")
    rate_limited = serializers.IntegerField(help_text="Requests answered 429 for the key in use (rate_limited)")
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)
    ttft_p50_ms = serializers.FloatField(allow_null=True)
    ttft_p95_ms = serializers.FloatField(allow_null=True)
    tokens_per_s = serializers.FloatField(allow_null=True)
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    cost = serializers.CharField(help_text="Decimal, in the prices' currency")


class RollupPointSerializer(RollupFiguresSerializer):
    t = serializers.IntegerField(help_text="Start of the bucket, epoch ms")
    start = serializers.DateTimeField(help_text="Start of the bucket")
    rps = serializers.FloatField(help_text="Requests per second over the part of the bucket that has passed")


class RollupSeriesSerializer(serializers.Serializer):
    """GET /rollups/: chart points oldest first, and the window's merged figures."""

    deployment = serializers.CharField()
    source = serializers.ChoiceField(choices=Source.choices)
    window = serializers.CharField()
    api_key = serializers.IntegerField(allow_null=True)
    route = serializers.CharField(allow_null=True)
    step_minutes = serializers.IntegerField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    summary = RollupFiguresSerializer()
    points = RollupPointSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    """A target's health and its figures over the standard windows (from rollups)."""

    target = serializers.IntegerField()
    deployment = serializers.CharField()
    api_key = serializers.IntegerField(allow_null=True)
    state = serializers.ChoiceField(choices=HealthState.choices)
    reason = serializers.CharField()
    since = serializers.DateTimeField()
    consecutive_failures = serializers.IntegerField()
    last_outcome = serializers.CharField()
    last_probe_at = serializers.DateTimeField(allow_null=True)
    windows = serializers.DictField(child=serializers.DictField())
