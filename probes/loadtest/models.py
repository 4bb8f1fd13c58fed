"""A stored load test: its settings, its state while it runs, and what it measured."""

from django.conf import settings
from django.db import models

from probes.loadtest.runner import RunStatus
from routing.models import Deployment, GatewayKey, Route

ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class LoadTestRun(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    target_label = models.CharField(max_length=200, help_text="route:<name> or deployment:<name>, as it was")
    settings = models.JSONField(help_text="The validated settings the run was started with")
    estimated_max_cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    stop_requested = models.BooleanField(default=False)
    stop_reason = models.CharField(max_length=300, blank=True)
    passed = models.BooleanField(null=True, help_text="Every threshold held (empty until the run ends)")
    progress = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="Summary, phases, thresholds and samples")
    error = models.CharField(max_length=500, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    gateway_key = models.ForeignKey(GatewayKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                    editable=False, help_text="The key made for the run; disabled when it is over")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"load test #{self.pk} on {self.target_label}"

    @property
    def active(self):
        return self.status in ACTIVE

    def summary(self):
        return (self.result or {}).get("summary") or {}
