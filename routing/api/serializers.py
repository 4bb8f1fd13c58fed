"""REST representations of the registry. Secrets are write-only everywhere:
an API key's `secret` goes in, only `masked` comes out; a gateway key's full
value is returned once, by the create call."""

from collections.abc import Mapping

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from dashboard.roles import BODIES_PERMISSION, can_view_bodies
from routing import endpoints, first_token, weights
from routing.models import (
    ApiKey,
    AuditEvent,
    ContinueStreams,
    Deployment,
    DeploymentCircuit,
    Event,
    GatewayKey,
    KeyState,
    PrefillSupport,
    Provider,
    RequestLog,
    Route,
    RouteTarget,
    WindowSource,
    name_validator,
    secret_validator,
)

# Form posts from the browsable API carry the CSRF token next to the fields.
IGNORED_INPUT = {"csrfmiddlewaretoken"}
SETTABLE_KEY_STATES = (KeyState.ACTIVE, KeyState.DISABLED)
NO_TARGETS = "A route needs at least one target; leave targets out to add them later."


# JSON types each kind of field takes, as the schema states them (DRF itself would coerce "5" to 5 or 0 to "0").
JSON_TYPES = [
    (serializers.BooleanField, (bool,), "Must be true or false."),
    ((serializers.IntegerField, serializers.PrimaryKeyRelatedField), (int,), "A valid integer is required."),
    (serializers.FloatField, (int, float), "A valid number is required."),
    (serializers.DecimalField, (str,), 'A valid number is required, as a string (e.g. "2.50").'),
    ((serializers.CharField, serializers.SlugRelatedField), (str,), "A string is required."),
    ((serializers.ManyRelatedField, serializers.ListField, serializers.ListSerializer), (list,), "A list is required."),
]


def wrong_type(field, value):
    """Return the error message when `value` is of the wrong JSON type for `field`, else None."""
    if value is None:
        return None  # allow_null decides
    for kinds, types, expected in JSON_TYPES:
        if isinstance(field, kinds):
            exact = type(value) in types and not (bool not in types and isinstance(value, bool))
            return None if exact else expected
    return None


class StrictFieldsMixin:
    """Reject input fields the serializer does not know, naming each one, and values of the wrong JSON type."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields) - IGNORED_INPUT)
            if unknown:
                raise serializers.ValidationError({name[:100]: ["Unknown field."] for name in unknown[:20]})
            mistyped = {name: wrong_type(field, data[name]) for name, field in self.fields.items()
                        if name in data and not field.read_only}
            errors = {name: [message] for name, message in mistyped.items() if message}
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON number without a fraction: no "5", 5.0 or true."""

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)


def _name_field(model, **kwargs):
    return serializers.SlugRelatedField(slug_field="name", queryset=model.objects.all(), **kwargs)


class ProviderSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    reason = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=weights.MAX_REASON_LENGTH,
        help_text="Why; required when base_url changes (or send X-Audit-Reason). Kept in the audit trail.",
    )

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "connect_timeout", "read_timeout", "max_concurrency", "enabled", "notes",
                  "reason", "created_at", "updated_at"]

    def validate(self, attrs):
        audit = self.context.get("audit")
        attrs["reason"] = (attrs.get("reason") or "").strip() or (audit.reason if audit else "")
        if self.instance is not None and endpoints.needs_reason(self.instance, attrs.get("base_url"), attrs["reason"]):
            raise serializers.ValidationError({"reason": [endpoints.REASON_REQUIRED]})
        return attrs


