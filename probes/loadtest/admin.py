from django.contrib import admin

from probes.loadtest.models import LoadTestRun


@admin.register(LoadTestRun)
class LoadTestRunAdmin(admin.ModelAdmin):
    """Runs are read here; they are started and stopped from the page, the API or the command."""

    list_display = ("id", "target_label", "status", "passed", "created_by", "created_at", "finished_at")
    list_filter = ("status", "passed")
    readonly_fields = [f.name for f in LoadTestRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
