"""Alerting in the admin: the configuration is edited here as through the API (the same validation, audited);
alerts are read-only, since only the engine moves them. Channels are registered with delivery.

Alert channels in the admin: the target and the signing secret are write-only (blank keeps the stored one),
every save and delete is audited like the API's; the delivery log is read-only."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from dashboard.alerts import targets
from dashboard.alerts.models import Channel, ChannelKind, Delivery
from routing.admin import AuditedAdmin, ReadOnlyAdmin

from .api.serializers import PARAMS
from .matching import MatcherInvalid, check_matcher
from .models import Alert, AlertRule, InhibitRule, MaintenanceWindow, NotificationPolicy, Silence

WRITE_ONLY = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class ChannelAdminForm(forms.ModelForm):
    target = forms.CharField(
        required=False, max_length=targets.MAX_TARGET, widget=WRITE_ONLY,
        help_text="Apprise URL, webhook URL, or email recipients (comma-separated). Leave blank to keep the stored "
                  "one; it is never shown again.",
    )
    secret = forms.CharField(
        required=False, max_length=targets.MAX_SECRET, strip=False, widget=WRITE_ONLY,
        help_text="Webhook only: the HMAC signing secret. Leave blank to keep the stored one.",
    )

    class Meta:
        model = Channel
        fields = ["name", "kind", "target", "secret", "enabled"]

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        kind_changed = self.instance.pk and kind != self.instance.kind
        if cleaned.get("target"):
            self._checked("target", targets.clean_target, kind)
        elif not self.instance.pk or kind_changed:
            self.add_error("target", "Give the target for this kind of channel.")
        if cleaned.get("secret"):
            self._checked("secret", targets.clean_secret, kind)
        elif kind == ChannelKind.WEBHOOK and not (self.instance.pk and self.instance.has_secret and not kind_changed):
            self.add_error("secret", "A webhook channel needs a signing secret.")
        return cleaned

    def _checked(self, field, check, kind):
        try:
            self.cleaned_data[field] = check(kind, self.cleaned_data[field])
        except ValidationError as exc:
            self.add_error(field, exc.messages)

    def save(self, commit=True):
        if self.cleaned_data.get("target"):
            self.instance.set_target(self.cleaned_data["target"])
        if self.cleaned_data.get("secret"):
            self.instance.set_secret(self.cleaned_data["secret"])
        elif self.instance.kind != ChannelKind.WEBHOOK:
            self.instance.set_secret("")
        return super().save(commit)


@admin.register(Channel)
class ChannelAdmin(AuditedAdmin):
    form = ChannelAdminForm
    list_display = ["name", "kind", "target_hint", "enabled", "updated_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    readonly_fields = ["target_hint", "has_secret", "created_at", "updated_at"]

    @admin.display(boolean=True, description="signing secret set")
    def has_secret(self, obj):
        return obj.has_secret


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["at", "channel", "group_key", "status", "attempt", "outcome", "http_status", "duration_ms", "test"]
    list_filter = ["outcome", "status", "test", "channel"]
    search_fields = ["group_key", "notification"]
    fields = ["at", "channel", "notification", "group_key", "status", "test", "attempt", "outcome", "http_status",
              "error", "duration_ms", "next_attempt_at"]


MATCHER_FIELDS = ("matchers", "source_matchers", "target_matchers")


class CheckedForm(forms.ModelForm):
    """Checks matchers and a rule's parameters with the API's own rules."""

    def clean(self):
        data = super().clean()
        for name in MATCHER_FIELDS:
            if name in data:
                self._check_matchers(name, data[name])
        if "kind" in data and "params" in data:
            checked = PARAMS[data["kind"]](data=data["params"] or {})
            if checked.is_valid():
                data["params"] = dict(checked.validated_data)
            else:
                self.add_error("params", "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in checked.errors.items()))
        return data

    def _check_matchers(self, name, matchers):
        if not isinstance(matchers, list):
            self.add_error(name, "A list of matchers is required.")
            return
        for index, matcher in enumerate(matchers):
            try:
                check_matcher(matcher)
            except MatcherInvalid as exc:
                self.add_error(name, f"matcher {index + 1}: {exc}")


class ConfigAdmin(AuditedAdmin):
    form = CheckedForm


@admin.register(AlertRule)
class AlertRuleAdmin(ConfigAdmin):
    list_display = ["name", "kind", "severity", "for_s", "enabled"]
    list_filter = ["kind", "severity", "enabled"]
    search_fields = ["name"]


@admin.register(NotificationPolicy)
class NotificationPolicyAdmin(ConfigAdmin):
    list_display = ["name", "order", "group_wait_s", "group_interval_s", "repeat_interval_s", "continue_matching",
                    "enabled"]
    filter_horizontal = ["channels"]


@admin.register(InhibitRule)
class InhibitRuleAdmin(ConfigAdmin):
    list_display = ["name", "equal", "enabled"]


@admin.register(Silence)
class SilenceAdmin(ConfigAdmin):
    list_display = ["id", "starts_at", "ends_at", "created_by", "reason"]
    readonly_fields = ["created_by"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(ConfigAdmin):
    list_display = ["name", "kind", "starts_at", "ends_at", "weekdays", "start_time", "end_time", "timezone",
                    "enabled"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["rule", "state", "summary", "suppressed", "started_at", "fired_at", "resolved_at"]
    list_filter = ["state", "suppressed"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