class ApiKeySerializer(StrictFieldsMixin, serializers.ModelSerializer):
    provider = _name_field(Provider)
    secret = serializers.CharField(
        write_only=True, required=False, max_length=4096, style={"input_type": "password"},
        validators=[secret_validator],
        help_text="The provider's API key. Required on create; on update it replaces (rotates) the stored secret. "
                  "Never returned.",
    )
    masked = serializers.CharField(read_only=True, help_text="Display form of the secret, e.g. sk-…a1b2")

    class Meta:
        model = ApiKey
        fields = [
            "id", "provider", "label", "secret", "masked", "enabled", "rpm_limit", "tpm_limit",
            "state", "state_reason", "state_since", "rate_limited_until", "suspect_since", "created_at", "updated_at",
        ]
        read_only_fields = ["state_since", "rate_limited_until", "suspect_since"]
        extra_kwargs = {"state": {
            "help_text": "Admins may set active or disabled; the gateway sets rate_limited and invalid.",
        }}

    def validate_state(self, value):
        current = self.instance.state if self.instance else KeyState.ACTIVE
        if value != current and value not in SETTABLE_KEY_STATES:
            raise serializers.ValidationError("Only active or disabled can be set by hand.")
        return value

    def validate(self, attrs):
        if self.instance is None and not attrs.get("secret"):
            raise serializers.ValidationError({"secret": ["This field is required."]})
        return attrs

    def create(self, validated_data):
        key = ApiKey(**{k: v for k, v in validated_data.items() if k != "secret"})
        key.set_secret(validated_data["secret"])
        key.save()
        return key

    def update(self, instance, validated_data):
        secret = validated_data.pop("secret", None)
        if secret:
            instance.set_secret(secret)
        if "state" in validated_data and validated_data["state"] != instance.state:
            instance.state_since = timezone.now()
            instance.rate_limited_until = None
            validated_data.setdefault("state_reason", "")
        return super().update(instance, validated_data)


class FirstTokenTimeoutSerializer(serializers.Serializer):
    """The first-token timeout the gateway applies to a deployment, and where it comes from."""

    seconds = serializers.FloatField()
    source = serializers.ChoiceField(choices=first_token.TimeoutSource.choices)
    detail = serializers.CharField(help_text='"override", "learned from N requests" or "default until enough is '
                                             'known"')
    samples = serializers.IntegerField(help_text="First tokens measured over the last hour (probes and traffic)")
    ttft_p99_ms = serializers.FloatField(allow_null=True, help_text="Their p99, ms (null without any)")


WINDOW_HELP = ("Tokens of prompt + completion the gateway holds requests to. Reads the window in use (see "
               "context_window_source); writing a number types it (a typed window always wins), null clears the "
               "typed one so a discovered window applies.")


class DeploymentSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    provider = _name_field(Provider)
    first_token_timeout_in_effect = serializers.SerializerMethodField(
        help_text="The first-token timeout the gateway applies: the override, else learned from the measured "
                  "time to first token, else the default until enough is known.")
    context_window_source = serializers.SerializerMethodField(
        help_text="Where context_window comes from: typed, learned_from_error (the provider's own context-length "
                  "error), provider_metadata (its GET /models), catalogue, or unknown (never held against it).")
    context_windows = serializers.SerializerMethodField(
        help_text="The window each source knows (null: it says nothing), strongest first.")
    prefill_support = serializers.ChoiceField(
        source="prefill", choices=PrefillSupport.choices, read_only=True,
        help_text="Whether it continues a final assistant message, as the prefill probe found for its current "
                  "upstream model: verified, refused or unknown. Routes continue broken streams onto verified ones.")
    prefill_checked_at = serializers.DateTimeField(source="prefill_checked", read_only=True, allow_null=True,
                                                   help_text="When the prefill probe last ran (null: never)")
    prefill_detail = serializers.CharField(read_only=True, help_text="What the prefill probe saw")

    class Meta:
        model = Deployment
        fields = [
            "name", "provider", "upstream_model", "display_name", "input_price_per_mtok", "output_price_per_mtok",
            "context_window", "context_window_source", "context_windows", "first_token_timeout",
            "first_token_timeout_in_effect", "enabled", "prefill_support", "prefill_checked_at", "prefill_detail",
            "created_at", "updated_at",
        ]
        extra_kwargs = {"context_window": {"help_text": WINDOW_HELP, "min_value": 1},
                        "first_token_timeout": {"help_text": "Seconds (0.5-600) a stream may take to its first "
                                                             "content before the gateway fails over; null: learned "
                                                             "from measurements (see first_token_timeout_in_effect)."}}

    @extend_schema_field(FirstTokenTimeoutSerializer)
    def get_first_token_timeout_in_effect(self, deployment):
        # One read of the rollups per response, however many deployments it lists.
        learned = self.context.get("first_token_learned")
        if learned is None:
            learned = self.context["first_token_learned"] = first_token.learned()
        return first_token.effective(deployment.first_token_timeout, learned.get(deployment.pk)).as_dict()

    @extend_schema_field(serializers.ChoiceField(choices=WindowSource.choices))
    def get_context_window_source(self, deployment):
        return deployment.window()[1]

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField(allow_null=True)))
    def get_context_windows(self, deployment):
        return deployment.windows()

    def to_representation(self, deployment):
        data = super().to_representation(deployment)
        data["context_window"] = deployment.window()[0]  # the window in use, typed or discovered
        return data


