from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from dashboard.alerts import targets
from dashboard.alerts.matching import check_silence
from dashboard.alerts.message import Status
from routing import crypto


class ChannelKind(models.TextChoices):
    APPRISE = targets.Kind.APPRISE, "Apprise URL"
    WEBHOOK = targets.Kind.WEBHOOK, "Signed JSON webhook"
    EMAIL = targets.Kind.EMAIL, "Email"


class ChannelQuerySet(models.QuerySet):
    def with_last_delivery(self):
        """Fetch each channel's latest delivery attempt along (`channel.last_delivery`: a Delivery or None)."""
        latest = models.Prefetch("deliveries", queryset=Delivery.objects.order_by("-at", "-pk")[:1],
                                 to_attr="_latest_deliveries")
        return self.prefetch_related(latest)


class Channel(models.Model):
    """Where notifications go. The URL (and the webhook's signing secret) hold secrets: encrypted, write-only.

    The target is an Apprise URL, a webhook URL, or an email channel's recipients (comma-separated).
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    target_encrypted = models.TextField(editable=False, blank=True)
    target_hint = models.CharField(max_length=60, editable=False, blank=True)
    secret_encrypted = models.TextField(editable=False, blank=True)  # the webhook's HMAC signing secret
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def set_target(self, plaintext):
        """Store `plaintext` (already checked with targets.clean_target for this kind) encrypted, with its hint."""
        self.target_encrypted = crypto.encrypt(plaintext)
        self.target_hint = targets.hint(self.kind, plaintext)

    def reveal(self):
        """Return the plaintext target; only for sending, never for display."""
        return crypto.decrypt(self.target_encrypted)

    def set_secret(self, plaintext):
        self.secret_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    def reveal_secret(self):
        """Return the webhook's signing secret ("" when none); only for signing."""
        return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else ""

    @property
    def last_delivery(self):
        """The latest delivery attempt (prefetched by `Channel.objects.with_last_delivery()`), or None."""
        latest = getattr(self, "_latest_deliveries", None)
        if latest is None:
            latest = self.deliveries.order_by("-at", "-pk")[:1]
        return next(iter(latest), None)

    @property
    def has_secret(self):
        return bool(self.secret_encrypted)

    def secret_parts(self):
        """Everything secret about this channel, for routing.outcomes.redact (longest first)."""
        parts = targets.secret_parts(self.kind, self.reveal()) if self.target_encrypted else []
        secret = self.reveal_secret()
        return sorted({*parts, secret} - {""}, key=len, reverse=True)


def rotate_channel_secrets():
    """Re-encrypt every channel's target and signing secret with the newest key (manage.py rotate_secrets).

    Returns (channels re-encrypted, names of channels no configured key opens; those are left as they were).
    """
    rotated, unreadable = 0, []
    for channel in Channel.objects.select_for_update().order_by("pk"):
        try:
            tokens = {field: crypto.rotate(getattr(channel, field)) if getattr(channel, field) else ""
                      for field in ("target_encrypted", "secret_encrypted")}
        except crypto.SecretUnreadable:
            unreadable.append(channel.name)
            continue
        Channel.objects.filter(pk=channel.pk).update(**tokens)
        rotated += 1
    return rotated, unreadable


class DeliveryOutcome(models.TextChoices):
    OK = "ok", "Delivered"
    FAILED = "failed", "Failed"


class DeliveryQuerySet(models.QuerySet):
    def prune(self, now=None):
        """Delete attempts older than ALERT_DELIVERY_RETENTION_DAYS; return how many."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.ALERT_DELIVERY_RETENTION_DAYS)
        return self.filter(at__lt=cutoff).delete()[0]


class Delivery(models.Model):
    """One attempt to deliver one notification to one channel (every attempt of every retry is a row).

    `notification` is the same for every attempt of one notification to one channel (the webhook sends it
    as X-Weathervane-Delivery, so a receiver can drop a retry it already has). `error` is redacted.
    """

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    notification = models.CharField(max_length=32, db_index=True)
    group_key = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=Status.choices)
    test = models.BooleanField(default=False)
    attempt = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=10, choices=DeliveryOutcome.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # set when another attempt is scheduled
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["channel", "-at"], name="alerts_delivery_channel_at")]

    def __str__(self):
        return f"{self.channel} #{self.attempt} {self.outcome}"


# --- the alert engine's configuration and state (see dashboard/alerts/engine.py) ----------------------------


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"


SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


class ConditionKind(models.TextChoices):
    DEPLOYMENT_HEALTH = "deployment_health", "Deployment down or degraded (probes)"
    PROVIDER_DOWN = "provider_down", "Provider down (every probed deployment down)"
    CIRCUIT_OPEN = "circuit_open", "Circuit open"
    KEY_STATE = "key_state", "Key invalid or rate-limited"
    ROLLOUT = "rollout", "Rollout event"
    PROBE_BUDGET = "probe_budget", "Probe budget exhausted"
    NO_DATA = "no_data", "Probes stopped reporting"
    TTFT_P95 = "ttft_p95", "p95 time to first token above a threshold"
    ERROR_RATE = "error_rate", "Error rate above a threshold"
    SPEND_TODAY = "spend_today", "Spend today above a limit"


class AlertRule(models.Model):
    """A condition watched every tick; each label set it holds for becomes one Alert.

    labels: the reserved names provider, deployment, route and key narrow the rule to those
    subjects; any other label is copied onto its alerts (e.g. team="ml") for routing.
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=30, choices=ConditionKind.choices)
    params = models.JSONField(default=dict, blank=True, help_text="The condition's parameters (per kind)")
    for_s = models.PositiveIntegerField(default=0, help_text="Seconds the condition must hold before it fires")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    labels = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class AlertState(models.TextChoices):
    PENDING = "pending", "Pending"
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


