from django.db import models

from routing import crypto


class ChannelKind(models.TextChoices):
    APPRISE = "apprise", "Apprise URL"
    WEBHOOK = "webhook", "Signed JSON webhook"
    EMAIL = "email", "Email"


class Channel(models.Model):
    """Where notifications go. The URL (and the webhook's signing secret) hold secrets: encrypted, write-only."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    target_encrypted = models.TextField(editable=False, blank=True)
    target_hint = models.CharField(max_length=60, editable=False, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def set_target(self, plaintext):
        self.target_encrypted = crypto.encrypt(plaintext)
        self.target_hint = crypto.mask(plaintext)

    def reveal(self):
        """Return the plaintext target; only for sending, never for display."""
        return crypto.decrypt(self.target_encrypted)