class RouteTargetSerializer(StrictFieldsMixin, serializers.Serializer):
    deployment = _name_field(Deployment)
    weight = StrictIntegerField(min_value=0, max_value=100, help_text="Share of traffic in percent (0-100)")


FALLBACKS_HELP = ("Deployment names tried in this order only after every weighted target failed or has an open "
                  "circuit. Each one once, enabled, and not a target with weight > 0 (weight 0 or no target at all). "
                  "[] removes the chain.")


def fallbacks_field(help_text=FALLBACKS_HELP, **kwargs):
    return serializers.ListField(child=serializers.CharField(max_length=100), max_length=weights.MAX_FALLBACKS,
                                 help_text=help_text, **kwargs)


class ContinueStreamsField(serializers.ChoiceField):
    """Route.continue_streams: "auto", "on" or "off". true and false, the field's earlier (boolean) form, still
    mean "on" and "off"; anything else is refused."""

    def __init__(self, **kwargs):
        super().__init__(choices=ContinueStreams.choices, **kwargs)

    def to_internal_value(self, data):
        if type(data) is bool:
            return ContinueStreams.ON if data else ContinueStreams.OFF
        if type(data) is not str:
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


CONTINUE_STREAMS_HELP = ("Where a stream that breaks after content reached the client is continued from an assistant "
                         "prefill: auto (default) on targets whose prefill probe verified it; on: also on targets not "
                         "checked yet (never one seen refusing); off: never (the stream ends with an error event).")


class RouteSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    continue_streams = ContinueStreamsField(required=False, help_text=CONTINUE_STREAMS_HELP)
    targets = RouteTargetSerializer(
        many=True, required=False, min_length=1, error_messages={"min_length": NO_TARGETS},
        help_text="Deployments and their weights (summing to 100). On update, the given list replaces the targets.",
    )
    fallbacks = fallbacks_field(required=False, source="fallback_chain")

    class Meta:
        model = Route
        fields = ["name", "description", "continue_streams", "version", "targets", "fallbacks", "created_at",
                  "updated_at"]
        read_only_fields = ["version"]
        # Unique among live routes only (a deleted route's name is free again): DRF does not derive this
        # validator from the conditional constraint.
        extra_kwargs = {"name": {"validators": [name_validator, UniqueValidator(
            queryset=Route.objects.all(), message="A route with this name already exists.")]}}

    def validate(self, attrs):
        if "fallback_chain" not in attrs:
            return attrs
        if "targets" in attrs:
            split = {t["deployment"].name: t["weight"] for t in attrs["targets"]}
        else:
            split = self.instance.weights() if self.instance is not None else {}
        errors = weights.check_fallbacks(attrs["fallback_chain"], split)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def validate_targets(self, targets):
        if not targets:
            raise serializers.ValidationError(NO_TARGETS)
        if any("deployment" not in t or "weight" not in t for t in targets):
            raise serializers.ValidationError("Each target needs its deployment and weight.")
        names = [t["deployment"].name for t in targets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise serializers.ValidationError(f"Each deployment may be listed once; repeated: {', '.join(twice)}.")
        errors = weights.check_weights({t["deployment"].name: t["weight"] for t in targets})
        if errors:
            raise serializers.ValidationError([m for messages in errors.values() for m in messages])
        return targets

    def create(self, validated_data):
        targets = validated_data.pop("targets", [])
        fallbacks = validated_data.pop("fallback_chain", [])
        route = Route.objects.create(**validated_data)
        RouteTarget.objects.bulk_create(RouteTarget(route=route, **t) for t in targets)
        weights.set_fallbacks(route, fallbacks)
        return route

    def update(self, instance, validated_data):
        targets = validated_data.pop("targets", None)
        fallbacks = validated_data.pop("fallback_chain", None)
        before, chain_before = instance.weights(), instance.fallback_chain()
        with transaction.atomic():
            instance = super().update(instance, validated_data)
            if targets is not None:
                _replace_targets(instance, targets)
            if fallbacks is not None:
                weights.set_fallbacks(instance, fallbacks)
            else:
                weights.drop_weighted_fallbacks(instance)
            audit = self.context["audit"]
            weights.note_split_change(instance, before, reason=audit.reason, actor=audit.actor, user=audit.user,
                                      fallbacks_before=chain_before)
        return instance


def _replace_targets(route, targets):
    wanted = {t["deployment"].pk: t["weight"] for t in targets}
    route.targets.exclude(deployment_id__in=wanted).delete()
    for deployment_id, weight in wanted.items():
        RouteTarget.objects.update_or_create(route=route, deployment_id=deployment_id, defaults={"weight": weight})


class WeightsChangeSerializer(StrictFieldsMixin, serializers.Serializer):
    weights = serializers.DictField(
        help_text='{"<deployment name>": <integer weight>, ...}, one entry per target, summing to 100',
    )
    fallbacks = fallbacks_field(required=False, help_text=FALLBACKS_HELP.replace(
        "[] removes the chain.", "Set in the same change as the weights; left out, the chain stays (less any "
                                 "deployment the new weights give weight > 0)."))
    reason = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="Why; required, kept in the audit trail")
    version = StrictIntegerField(required=False, min_value=1,
                                 help_text="The route version you edited (or send If-Match)")
    dry_run = serializers.BooleanField(default=False, help_text="Only project the split's spend, p95 and error rate "
                                       "at the current volume; change nothing (no reason needed)")