class Suppression(models.TextChoices):
    NONE = "", "Not suppressed"
    SILENCED = "silenced", "Silenced"
    INHIBITED = "inhibited", "Inhibited"
    MAINTENANCE = "maintenance", "In a maintenance window"
    # A resolved alert whose subject moved to another state that now fires (degraded → down): its end is told
    # only where that successor is not (dashboard/alerts/engine.py); `suppressed_by` says what it became.
    SUPERSEDED = "superseded", "Superseded by another state of its subject"


OPEN_STATES = (AlertState.PENDING, AlertState.FIRING)


class Alert(models.Model):
    """One rule's condition holding for one label set: pending → firing → resolved (a pending one that clears
    is deleted, as in Prometheus). `suppressed` says why a firing alert is not being sent (or, for a resolved
    one, that another state of its subject took over)."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    fingerprint = models.CharField(max_length=64, db_index=True)
    labels = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=AlertState.choices, default=AlertState.PENDING, db_index=True)
    summary = models.CharField(max_length=500)
    value = models.FloatField(null=True, blank=True)
    suppressed = models.CharField(max_length=20, choices=Suppression.choices, blank=True, default="")
    suppressed_by = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["fingerprint"], condition=models.Q(state__in=OPEN_STATES),
                                               name="one_open_alert_per_fingerprint")]

    def __str__(self):
        return f"{self.rule.name} {self.state}: {self.summary}"


class NotificationPolicy(models.Model):
    """Routes alerts to channels: the first enabled policy (by `order`) whose matchers and severities match takes
    an alert, and the next ones too while `continue_matching` is set. Alerts of a policy are grouped by
    `group_by` labels and notified with Alertmanager's group_wait, group_interval and repeat_interval."""

    name = models.CharField(max_length=100, unique=True)
    order = models.PositiveIntegerField(default=100)
    matchers = models.JSONField(default=list, blank=True, help_text='[{"name", "op" (= != =~ !~), "value"}]')
    severities = models.JSONField(default=list, blank=True, help_text="Empty: every severity")
    channels = models.ManyToManyField(Channel, blank=True, related_name="policies")
    group_by = models.JSONField(default=list, blank=True, help_text="Label names; empty: one group for the policy")
    group_wait_s = models.PositiveIntegerField(default=30)
    group_interval_s = models.PositiveIntegerField(default=300)
    repeat_interval_s = models.PositiveIntegerField(default=4 * 3600)
    continue_matching = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        verbose_name_plural = "notification policies"

    def __str__(self):
        return self.name


class AlertGroup(models.Model):
    """The notification state of one group of one policy: what was last sent, and when."""

    policy = models.ForeignKey(NotificationPolicy, on_delete=models.CASCADE, related_name="groups")
    key = models.CharField(max_length=500)
    labels = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    last_sent_at = models.DateTimeField(null=True, blank=True)
    notified = models.JSONField(default=dict, help_text="{fingerprint: status} as last sent")
    # The channel ids told of this group: a channel added to the policy while it fires is told at the next tick.
    # None: a group sent before this was recorded (its policy's channels then count as told).
    channels_told = models.JSONField(null=True, blank=True, default=None)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["policy", "key"], name="one_group_per_policy_key")]

    def __str__(self):
        return f"{self.policy.name}: {self.key}"


class InhibitRule(models.Model):
    """While an alert matching `source_matchers` fires, alerts matching `target_matchers` that share the values of
    the `equal` labels are not sent (Alertmanager's inhibit_rules)."""

    name = models.CharField(max_length=100, unique=True)
    source_matchers = models.JSONField(default=list)
    target_matchers = models.JSONField(default=list)
    equal = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Silence(models.Model):
    """Alerts matching every matcher are not sent from starts_at to ends_at; it expires by itself."""

    matchers = models.JSONField(default=list)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(db_index=True)
    created_by = models.CharField(max_length=150)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-ends_at", "-id"]

    def __str__(self):
        return f"silence {self.pk} until {self.ends_at:%Y-%m-%d %H:%M} UTC"

    def active(self, now):
        return self.starts_at <= now < self.ends_at

    @staticmethod
    def validate_silence(matchers, starts_at, ends_at, *, match_all=False):
        """Raise matching.SilenceInvalid for a silence the page and the API both refuse (see check_silence)."""
        known = {"alertname": list(AlertRule.objects.values_list("name", flat=True)),
                 "severity": Severity.values, "kind": ConditionKind.values}
        check_silence(matchers, starts_at, ends_at, match_all=match_all, known=known)


class WindowKind(models.TextChoices):
    ONE_OFF = "one_off", "One-off"
    WEEKLY = "weekly", "Weekly"


class MaintenanceWindow(models.Model):
    """While it is open, matching alerts are recorded but not sent. One-off: starts_at to ends_at. Weekly: on
    `weekdays` (0 = Monday) from start_time to end_time in `timezone` (an end before the start runs past midnight)."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=WindowKind.choices, default=WindowKind.ONE_OFF)
    matchers = models.JSONField(default=list, blank=True, help_text="Empty: every alert")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    weekdays = models.JSONField(default=list, blank=True)
    start_time = models.TimeField(null=True, blank=True)
    end_time = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def is_open(self, now):
        from .matching import window_open

        return self.enabled and window_open(self, now)


class EngineLease(models.Model):
    """One row: the lease of the evaluation tick, so overlapping ticks (threads, beats) never both send."""

    ticks = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)
