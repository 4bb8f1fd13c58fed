"""REST representations of alerting: rules with per-kind parameters, policies, inhibit rules, silences and
maintenance windows in (strictly validated, each error naming its field); alerts out.

REST representations of alert channels. A channel's target and signing secret are write-only:
they go in, only `target_hint` and `has_secret` come out."""

from functools import cache
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from dashboard.alerts import targets
from dashboard.alerts.models import Channel, ChannelKind, Delivery
from routing.api.serializers import StrictFieldsMixin, StrictIntegerField
from routing.models import ApiKey, Deployment, Provider, Route

from ..matching import LABEL_NAME, MatcherInvalid, SilenceInvalid, check_matcher
from ..models import (
    Alert,
    AlertRule,
    ConditionKind,
    InhibitRule,
    MaintenanceWindow,
    NotificationPolicy,
    Severity,
    Silence,
    WindowKind,
)
from ..sources import ROLLOUT_STATES


class DeliverySerializer(serializers.ModelSerializer):
    channel = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "channel", "notification", "group_key", "status", "test", "attempt", "outcome", "http_status",
                  "error", "duration_ms", "next_attempt_at", "at"]
        read_only_fields = fields


class ChannelSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    target = serializers.CharField(
        write_only=True, required=False, max_length=targets.MAX_TARGET, trim_whitespace=True,
        style={"input_type": "password"},
        help_text="apprise: one Apprise URL (e.g. slack://…, ntfy://…, json://host/path); webhook: the http(s) URL "
                  "to POST to; email: recipients, comma-separated. Required on create; on update it replaces the "
                  "stored one. Never returned.",
    )
    secret = serializers.CharField(
        write_only=True, required=False, trim_whitespace=False, max_length=targets.MAX_SECRET,
        style={"input_type": "password"},
        help_text="webhook only: the HMAC-SHA256 signing secret (16-256 visible ASCII characters). Required for a "
                  "new webhook channel; on update it replaces the stored one. Never returned.",
    )
    target_hint = serializers.CharField(read_only=True, help_text="Display form of the target, e.g. slack://…a1b2")
    has_secret = serializers.BooleanField(read_only=True)
    last_delivery = serializers.SerializerMethodField()

    class Meta:
        model = Channel
        fields = ["id", "name", "kind", "target", "secret", "target_hint", "has_secret", "enabled", "last_delivery",
                  "created_at", "updated_at"]

    def get_last_delivery(self, channel) -> DeliverySerializer(allow_null=True):
        last = channel.last_delivery
        return DeliverySerializer(last).data if last is not None else None

    def validate(self, attrs):
        kind = attrs.get("kind", self.instance.kind if self.instance else None)
        kind_changed = self.instance is not None and kind != self.instance.kind
        if "target" in attrs:
            attrs["target"] = _clean("target", targets.clean_target, kind, attrs["target"])
        elif self.instance is None or kind_changed:
            raise serializers.ValidationError({"target": ["Give the target for this kind of channel."]})
        if attrs.get("secret"):
            attrs["secret"] = _clean("secret", targets.clean_secret, kind, attrs["secret"])
        elif kind == ChannelKind.WEBHOOK and not (self.instance is not None and self.instance.has_secret):
            raise serializers.ValidationError({"secret": ["A webhook channel needs a signing secret."]})
        return attrs

    def create(self, validated_data):
        channel = Channel(**{k: v for k, v in validated_data.items() if k not in ("target", "secret")})
        self._store_secrets(channel, validated_data)
        channel.save()
        return channel

    def update(self, instance, validated_data):
        for name, value in validated_data.items():
            if name not in ("target", "secret"):
                setattr(instance, name, value)
        self._store_secrets(instance, validated_data)
        instance.save()
        return instance

    @staticmethod
    def _store_secrets(channel, data):
        if "target" in data:
            channel.set_target(data["target"])
        if data.get("secret"):
            channel.set_secret(data["secret"])
        elif channel.kind != ChannelKind.WEBHOOK:
            channel.set_secret("")  # a channel that became another kind keeps no signing secret


def _clean(field, check, kind, value):
    try:
        return check(kind, value)
    except DjangoValidationError as exc:
        raise serializers.ValidationError({field: exc.messages}) from None


