"""A staged rollout of one canary deployment onto one route, its transitions and its verdict history."""

from django.db import models
from django.utils import timezone

from routing.models import Deployment, Route

from .choices import Verdict


class RolloutState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PREFLIGHT = "preflight", "Preflight"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    PROMOTED = "promoted", "Promoted"
    ROLLING_BACK = "rolling_back", "Rolling back"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ABORTED = "aborted", "Aborted"


# A rollout in one of these holds its route (one per route, its canary in no other).
ACTIVE_STATES = (RolloutState.PREFLIGHT, RolloutState.RUNNING, RolloutState.PAUSED,
                 RolloutState.AWAITING_APPROVAL, RolloutState.ROLLING_BACK)
# Manual weight changes are refused in these; a paused rollout lets a human take the wheel.
LOCKING_STATES = tuple(s for s in ACTIVE_STATES if s != RolloutState.PAUSED)
FINISHED_STATES = (RolloutState.PROMOTED, RolloutState.ROLLED_BACK, RolloutState.ABORTED)

DEFAULT_PREFLIGHT_PROBES = 3
DEFAULT_STEP_TIMEOUT_S = 1800


class Rollout(models.Model):
    """One canary onto one route. plan: [{weight, min_dwell_s, min_requests} | {pause: true}];
    guards: [{metric, allowed, limit}] (analysis.Guard's fields); baseline: the split captured at start."""

    # History outlives its route: a deleted route is archived (routing.deletion), never removed under its rollouts.
    route = models.ForeignKey(Route, on_delete=models.PROTECT, related_name="rollouts")
    canary = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="rollouts")
    plan = models.JSONField(default=list)
    guards = models.JSONField(default=list)
    alpha = models.FloatField(default=0.01)
    min_canary_requests = models.PositiveIntegerField(default=100)
    step_timeout_s = models.PositiveIntegerField(default=DEFAULT_STEP_TIMEOUT_S)
    preflight_probes = models.PositiveSmallIntegerField(default=DEFAULT_PREFLIGHT_PROBES)
    state = models.CharField(max_length=20, choices=RolloutState.choices, default=RolloutState.DRAFT, db_index=True)
    baseline = models.JSONField(default=dict, blank=True, help_text="{deployment name: weight} when it started")
    step = models.PositiveSmallIntegerField(default=0)
    step_started_at = models.DateTimeField(null=True, blank=True)
    preflight_started_at = models.DateTimeField(null=True, blank=True)
    thresholds = models.JSONField(default=dict, blank=True, help_text=(
        "Baseline p95s that versions before December 2026 froze for a step; no longer written (thresholds are "
        "re-derived at every look from the baseline's look-back), kept as history"))
    carried = models.JSONField(default=dict, blank=True, help_text="{metric: [log_fail, log_pass]} of earlier steps")
    ticks = models.PositiveIntegerField(default=0, help_text="Claimed ticks; a tick advances only its own number")
    lease_until = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["route"], condition=models.Q(state__in=ACTIVE_STATES),
                                    name="one_active_rollout_per_route"),
            models.UniqueConstraint(fields=["canary"], condition=models.Q(state__in=ACTIVE_STATES),
                                    name="canary_in_one_active_rollout"),
        ]

    def __str__(self):
        return f"rollout {self.pk} of {self.canary.name} onto {self.route.name}"

    @property
    def actor(self):
        """The name this rollout's own weight changes are recorded under."""
        return f"rollout:{self.pk}"

    @property
    def current(self):
        """Return the current plan step (a dict), or None past the end."""
        return self.plan[self.step] if self.step < len(self.plan) else None

    @property
    def final_weight(self):
        return max(s["weight"] for s in self.plan if "weight" in s)

    def is_active(self):
        return self.state in ACTIVE_STATES


class RolloutTransition(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20, choices=RolloutState.choices)
    to_state = models.CharField(max_length=20, choices=RolloutState.choices)
    step = models.PositiveSmallIntegerField(default=0)
    actor = models.CharField(max_length=150)
    reason = models.TextField()
    evidence = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.rollout_id}: {self.from_state} → {self.to_state} by {self.actor}"


class RolloutVerdictQuerySet(models.QuerySet):
    def prune(self, keep):
        """Delete all but each rollout's `keep` newest verdicts and the last verdict of each of its steps
        (transitions keep their own evidence); return how many rows were deleted."""
        deleted = 0
        crowded = self.values("rollout_id").annotate(n=models.Count("id")).filter(n__gt=keep)
        for rollout_id in crowded.values_list("rollout_id", flat=True):
            rows = self.filter(rollout_id=rollout_id)
            newest = rows.order_by("-id").values_list("id", flat=True)[:keep]
            last_of_steps = rows.values("step").annotate(last=models.Max("id")).values_list("last", flat=True)
            deleted += rows.exclude(id__in=[*newest, *last_of_steps]).delete()[0]
        return deleted


class RolloutVerdict(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="verdicts")
    step = models.PositiveSmallIntegerField()
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    sentence = models.TextField()
    evidence = models.JSONField(default=dict)
    canary_requests = models.PositiveIntegerField(default=0)
    baseline_requests = models.PositiveIntegerField(default=0)
    at = models.DateTimeField(default=timezone.now)

    objects = RolloutVerdictQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.rollout_id} step {self.step}: {self.verdict}"
