"""Alert channels in the admin: the target and the signing secret are write-only (blank keeps the stored one),
every save and delete is audited like the API's; the delivery log is read-only."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from dashboard.alerts import targets
from dashboard.alerts.models import Channel, ChannelKind, Delivery
from routing.admin import AuditedAdmin, ReadOnlyAdmin

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