MAX_MATCHERS = 20
MAX_LABELS = 20
DAY_S = 86400
MATCHER_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string"}, "op": {"type": "string", "enum": ["=", "!=", "=~", "!~"]},
    "value": {"type": "string"}}, "required": ["name", "value"]}}


@extend_schema_field(MATCHER_SCHEMA)
class MatchersField(serializers.JSONField):
    """A list of {name, op, value} label matchers (Alertmanager's = != =~ !~)."""

    def __init__(self, *, min_length=0, **kwargs):
        self.min_length = min_length
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, list) or len(data) > MAX_MATCHERS:
            raise serializers.ValidationError(f"A list of at most {MAX_MATCHERS} matchers is required.")
        if len(data) < self.min_length:
            raise serializers.ValidationError('Give at least one matcher, e.g. {"name": "deployment", "value": "x"}.')
        checked = []
        for index, matcher in enumerate(data):
            try:
                checked.append(check_matcher(matcher))
            except MatcherInvalid as exc:
                raise serializers.ValidationError(f"matcher {index + 1}: {exc}") from None
        return checked


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class LabelsField(serializers.JSONField):
    def to_internal_value(self, data):
        if not isinstance(data, dict) or len(data) > MAX_LABELS:
            raise serializers.ValidationError(f"An object of at most {MAX_LABELS} label: text pairs is required.")
        for name, value in data.items():
            if not LABEL_NAME.match(name):
                raise serializers.ValidationError(f"{name[:70]!r}: a label name is a letter or _ then letters, "
                                                  "digits or _.")
            if not isinstance(value, str) or not value or len(value) > 200:
                raise serializers.ValidationError(f"{name}: a label value is text of 1 to 200 characters.")
        return data


class LabelNameField(serializers.RegexField):
    def __init__(self, **kwargs):
        super().__init__(LABEL_NAME.pattern, max_length=64, **kwargs)


# --- one parameter serializer per condition kind --------------------------------------------------------------


class NoParams(StrictFieldsMixin, serializers.Serializer):
    pass


class HealthParams(StrictFieldsMixin, serializers.Serializer):
    states = serializers.ListField(child=serializers.ChoiceField(choices=["down", "degraded"]), min_length=1,
                                   max_length=2, default=["down"])


class KeyStateParams(StrictFieldsMixin, serializers.Serializer):
    states = serializers.ListField(child=serializers.ChoiceField(choices=["invalid", "rate_limited"]), min_length=1,
                                   max_length=2, default=["invalid", "rate_limited"])


class RolloutParams(StrictFieldsMixin, serializers.Serializer):
    states = serializers.ListField(child=serializers.ChoiceField(choices=ROLLOUT_STATES), min_length=1,
                                   max_length=len(ROLLOUT_STATES), default=list(ROLLOUT_STATES))
    hold_s = StrictIntegerField(min_value=60, max_value=7 * DAY_S, default=3600,
                                help_text="How long a one-off outcome (rolled back, promoted...) stays firing")


class NoDataParams(StrictFieldsMixin, serializers.Serializer):
    intervals = StrictIntegerField(min_value=1, max_value=1000, default=3,
                                   help_text="Silent for more than this many probe intervals")


class TtftParams(StrictFieldsMixin, serializers.Serializer):
    threshold_ms = serializers.FloatField(min_value=1, max_value=600_000)
    window_s = StrictIntegerField(min_value=60, max_value=DAY_S, default=300)
    source = serializers.ChoiceField(choices=["all", "probe", "traffic"], default="all")
    min_count = StrictIntegerField(min_value=1, max_value=10**7, default=1)


class ErrorRateParams(StrictFieldsMixin, serializers.Serializer):
    threshold = serializers.FloatField(min_value=0.0001, max_value=1, help_text="0.05 = 5 %")
    window_s = StrictIntegerField(min_value=60, max_value=DAY_S, default=600)
    min_count = StrictIntegerField(min_value=1, max_value=10**7, default=20)
    scope = serializers.ChoiceField(choices=["route", "deployment"], default="route")


