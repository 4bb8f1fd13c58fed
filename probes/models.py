"""Measurements: per-minute rollups shared by probes and real gateway traffic."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from routing.models import ApiKey, Deployment, Provider, Route
from routing.outcomes import Outcome
from routing.patterns import PatternInvalid, check_pattern


def validate_regex(value):
    """The expected answer's pattern: one RE2 can run (probes match it with routing.patterns)."""
    try:
        check_pattern(value)
    except PatternInvalid as exc:
        raise ValidationError(f"Not usable: {exc}") from None


class Source(models.TextChoices):
    PROBE = "probe", "Probe"
    TRAFFIC = "traffic", "Gateway traffic"
    SHADOW = "shadow", "Shadow requests"  # a rollout's shadow step: mirrored requests, the canary's and the primary's


class Rollup(models.Model):
    """Counts, errors by kind, latency sketches and tokens for one deployment
    (optionally one key and, for gateway traffic, one route), one source, one
    minute. Merged, never one row per request (see probes.rollups)."""

    minute = models.DateTimeField(db_index=True, help_text="Start of the minute (UTC)")
    source = models.CharField(max_length=10, choices=Source.choices)
    # History outlives what it describes: deleting a deployment or key with rollups is refused (a 409, see
    # routing.deletion); a deleted route is archived, so its rollups keep their route.
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="rollups")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="rollups")
    route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.PROTECT, related_name="rollups",
                              help_text="The route the gateway traffic came through (empty for probes)")
    count = models.PositiveIntegerField(default=0)
    ok = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=dict, help_text="{outcome kind: count} for non-ok outcomes")
    latency = models.JSONField(null=True, help_text="Sketch of total latency in ms")
    ttft = models.JSONField(null=True, help_text="Sketch of time to first token in ms")
    tpot = models.JSONField(null=True, blank=True, help_text="Sketch of time per output token in ms (streams)")
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    tps_sum = models.FloatField(default=0.0, help_text="Sum of output tokens/s over streamed requests")
    tps_count = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                "minute", "source", "deployment", Coalesce("api_key", 0), Coalesce("route", 0),
                name="one_rollup_per_minute_and_dimensions",
            ),
        ]
        indexes = [models.Index(fields=["deployment", "source", "minute"]),
                   models.Index(fields=["route", "source", "minute"])]


