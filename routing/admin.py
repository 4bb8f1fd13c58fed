"""Admin pages for the routing registry.

Every save and delete made here leaves an AuditEvent (actor = the admin
user), like the REST API does. Secrets are write-only: an API key's secret
field never renders its value, and a new gateway key is shown exactly once.
Split changes go through routing.weights, so they are validated, versioned
and announced the same way as from the API.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.forms.models import BaseInlineFormSet, inlineformset_factory
from django.utils import timezone
from knox.models import AuthToken as KnoxAuthToken

from dashboard.roles import can_view_bodies
from routing import deletion, endpoints, tokens, weights
from routing.audit import actor_name, record, snapshot
from routing.models import (
    ApiKey,
    ApiToken,
    AuditAction,
    AuditEvent,
    Deployment,
    DeploymentCircuit,
    Event,
    GatewayKey,
    KeyState,
    Provider,
    RequestLog,
    Route,
    RouteFallback,
    RouteTarget,
    secret_validator,
)


def _audit(request, action, obj, before, after, reason="", object_id=None):
    record(action=action, obj=obj, actor=actor_name(request.user), user=request.user, before=before, after=after,
           reason=reason, object_id=object_id)


def _stored_snapshot(obj):
    """Snapshot of `obj` as it is in the database (the form has already changed the instance)."""
    return snapshot(type(obj)._default_manager.get(pk=obj.pk))


class AuditedAdmin(admin.ModelAdmin):
    """Record one AuditEvent per save and delete, with actor = the admin user.

    The after-snapshot is taken once the inlines are saved, so a route's
    record shows its new weights. Inline objects (e.g. API keys on a provider)
    get records of their own, except route targets, which the route's covers.
    """

    def save_model(self, request, obj, form, change):
        request._audit_before = _stored_snapshot(obj) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        self.related_saved(request, form, change)
        action = AuditAction.UPDATE if change else AuditAction.CREATE
        reason = form.cleaned_data.get("reason", "")
        _audit(request, action, form.instance, getattr(request, "_audit_before", None), snapshot(form.instance), reason)

    def related_saved(self, request, form, change):
        """Hook run after the inlines are saved and before the audit record."""

    def save_formset(self, request, form, formset, change):
        if formset.model in (RouteTarget, RouteFallback):  # the route's own record covers its split and chain
            return super().save_formset(request, form, formset, change)
        before = {f.instance.pk: _stored_snapshot(f.instance)
                  for f in formset.initial_forms if f.instance.pk and f.has_changed()}
        before |= {f.instance.pk: _stored_snapshot(f.instance) for f in formset.deleted_forms if f.instance.pk}
        deleted = [(obj.pk, obj) for obj in (f.instance for f in formset.deleted_forms) if obj.pk]
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            _audit(request, AuditAction.CREATE, obj, None, snapshot(obj))
        for obj, _fields in formset.changed_objects:
            _audit(request, AuditAction.UPDATE, obj, before.get(obj.pk), snapshot(obj))
        for pk, obj in deleted:
            _audit(request, AuditAction.DELETE, obj, before.get(pk), None, object_id=str(pk))

    def get_deleted_objects(self, objs, request):
        """Refuse on the confirmation page, with the API's 409 sentences, what the API would refuse."""
        refusals = [sentence for sentence in map(deletion.refusal, objs) if sentence]
        if refusals:
            return [], {}, set(), refusals
        return self.listed_for_deletion(objs, request)

    def listed_for_deletion(self, objs, request):
        """Return what the confirmation page lists, in get_deleted_objects' shape."""
        return super().get_deleted_objects(objs, request)

    def delete_model(self, request, obj):
        deletion.delete(obj, actor=actor_name(request.user), user=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                deletion.delete(obj, actor=actor_name(request.user), user=request.user)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: viewable, never added, changed or deleted by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Providers and their keys -----------------------------------------------------------


class ApiKeyAdminForm(forms.ModelForm):
    """The secret is write-only: required for a new key, blank keeps the stored one."""

    secret = forms.CharField(
        required=False, max_length=4096, validators=[secret_validator],
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The provider's API key. Leave blank to keep the stored secret; it is never shown again.",
    )

    class Meta:
        model = ApiKey
        fields = ["provider", "label", "secret", "enabled", "rpm_limit", "tpm_limit", "state", "state_reason"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "state" in self.fields:
            # The gateway and probes set rate_limited/invalid; people set active or disabled.
            settable = {KeyState.ACTIVE, KeyState.DISABLED, self.instance.state}
            self.fields["state"].choices = [c for c in KeyState.choices if c[0] in settable]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", "A new key needs its secret.")
        return cleaned

    def save(self, commit=True):
        if self.cleaned_data.get("secret"):
            self.instance.set_secret(self.cleaned_data["secret"])
        if self.instance.pk and "state" in self.changed_data:
            self.instance.state_since = timezone.now()
            self.instance.rate_limited_until = None
        return super().save(commit)


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    form = ApiKeyAdminForm
    fields = ["label", "secret", "masked", "enabled", "rpm_limit", "tpm_limit", "state"]
    readonly_fields = ["masked"]
    extra = 0
    show_change_link = True


class ProviderAdminForm(forms.ModelForm):
    """A new base URL sends the provider's keys to the new host, so it needs a reason."""

    reason = forms.CharField(
        required=False, max_length=weights.MAX_REASON_LENGTH,
        help_text="Why you change this provider; required when the base URL changes. Kept in the audit trail.",
    )

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "connect_timeout", "read_timeout", "max_concurrency", "enabled", "notes",
                  "reason"]

    def clean(self):
        cleaned = super().clean()
        stored = Provider.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        if stored is not None and endpoints.needs_reason(stored, cleaned.get("base_url"), cleaned.get("reason", "")):
            self.add_error("reason", endpoints.REASON_REQUIRED)
        return cleaned


@admin.register(Provider)
class ProviderAdmin(AuditedAdmin):
    form = ProviderAdminForm
    list_display = ["name", "kind", "base_url", "enabled"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [ApiKeyInline]

    def save_model(self, request, obj, form, change):
        old_url = Provider.objects.get(pk=obj.pk).base_url if change else None
        super().save_model(request, obj, form, change)
        if change and obj.base_url != old_url:
            endpoints.note_base_url_change(obj, old_url, actor=actor_name(request.user),
                                           reason=form.cleaned_data["reason"])


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    form = ApiKeyAdminForm
    list_display = ["__str__", "masked", "state", "enabled", "rpm_limit", "tpm_limit", "state_since"]
    list_filter = ["state", "enabled", "provider"]
    search_fields = ["label", "provider__name"]
    readonly_fields = ["masked", "state_since", "rate_limited_until", "suspect_since", "created_at", "updated_at"]
    list_select_related = ["provider"]


@admin.register(Deployment)
class DeploymentAdmin(AuditedAdmin):
    list_display = ["name", "provider", "upstream_model", "input_price_per_mtok", "output_price_per_mtok",
                    "window_in_use", "enabled"]
    list_filter = ["enabled", "provider"]
    search_fields = ["name", "upstream_model", "display_name"]
    readonly_fields = ["window_in_use", "learned_window", "learned_window_error", "learned_window_at",
                       "provider_window", "catalogue_window", "catalogue_entry", "windows_checked_at", "windows_note",
                       "prefill", "prefill_checked_at", "prefill_detail", "created_at", "updated_at"]
    list_select_related = ["provider"]

    @admin.display(description="context window in use")
    def window_in_use(self, deployment):
        tokens, source = deployment.window()
        return f"{tokens} tokens ({source.label})" if tokens else source.label

    @admin.display(description="Prefill support")
    def prefill(self, deployment):
        return deployment.prefill.label


# --- Routes and their split ---------------------------------------------------------------


class RouteTargetFormSet(BaseInlineFormSet):
    """The split of the targets on the page must be valid as a whole (sum 100, enabled deployments)."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        split = {
            f.cleaned_data["deployment"].name: f.cleaned_data["weight"]
            for f in self.forms
            if f.cleaned_data.get("deployment") and not f.cleaned_data.get("DELETE")
        }
        if not split:
            if self.instance.pk and self.instance.targets.exists():
                raise ValidationError("A route needs at least one target; delete the route to retire it.")
            return
        rollout = weights.locking_rollout(self.instance) if self.instance.pk else None
        if rollout is not None and split != self.instance.weights():
            raise ValidationError(str(weights.RouteLocked(rollout)))
        problems = weights.check_weights(split)
        if problems:
            raise ValidationError([message for messages in problems.values() for message in messages])


TargetFormSet = inlineformset_factory(Route, RouteTarget, formset=RouteTargetFormSet, fields=["deployment", "weight"],
                                     extra=0)


class RouteTargetInline(admin.TabularInline):
    model = RouteTarget
    formset = RouteTargetFormSet
    fields = ["deployment", "weight"]
    extra = 0


class RouteFallbackFormSet(BaseInlineFormSet):
    """The chain on the page must pass the same checks as the API's, against the split the same page submits."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        kept = [f for f in self.forms if f.cleaned_data.get("deployment") and not f.cleaned_data.get("DELETE")]
        kept.sort(key=lambda f: f.cleaned_data.get("position") or 0)
        problems = weights.check_fallbacks([f.cleaned_data["deployment"].name for f in kept], self._submitted_split())
        if problems:
            raise ValidationError([message for messages in problems.values() for message in messages])

    def _submitted_split(self):
        """Return the split of the targets inline posted with this chain (the stored one when it is not valid)."""
        stored = self.instance.weights() if self.instance.pk else {}
        targets = TargetFormSet(self.data, instance=self.instance, prefix="targets")
        if "targets-TOTAL_FORMS" not in self.data or not targets.is_valid():
            return stored  # the targets inline shows its own errors
        return {f.cleaned_data["deployment"].name: f.cleaned_data["weight"] for f in targets.forms
                if f.cleaned_data.get("deployment") and not f.cleaned_data.get("DELETE")}


class RouteFallbackInline(admin.TabularInline):
    model = RouteFallback
    formset = RouteFallbackFormSet
    fields = ["position", "deployment"]
    extra = 0
    verbose_name = "fallback"
    verbose_name_plural = "fallbacks (tried in order after every weighted target failed)"


class RouteAdminForm(forms.ModelForm):
    reason = forms.CharField(
        required=False, max_length=weights.MAX_REASON_LENGTH,
        help_text="Why you make this change (kept in the audit trail; shown with weight changes).",
    )
    # The version this page was opened at: a save on top of a newer change (a slider, the API, a rollout) is
    # refused, as the API refuses a stale If-Match, instead of silently undoing it.
    expected_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Route
        fields = ["name", "description", "continue_streams", "reason", "expected_version"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["expected_version"].initial = self.instance.version

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk:
            # Locked until the admin's transaction ends, so no weight change slips in between check and save.
            current = Route.objects.select_for_update().get(pk=self.instance.pk).version
            if cleaned.get("expected_version") != current:
                raise ValidationError(
                    f"This route changed while you were editing it (it is now at version {current}). "
                    "Reload the page to see the new split, then make your change again.", code="stale")
        return cleaned


@admin.register(Route)
class RouteAdmin(AuditedAdmin):
    form = RouteAdminForm
    list_display = ["name", "split", "fallbacks", "continue_streams", "version", "updated_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["version", "created_at", "updated_at"]
    inlines = [RouteTargetInline, RouteFallbackInline]

    @admin.display(description="Split")
    def split(self, route):
        return ", ".join(f"{name} {weight}%" for name, weight in route.weights().items()) or "—"

    @admin.display(description="Fallbacks")
    def fallbacks(self, route):
        return " → ".join(route.fallback_chain()) or "—"

    def listed_for_deletion(self, objs, request):
        """A route is archived (routing.deletion): only its targets and fallbacks go, its history stays."""
        routes = list(objs)
        config = [str(link) for route in routes for link in [*route.targets.all(), *route.fallbacks.all()]]
        listed = [*(str(route) for route in routes), config] if config else [str(route) for route in routes]
        return listed, {Route._meta.verbose_name_plural: len(routes)}, set(), []

    def save_model(self, request, obj, form, change):
        stored = Route.objects.get(pk=obj.pk) if change else None
        request._weights_before = stored.weights() if change else None
        request._fallbacks_before = stored.fallback_chain() if change else None
        super().save_model(request, obj, form, change)

    def related_saved(self, request, form, change):
        weights.drop_weighted_fallbacks(form.instance)
        if change:
            weights.note_split_change(
                form.instance, request._weights_before,
                reason=form.cleaned_data.get("reason") or "changed in the admin",
                actor=actor_name(request.user), user=request.user, fallbacks_before=request._fallbacks_before,
            )


# --- Gateway keys ----------------------------------------------------------------------------


@admin.register(GatewayKey)
class GatewayKeyAdmin(AuditedAdmin):
    list_display = ["name", "prefix", "all_routes", "enabled", "rpm_limit", "last_used_at"]
    list_filter = ["enabled", "all_routes"]
    search_fields = ["name", "prefix"]
    fields = ["name", "prefix", "all_routes", "routes", "rpm_limit", "enabled", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    filter_horizontal = ["routes"]

    def save_model(self, request, obj, form, change):
        plaintext = None if change else obj.generate()
        super().save_model(request, obj, form, change)
        if plaintext:
            messages.success(request, f"Copy the new gateway key now; it will not be shown again: {plaintext}")


# --- Records written by the system --------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_repr", "reason"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_repr", "object_id", "reason"]
    date_hierarchy = "created_at"


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "route", "deployment", "api_key", "message"]
    list_filter = ["kind"]
    search_fields = ["message"]
    date_hierarchy = "created_at"
    list_select_related = ["route", "deployment", "api_key__provider"]


@admin.register(DeploymentCircuit)
class DeploymentCircuitAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "state", "reason", "since", "updated_at"]
    list_filter = ["state"]
    list_select_related = ["deployment"]


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "route_name", "deployment", "outcome", "status", "attempts", "latency_ms", "ttft_ms"]
    list_filter = ["outcome", "stream"]
    search_fields = ["request_id", "route_name"]
    date_hierarchy = "created_at"
    list_select_related = ["deployment"]

    def get_exclude(self, request, obj=None):
        # The bodies need their own permission, here as in the API.
        return [] if can_view_bodies(request.user) else ["request_body", "response_body"]


# --- API tokens -----------------------------------------------------------------------------

# knox registers its own token model, which routing.ApiToken replaces (settings.KNOX_TOKEN_MODEL).
if admin.site.is_registered(KnoxAuthToken):
    admin.site.unregister(KnoxAuthToken)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Every user's tokens, to see and revoke; new ones are made on the tokens page or with `api_token`,
    where the plaintext is shown once."""

    list_display = ["name", "user", "token_key", "created", "expiry"]
    list_filter = ["user"]
    search_fields = ["name", "token_key", "user__username"]
    list_select_related = ["user"]

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("routing.delete_apitoken")

    def delete_model(self, request, obj):
        tokens.revoke(obj, actor=actor_name(request.user), user=request.user)

    def delete_queryset(self, request, queryset):
        for token in queryset.select_related("user"):
            tokens.revoke(token, actor=actor_name(request.user), user=request.user)
