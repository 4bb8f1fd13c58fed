"""REST representations of alert channels. A channel's target and signing secret are write-only:
they go in, only `target_hint` and `has_secret` come out."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from dashboard.alerts import targets
from dashboard.alerts.models import Channel, ChannelKind, Delivery
from routing.api.serializers import StrictFieldsMixin


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