class HealthState(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    UP = "up", "Up"
    DEGRADED = "degraded", "Degraded"
    DOWN = "down", "Down"


class ReasoningEffort(models.TextChoices):
    UNSET = "", "Not sent"
    NONE = "none", "none"
    MINIMAL = "minimal", "minimal"
    LOW = "low", "low"


def _default_interval():
    return settings.PROBE_DEFAULT_INTERVAL_S


class ProbeTarget(models.Model):
    """What to probe (a deployment, rotating over its keys, or one key of it),
    how often, with which tiny request, and the health the probes concluded."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="probe_targets")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="probe_targets",
        help_text="Empty: rotate over the deployment's usable keys",
    )
    enabled = models.BooleanField(default=True)
    interval_s = models.PositiveIntegerField(default=_default_interval,
                                             validators=[MinValueValidator(5), MaxValueValidator(86400)])
    timeout_s = models.FloatField(default=10.0, validators=[MinValueValidator(0.5), MaxValueValidator(120)])
    prompt = models.CharField(max_length=500, default="Reply with the single word OK.")
    max_tokens = models.PositiveSmallIntegerField(default=8, validators=[MinValueValidator(1), MaxValueValidator(16)])
    reasoning_effort = models.CharField(max_length=10, choices=ReasoningEffort.choices, blank=True, default="",
                                        help_text="Sent only for models that take it (keeps reasoning off)")
    expected_pattern = models.CharField(max_length=300, blank=True, validators=[validate_regex],
                                        help_text="Regular expression the answer must contain")
    expected_json = models.JSONField(null=True, blank=True, help_text="JSON shape the answer must have")
    degraded_latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the site default")

    health = models.CharField(max_length=10, choices=HealthState.choices, default=HealthState.UNKNOWN, db_index=True)
    health_reason = models.CharField(max_length=300, blank=True)
    health_since = models.DateTimeField(default=timezone.now)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    recent = models.JSONField(default=list, blank=True,
                              help_text="The health window: last results as [ok 0/1, total ms, hard failure 0/1]")
    last_outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    dispatched_slot = models.BigIntegerField(null=True, blank=True, editable=False,
                                             help_text="Latest slot handed to Celery (epoch ms)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment__name", "api_key__label"]
        constraints = [
            models.UniqueConstraint(fields=["deployment"], condition=models.Q(api_key__isnull=True),
                                    name="one_rotating_probe_per_deployment"),
            models.UniqueConstraint(fields=["deployment", "api_key"], condition=models.Q(api_key__isnull=False),
                                    name="one_probe_per_deployment_key"),
        ]

    def __str__(self):
        return f"{self.deployment.name}/{self.api_key.label}" if self.api_key_id else self.deployment.name

    def clean(self):
        if self.api_key_id and self.deployment_id and self.api_key.provider_id != self.deployment.provider_id:
            raise ValidationError({"api_key": "The key must belong to the deployment's provider."})

    @classmethod
    def down_deployment_ids(cls):
        """Return the ids of deployments whose enabled probes all say "down" (the one definition).

        The gateway leaves them out of its routes' choices (unless every target is down).
        """
        healths = {}
        for deployment_id, health in cls.objects.filter(enabled=True).values_list("deployment_id", "health"):
            healths.setdefault(deployment_id, set()).add(health)
        return frozenset(d for d, states in healths.items() if states == {HealthState.DOWN})

    def latency_threshold_ms(self):
        return self.degraded_latency_ms or settings.PROBE_DEGRADED_LATENCY_MS

    def pick_key(self, slot):
        """Return the key for the probe of `slot`: the target's own, else the provider's
        usable keys in turn (slot by slot); None when the provider has no keys at all.

        Raises NoUsableKey when keys exist but none may be used now.
        """
        if self.api_key_id:
            return self.api_key
        keys = list(self.deployment.provider.keys.order_by("id"))
        if not keys:
            return None
        usable = [key for key in keys if key.usable()]
        if not usable:
            states = sorted({key.state if key.enabled else "disabled" for key in keys})
            raise NoUsableKey(f"no usable API key (keys are {', '.join(states)})")
        # Consecutive slots of a target are one interval apart, so this counts up by one.
        return usable[(slot // (self.interval_s * 1000)) % len(usable)]


class NoUsableKey(Exception):
    """Every key of the provider is invalid, disabled or rate-limited right now."""


class ProbeResult(models.Model):
    """One probe's measurement. Kept PROBE_RAW_RETENTION_DAYS; rollups keep the figures longer."""

    target = models.ForeignKey(ProbeTarget, on_delete=models.CASCADE, related_name="results")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="probe_results")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="probe_results")
    slot = models.BigIntegerField(help_text="When the probe was due (epoch ms); one result per target and slot")
    started_at = models.DateTimeField(db_index=True)
    lag_ms = models.FloatField(null=True, blank=True, help_text="Start minus due time")
    outcome = models.CharField(max_length=20, choices=Outcome.choices, db_index=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    ttfb_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    completed = models.BooleanField(default=False,
                                    help_text="the answer was whole (routing.streams: its finish_reason, or [DONE])")
    finish_reason = models.CharField(max_length=30, blank=True)
    model_reported = models.CharField(max_length=200, blank=True)
    model_swapped = models.BooleanField(default=False,
                                        help_text="The answer named another model than the one asked for")
    retry_after_s = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["target", "slot"], name="one_result_per_target_slot")]
        indexes = [models.Index(fields=["target", "started_at"])]

    def __str__(self):
        return f"{self.target} {self.started_at:%H:%M:%S} {self.outcome}"


class ProbeSlot(models.Model):
    """A claim on (target, slot): whoever holds an unexpired lease runs the probe;
    `done` once its result is saved, so a redelivered task does nothing."""

    target = models.ForeignKey(ProbeTarget, on_delete=models.CASCADE, related_name="slots")
    slot = models.BigIntegerField()
    done = models.BooleanField(default=False)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["target", "slot"], name="one_claim_per_target_slot")]


class ProbeBudget(models.Model):
    """A provider's daily allowance for probe traffic; spent → probes slow down."""

    provider = models.OneToOneField(Provider, on_delete=models.CASCADE, related_name="probe_budget")
    daily_tokens = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: no token limit")
    daily_cost = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True,
                                     help_text="Empty: no cost limit")
    slowdown = models.PositiveSmallIntegerField(default=10, validators=[MinValueValidator(2), MaxValueValidator(1000)],
                                                help_text="Interval multiplier once the day's budget is spent")

    def __str__(self):
        return f"probe budget of {self.provider.name}"

    def spent_by(self, usage):
        """Return True when `usage` (a ProbeUsage or None) has used up this budget."""
        if usage is None:
            return False
        over_tokens = self.daily_tokens is not None and usage.tokens >= self.daily_tokens
        over_cost = self.daily_cost is not None and usage.cost >= self.daily_cost
        return over_tokens or over_cost


class ProbeUsage(models.Model):
    """Probe traffic per provider per UTC day, kept apart from real traffic."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="probe_usage")
    day = models.DateField()
    probes = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["provider", "day"], name="one_usage_row_per_provider_day")]


class KeyRecheck(models.Model):
    """When an invalid or suspect key is next probed with (probes.rechecks), and who holds that re-check.

    One row per key while it is invalid (not disabled) or suspect; gone once it is active and trusted again.
    """

    api_key = models.OneToOneField(ApiKey, on_delete=models.CASCADE, related_name="recheck")
    due_at = models.DateTimeField(db_index=True)
    failures = models.PositiveIntegerField(default=0, help_text="Re-checks in a row that did not get the key through")
    lease_until = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["due_at"]

    def __str__(self):
        return f"re-check of {self.api_key} due {self.due_at:%H:%M:%S}"
