"""REST representations of load tests; `LoadTestSettingsSerializer` is also the CLI's validator."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from probes.loadtest import prompts as prompt_sets
from probes.loadtest import thresholds as threshold_rules
from probes.loadtest.metrics import TIMED
from probes.loadtest.models import LoadTestRun
from probes.loadtest.profiles import ProfileKind
from probes.loadtest.prompts import PromptSource
from routing.api.serializers import StrictFieldsMixin, StrictIntegerField
from routing.models import Deployment, Route

MAX_REQUESTS = 100_000
MAX_DURATION_S = 3600
MAX_CONCURRENCY = 512
MAX_RATE = 10_000
MAX_JSONL_CHARS = 5_000_000
MAX_SEED = 2**32 - 1
MAX_SLO_MS = 600_000  # the longest request timeout: a slower answer never completes
RESULT_FIELDS = ("thresholds", "client_limited", "client_limited_reason", "generator_cpu_share", "cancelled", "phases")


class LoadTestSettingsSerializer(StrictFieldsMixin, serializers.Serializer):
    """What to run: one target, a profile, prompts, caps, thresholds and SLOs."""

    route = serializers.SlugRelatedField(slug_field="name", queryset=Route.objects.all(), required=False,
                                         help_text="Through the gateway (weights, limits, retries apply)")
    deployment = serializers.SlugRelatedField(slug_field="name", queryset=Deployment.objects.all(), required=False,
                                              help_text="One deployment directly, with one of its provider's keys")
    profile = serializers.ChoiceField(choices=ProfileKind.choices, default=ProfileKind.CONCURRENT)
    concurrency = serializers.ListField(child=StrictIntegerField(min_value=1, max_value=MAX_CONCURRENCY),
                                        min_length=1, max_length=10, default=[4])
    rate = serializers.FloatField(min_value=0.01, max_value=MAX_RATE, required=False, help_text="Requests per second")
    seed = StrictIntegerField(min_value=0, max_value=MAX_SEED, default=0, help_text="Seed of the Poisson arrivals")
    stages = serializers.ListField(child=serializers.ListField(child=serializers.FloatField(min_value=0), min_length=2,
                                                               max_length=2),
                                   max_length=20, default=list, help_text="[[duration s, target rate/s], ...]")
    sweep_steps = StrictIntegerField(min_value=1, max_value=20, default=5)
    requests = StrictIntegerField(min_value=1, max_value=MAX_REQUESTS, default=100, help_text="Request cap")
    duration_s = serializers.FloatField(min_value=1, max_value=MAX_DURATION_S, default=60, help_text="Time cap")
    prompts = serializers.ChoiceField(choices=PromptSource.choices, default=PromptSource.BUILTIN)
    input_tokens = StrictIntegerField(min_value=1, max_value=32_000, default=128, help_text="Synthetic prompt length")
    prompts_jsonl = serializers.CharField(required=False, max_length=MAX_JSONL_CHARS, trim_whitespace=False,
                                          help_text='JSONL text: {"prompt": ...} or {"messages": [...]} per line')
    max_tokens = StrictIntegerField(min_value=1, max_value=8192, default=64)
    stream = serializers.BooleanField(default=True)
    timeout_s = serializers.FloatField(min_value=1, max_value=600, default=60)
    thresholds = serializers.ListField(child=serializers.CharField(max_length=200), max_length=20, default=list)
    abort_on_fail = serializers.BooleanField(default=False)
    slos = serializers.DictField(child=serializers.FloatField(min_value=0, max_value=MAX_SLO_MS), default=dict,
                                 help_text="{ttft|itl|tpot|e2e: max ms} for goodput")

    def validate_thresholds(self, value):
        for text in value:
            try:
                threshold_rules.parse(text)
            except threshold_rules.ThresholdError as problem:
                raise serializers.ValidationError(str(problem)) from None
        return value

    def validate_slos(self, value):
        unknown = sorted(set(value) - set(TIMED))
        if unknown:
            raise serializers.ValidationError(f"Unknown SLO metric {unknown[0]!r}; use {', '.join(TIMED)}.")
        return value

    def validate_stages(self, value):
        if any(duration <= 0 for duration, _ in value):
            raise serializers.ValidationError("Every stage needs a duration above 0 s.")
        if any(duration > MAX_DURATION_S for duration, _ in value):
            raise serializers.ValidationError(f"A stage lasts at most {MAX_DURATION_S} s (the run's time cap).")
        if any(rate > MAX_RATE for _, rate in value):
            raise serializers.ValidationError(f"A stage's rate is at most {MAX_RATE}/s.")
        return value

    def validate(self, attrs):
        if ("route" in attrs) == ("deployment" in attrs):
            raise serializers.ValidationError({"route": ["Give exactly one target: a route or a deployment."]})
        profile = attrs["profile"]
        if profile in (ProfileKind.CONSTANT, ProfileKind.POISSON) and "rate" not in attrs:
            raise serializers.ValidationError({"rate": [f"The {profile} profile needs a rate (requests per second)."]})
        if profile == ProfileKind.STAGES and not attrs["stages"]:
            raise serializers.ValidationError({"stages": ["The stages profile needs at least one stage."]})
        if attrs["prompts"] == PromptSource.JSONL:
            try:
                prompt_sets.from_jsonl((attrs.get("prompts_jsonl") or "").splitlines())
            except ValueError as problem:
                raise serializers.ValidationError({"prompts_jsonl": [f"Not usable: {problem}."]}) from None
        return attrs

    def as_settings(self):
        """Return the validated settings as plain JSON (targets by name)."""
        data = dict(self.validated_data)
        for name in ("route", "deployment"):
            if name in data:
                data[name] = data[name].name
        return data


class LoadTestRunSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    summary = serializers.SerializerMethodField()

    class Meta:
        model = LoadTestRun
        fields = ["id", "created_at", "created_by", "target_label", "settings", "estimated_max_cost", "status",
                  "stop_requested", "stop_reason", "passed", "progress", "summary", "error", "started_at",
                  "finished_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_summary(self, run):
        result = run.result or {}
        summary = {k: v for k, v in (result.get("summary") or {}).items()}
        for name in RESULT_FIELDS:
            if name in result:
                summary[name] = result[name]
        return summary


class LoadTestCreateSerializer(LoadTestSettingsSerializer):
    confirm = serializers.BooleanField(default=False, help_text="False: only estimate the maximum spend; true: start")
