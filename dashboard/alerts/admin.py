"""Alerting in the admin: the configuration is edited here as through the API (the same validation, audited);
alerts are read-only, since only the engine moves them. Channels are registered with delivery."""

from django import forms
from django.contrib import admin

from routing.admin import AuditedAdmin

from .api.serializers import PARAMS
from .matching import MatcherInvalid, check_matcher
from .models import Alert, AlertRule, InhibitRule, MaintenanceWindow, NotificationPolicy, Silence

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