class FallbacksChangeSerializer(StrictFieldsMixin, serializers.Serializer):
    fallbacks = fallbacks_field()
    reason = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="Why; required, kept in the audit trail")
    version = StrictIntegerField(required=False, min_value=1,
                                 help_text="The route version you edited (or send If-Match)")


class WeightsRevertSerializer(StrictFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="Why; required, kept in the audit trail")
    version = StrictIntegerField(required=False, min_value=1,
                                 help_text="The route version you edited (or send If-Match)")


class GatewayKeySerializer(StrictFieldsMixin, serializers.ModelSerializer):
    routes = _name_field(Route, many=True, required=False,
                         help_text="Route names this key may call when all_routes is false")

    class Meta:
        model = GatewayKey
        fields = ["id", "name", "prefix", "all_routes", "routes", "rpm_limit", "enabled", "created_at", "last_used_at"]

    def create(self, validated_data):
        routes = validated_data.pop("routes", [])
        key = GatewayKey(**validated_data)
        key.plaintext = key.generate()
        key.save()
        key.routes.set(routes)
        return key


class GatewayKeyCreatedSerializer(GatewayKeySerializer):
    key = serializers.CharField(source="plaintext", read_only=True,
                                help_text="The full key; shown only in this response")

    class Meta(GatewayKeySerializer.Meta):
        fields = GatewayKeySerializer.Meta.fields + ["key"]


class AuditEventSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "user", "action", "object_type", "object_id", "object_repr", "before",
                  "after", "reason"]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    route = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    deployment = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    api_key_label = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = ["id", "created_at", "kind", "route", "deployment", "api_key", "api_key_label", "message", "data"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_api_key_label(self, event):
        return str(event.api_key) if event.api_key_id else None


class DeploymentCircuitSerializer(serializers.ModelSerializer):
    deployment = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = DeploymentCircuit
        fields = ["id", "deployment", "state", "reason", "since", "updated_at"]
        read_only_fields = fields


class RequestLogSerializer(serializers.ModelSerializer):
    """A logged request; its bodies only for those who may read them (roles.can_view_bodies), else withheld
    (request_body null, response_body empty) with bodies_shown false saying so."""

    deployment = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    gateway_key = serializers.SlugRelatedField(slug_field="prefix", read_only=True, allow_null=True)
    bodies_shown = serializers.SerializerMethodField(
        help_text=f"False when the bodies are withheld: reading them needs the {BODIES_PERMISSION} permission")

    def get_bodies_shown(self, row) -> bool:
        request = self.context.get("request")
        if "may_view_bodies" not in self.context:  # once per response, not per row
            self.context["may_view_bodies"] = request is not None and can_view_bodies(request.user)
        return self.context["may_view_bodies"]

    def to_representation(self, row):
        data = super().to_representation(row)
        if not data["bodies_shown"]:
            data["request_body"], data["response_body"] = None, ""
        return data

    class Meta:
        model = RequestLog
        fields = ["id", "created_at", "request_id", "route_name", "deployment", "api_key", "gateway_key", "outcome",
                  "status",
                  "stream", "attempts", "latency_ms", "ttft_ms", "overhead_ms", "tokens_in", "tokens_out", "cost",
                  "error", "fallback",
                  "tried", "request_body", "response_body", "bodies_shown"]
        read_only_fields = fields
