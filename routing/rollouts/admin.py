"""Rollouts in the admin: read-only, so every change goes through the gates (API or pages) and is recorded."""

from django.contrib import admin

from .models import Rollout, RolloutTransition, RolloutVerdict


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RolloutTransitionInline(ReadOnlyInline):
    model = RolloutTransition
    fields = ["at", "from_state", "to_state", "step", "actor", "reason"]


class RolloutVerdictInline(ReadOnlyInline):
    model = RolloutVerdict
    fields = ["at", "step", "verdict", "sentence", "canary_requests", "baseline_requests"]


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["id", "route", "canary", "state", "step", "created_at"]
    list_filter = ["state"]
    inlines = [RolloutTransitionInline, RolloutVerdictInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