class SpendParams(StrictFieldsMixin, serializers.Serializer):
    limit = serializers.FloatField(min_value=0.0001, max_value=10**9, help_text="In the price list's currency")
    scope = serializers.ChoiceField(choices=["total", "route", "deployment"], default="total")


PARAMS = {
    ConditionKind.DEPLOYMENT_HEALTH: HealthParams, ConditionKind.PROVIDER_DOWN: NoParams,
    ConditionKind.CIRCUIT_OPEN: NoParams, ConditionKind.KEY_STATE: KeyStateParams, ConditionKind.ROLLOUT: RolloutParams,
    ConditionKind.PROBE_BUDGET: NoParams, ConditionKind.NO_DATA: NoDataParams, ConditionKind.TTFT_P95: TtftParams,
    ConditionKind.ERROR_RATE: ErrorRateParams, ConditionKind.SPEND_TODAY: SpendParams,
}
SUBJECTS = {"provider": (Provider, "name"), "deployment": (Deployment, "name"), "route": (Route, "name"),
            "key": (ApiKey, "label")}


class AlertRuleSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    params = serializers.JSONField(required=False, help_text="Per kind; see the README's alerts section")
    labels = LabelsField(required=False, help_text="provider / deployment / route / key narrow the rule; "
                                                   "other labels travel with its alerts")

    class Meta:
        model = AlertRule
        fields = ["id", "name", "description", "kind", "params", "for_s", "severity", "labels", "enabled",
                  "created_at", "updated_at"]
        extra_kwargs = {"for_s": {"max_value": 7 * DAY_S}}

    def validate(self, data):
        kind = data.get("kind", getattr(self.instance, "kind", None))
        params = data.get("params", getattr(self.instance, "params", None) if "kind" not in data else None) or {}
        if not isinstance(params, dict):
            raise serializers.ValidationError({"params": ["An object is required."]})
        checked = PARAMS[kind](data=params)
        if not checked.is_valid():
            raise serializers.ValidationError({"params": checked.errors})
        data["params"] = dict(checked.validated_data)
        for name, value in data.get("labels", {}).items():
            if name in SUBJECTS:
                model, field = SUBJECTS[name]
                if not model.objects.filter(**{field: value}).exists():
                    raise serializers.ValidationError({"labels": [f"{name}: no {name} named {value!r}."]})
        return data


class NotificationPolicySerializer(StrictFieldsMixin, serializers.ModelSerializer):
    matchers = MatchersField(required=False)
    severities = serializers.ListField(child=serializers.ChoiceField(choices=Severity.choices), required=False,
                                       max_length=3, help_text="Empty: every severity")
    group_by = serializers.ListField(child=serializers.RegexField(rf"^(\.\.\.|{LABEL_NAME.pattern[1:-1]})$",
                                                                  max_length=64),
                                     required=False, max_length=MAX_LABELS,
                                     help_text='Label names; ["..."] groups by every label')
    channels = serializers.SlugRelatedField(slug_field="name", queryset=Channel.objects.all(), many=True,
                                            required=False)

    class Meta:
        model = NotificationPolicy
        fields = ["id", "name", "order", "matchers", "severities", "channels", "group_by", "group_wait_s",
                  "group_interval_s", "repeat_interval_s", "continue_matching", "enabled", "created_at", "updated_at"]
        extra_kwargs = {"group_wait_s": {"max_value": DAY_S}, "group_interval_s": {"min_value": 1, "max_value": DAY_S},
                        "repeat_interval_s": {"min_value": 60, "max_value": 30 * DAY_S}, "order": {"max_value": 10**6}}

    def validate(self, data):
        interval = data.get("group_interval_s", getattr(self.instance, "group_interval_s", 300))
        repeat = data.get("repeat_interval_s", getattr(self.instance, "repeat_interval_s", 4 * 3600))
        if repeat < interval:
            raise serializers.ValidationError({"repeat_interval_s": [
                f"Repeat at most as often as the group interval ({interval} s)."]})
        return data


class InhibitRuleSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    source_matchers = MatchersField(min_length=1)
    target_matchers = MatchersField(min_length=1)
    equal = serializers.ListField(child=LabelNameField(), required=False, max_length=MAX_LABELS)

    class Meta:
        model = InhibitRule
        fields = ["id", "name", "source_matchers", "target_matchers", "equal", "enabled", "created_at", "updated_at"]


class SilenceSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    matchers = MatchersField(min_length=1)
    starts_at = serializers.DateTimeField(required=False, help_text="Default: now")
    match_all = serializers.BooleanField(required=False, default=False, write_only=True,
                                         help_text="Required (true) when the matchers silence every alert")
    active = serializers.SerializerMethodField()

    class Meta:
        model = Silence
        fields = ["id", "matchers", "starts_at", "ends_at", "match_all", "created_by", "reason", "active",
                  "created_at"]
        read_only_fields = ["created_by", "created_at"]
        extra_kwargs = {"reason": {"max_length": 1000}}

    def to_internal_value(self, data):
        if isinstance(data, dict) and "created_by" in data:
            raise serializers.ValidationError({"created_by": ["Read-only field: the signed-in user."]})
        return super().to_internal_value(data)

    def get_active(self, silence) -> bool:
        return silence.active(timezone.now())

    def validate(self, data):
        now = timezone.now()
        starts = data.get("starts_at", getattr(self.instance, "starts_at", None) or now)
        ends = data.get("ends_at", getattr(self.instance, "ends_at", None))
        if ends <= starts:
            raise serializers.ValidationError({"ends_at": ["The silence must end after it starts."]})
        if ends <= now and self.instance is None:
            raise serializers.ValidationError({"ends_at": ["The silence must end in the future."]})
        matchers = data.get("matchers", getattr(self.instance, "matchers", None))
        try:
            Silence.validate_silence(matchers, starts, ends, match_all=data.pop("match_all", False))
        except SilenceInvalid as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from exc
        data["starts_at"] = starts
        return data

    def create(self, validated_data):
        validated_data["created_by"] = self.context["audit"].actor
        return super().create(validated_data)


class MaintenanceWindowSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    matchers = MatchersField(required=False, help_text="Empty: every alert")
    weekdays = serializers.ListField(child=StrictIntegerField(min_value=0, max_value=6), required=False,
                                     max_length=7, help_text="0 = Monday … 6 = Sunday (weekly windows)")
    timezone = serializers.CharField(required=False, max_length=64, help_text="An IANA name, e.g. Europe/Berlin")

    class Meta:
        model = MaintenanceWindow
        fields = ["id", "name", "kind", "matchers", "starts_at", "ends_at", "weekdays", "start_time", "end_time",
                  "timezone", "enabled", "created_at", "updated_at"]

    def validate_timezone(self, value):
        if value not in _timezones():
            raise serializers.ValidationError(f"{value[:64]!r} is not an IANA time zone (e.g. Europe/Berlin, UTC).")
        return value

    def validate(self, data):
        merged = {name: data.get(name, getattr(self.instance, name, None)) for name in self.Meta.fields}
        if merged["kind"] in (None, WindowKind.ONE_OFF):
            for name in ("starts_at", "ends_at"):
                if merged[name] is None:
                    raise serializers.ValidationError({name: ["A one-off window needs starts_at and ends_at."]})
            if merged["ends_at"] <= merged["starts_at"]:
                raise serializers.ValidationError({"ends_at": ["The window must end after it starts."]})
            return data
        if not merged["weekdays"]:
            raise serializers.ValidationError({"weekdays": ["A weekly window needs at least one weekday (0-6)."]})
        for name in ("start_time", "end_time"):
            if merged[name] is None:
                raise serializers.ValidationError({name: ["A weekly window needs start_time and end_time."]})
        if merged["start_time"] == merged["end_time"]:
            raise serializers.ValidationError({"end_time": ["The window must not end when it starts."]})
        return data


@cache
def _timezones():
    return frozenset(available_timezones()) | {"UTC"}


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.SlugRelatedField(slug_field="name", read_only=True)
    severity = serializers.CharField(source="rule.severity", read_only=True)
    labels = LabelsField(read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "rule", "severity", "state", "labels", "summary", "value", "suppressed", "suppressed_by",
                  "started_at", "fired_at", "resolved_at"]
        read_only_fields = fields
