from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from dashboard.alerts import targets
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
