"""Admin for probes: targets are editable (and audited), results and rollups read-only."""

from django.contrib import admin, messages
from django.db import transaction

from probes.models import KeyRecheck, ProbeBudget, ProbeResult, ProbeTarget, ProbeUsage, Rollup
from probes.signals import ensure_target
from routing import audit
from routing.models import AuditAction

READ_ONLY_HEALTH = ("health", "health_reason", "health_since", "consecutive_failures", "consecutive_successes",
                    "last_outcome", "last_error", "last_probe_at")


class AuditedAdmin(admin.ModelAdmin):
    """Saves and deletes go into the audit trail like API changes."""

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            before = audit.snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
            super().save_model(request, obj, form, change)
            audit.record(action=AuditAction.UPDATE if change else AuditAction.CREATE, obj=obj,
                         actor=audit.actor_name(request.user), user=request.user, before=before,
                         after=audit.snapshot(obj))

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit.record(action=AuditAction.DELETE, obj=obj, actor=audit.actor_name(request.user), user=request.user,
                         before=audit.snapshot(obj))
            super().delete_model(request, obj)


@admin.register(ProbeTarget)
class ProbeTargetAdmin(AuditedAdmin):
    list_display = ("__str__", "enabled", "interval_s", "health", "last_outcome", "last_probe_at")
    list_filter = ("health", "enabled", "deployment__provider")
    search_fields = ("deployment__name", "api_key__label")
    readonly_fields = READ_ONLY_HEALTH
    actions = ["add_per_key_targets"]

    @admin.action(description="Also probe each key of these deployments separately")
    def add_per_key_targets(self, request, queryset):
        created = 0
        for target in queryset.select_related("deployment__provider"):
            for key in target.deployment.provider.keys.all():
                before = ProbeTarget.objects.count()
                ensure_target(target.deployment, api_key=key, actor=audit.actor_name(request.user), user=request.user)
                created += ProbeTarget.objects.count() - before
        self.message_user(request, f"{created} per-key probe target(s) added.", messages.SUCCESS)


@admin.register(ProbeResult)
class ProbeResultAdmin(admin.ModelAdmin):
    list_display = ("started_at", "target", "api_key", "outcome", "status_code", "total_ms", "ttft_ms", "model_swapped")
    list_filter = ("outcome", "model_swapped", "deployment")
    date_hierarchy = "started_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ProbeBudget)
class ProbeBudgetAdmin(AuditedAdmin):
    list_display = ("provider", "daily_tokens", "daily_cost", "slowdown")


@admin.register(ProbeUsage)
class ProbeUsageAdmin(admin.ModelAdmin):
    list_display = ("day", "provider", "probes", "tokens", "cost")
    list_filter = ("provider",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(KeyRecheck)
class KeyRecheckAdmin(admin.ModelAdmin):
    """When each invalid or suspect key is next re-checked (read-only: probes.rechecks keeps them)."""

    list_display = ("api_key", "due_at", "failures", "last_outcome", "last_checked_at")
    list_select_related = ("api_key__provider",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Rollup)
class RollupAdmin(admin.ModelAdmin):
    list_display = ("minute", "source", "deployment", "api_key", "count", "ok")
    list_filter = ("source", "deployment")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
