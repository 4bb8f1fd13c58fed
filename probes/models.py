"""Measurements: per-minute rollups shared by probes and real gateway traffic."""

from django.db import models

from routing.models import ApiKey, Deployment


class Source(models.TextChoices):
    PROBE = "probe", "Probe"
    TRAFFIC = "traffic", "Gateway traffic"


class Rollup(models.Model):
    """Counts, errors by kind, latency sketches and tokens for one deployment
    (optionally one key), one source, one minute. Merged, never one row per request."""

    minute = models.DateTimeField(db_index=True, help_text="Start of the minute (UTC)")
    source = models.CharField(max_length=10, choices=Source.choices)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="rollups")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="rollups")
    count = models.PositiveIntegerField(default=0)
    ok = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=dict, help_text="{outcome kind: count} for non-ok outcomes")
    latency = models.JSONField(null=True, help_text="Sketch of total latency in ms")
    ttft = models.JSONField(null=True, help_text="Sketch of time to first token in ms")
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    tps_sum = models.FloatField(default=0.0, help_text="Sum of output tokens/s over streamed requests")
    tps_count = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "source", "deployment"], condition=models.Q(api_key__isnull=True),
                name="one_rollup_per_deployment_minute",
            ),
            models.UniqueConstraint(
                fields=["minute", "source", "deployment", "api_key"], condition=models.Q(api_key__isnull=False),
                name="one_rollup_per_key_minute",
            ),
        ]
        indexes = [models.Index(fields=["deployment", "source", "minute"])]
