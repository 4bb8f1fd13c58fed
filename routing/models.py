"""The registry: providers, their keys, deployments, routes with canary weights,
gateway keys, and the append-only audit trail and operational event stream."""

import hashlib
import re
import secrets
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.utils import timezone
from knox.models import AbstractAuthToken

from routing import crypto
from routing.netguard import validate_upstream_url
from routing.outcomes import Outcome, storable

name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$",
    "Use letters, digits and . _ : / @ - (start with a letter or digit, at most 100 characters).",
)

# A provider key travels in an HTTP header: visible ASCII only (a stray emoji or space would break every call).
SECRET_CHARACTERS = r"[!-~]+"
secret_validator = RegexValidator(rf"^{SECRET_CHARACTERS}$", "An API key is visible ASCII characters, without spaces.")


def sendable_secret(secret):
    """Return True when `secret` can go in an HTTP header as it is (older versions stored keys unchecked)."""
    return bool(re.fullmatch(SECRET_CHARACTERS, secret))


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible"


class Provider(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    kind = models.CharField(max_length=20, choices=ProviderKind.choices, default=ProviderKind.OPENAI)
    base_url = models.CharField(
        max_length=500, validators=[validate_upstream_url], help_text="e.g. https://api.openai.com/v1"
    )
    connect_timeout = models.FloatField(default=5.0, validators=[MinValueValidator(0.1), MaxValueValidator(60)])
    read_timeout = models.FloatField(
        default=30.0, validators=[MinValueValidator(0.5), MaxValueValidator(600)],
        help_text="Seconds to wait for the first byte of an answer, and between chunks of a stream")
    max_concurrency = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Most requests in flight to this provider per gateway process; over it a request waits "
                  "briefly for a slot, then fails over. Empty = no limit")
    enabled = models.BooleanField(default=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class KeyState(models.TextChoices):
    ACTIVE = "active", "Active"
    RATE_LIMITED = "rate_limited", "Rate-limited"
    INVALID = "invalid", "Invalid"
    DISABLED = "disabled", "Disabled"


class ApiKey(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(max_length=100)
    secret_encrypted = models.TextField(editable=False)
    secret_hint = models.CharField(max_length=20, editable=False, blank=True)
    enabled = models.BooleanField(default=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute; empty = no limit")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute; empty = no limit")
    state = models.CharField(max_length=20, choices=KeyState.choices, default=KeyState.ACTIVE)
    state_reason = models.CharField(max_length=300, blank=True)
    state_since = models.DateTimeField(default=timezone.now)
    rate_limited_until = models.DateTimeField(null=True, blank=True)
    suspect_since = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="An upstream answered 401 once: a probe with the key re-checks it at once (a second 401 makes it "
                  "invalid, a success clears this)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__name", "label"]
        constraints = [models.UniqueConstraint(fields=["provider", "label"], name="unique_key_label_per_provider")]

    def __str__(self):
        return f"{self.provider.name}/{self.label}"

    def set_secret(self, plaintext):
        self.secret_encrypted = crypto.encrypt(plaintext)
        self.secret_hint = crypto.mask(plaintext)

    def reveal(self):
        """Return the plaintext secret; only for outbound calls, never for display."""
        return crypto.decrypt(self.secret_encrypted)

    @property
    def masked(self):
        return self.secret_hint

    def usable(self, now=None):
        """Return True if the key may be sent traffic now."""
        now = now or timezone.now()
        if not self.enabled or self.state in (KeyState.INVALID, KeyState.DISABLED):
            return False
        return not (self.state == KeyState.RATE_LIMITED and self.rate_limited_until and self.rate_limited_until > now)

    # --- state changes made by the system (probes, gateway): the one home of their rules ---

    @classmethod
    def change_state(cls, key_id, state, reason, actor, until=None):
        """Move the key to `state` (invalid, rate_limited or active) when its current row allows it.

        The row is re-read under a lock, so a key that staff disabled (or that
        another process already moved) is never overridden. Entering or
        leaving INVALID is audited (a lasting state); 429 cooling comes and
        goes and is not. Becoming INVALID or ACTIVE ends a suspicion (see
        `suspect`). Each change of state records an Event and pushes it live
        after commit. Returns that Event, or None when nothing changed (an
        extended cooling saves the new `until` without an Event).
        """
        from routing import audit

        with transaction.atomic():
            key = cls.objects.select_for_update().select_related("provider").filter(pk=key_id).first()
            if key is None or not key._may_become(state, until):
                return None
            before, snapshot = key.state, audit.snapshot(key)
            key._set_state(state, reason, until)
            if before == state:
                return None
            if KeyState.INVALID in (before, state):
                audit.record(action=AuditAction.KEY_STATE, obj=key, actor=actor, before=snapshot,
                             after=audit.snapshot(key), reason=key.state_reason)
            event = Event.objects.create(kind=KEY_EVENTS[state], api_key=key, message=key._state_message()[:500],
                                         data={"from": before, "to": state, "reason": key.state_reason,
                                               "until": until.isoformat() if until else None})
            transaction.on_commit(lambda: _publish_event(event))
        return event

    @classmethod
    def suspect(cls, key_id, reason, actor):
        """Note one 401 for a usable key: it stays in use, and the probes re-check it at once.

        Returns the Event, or None when the key is already suspect, invalid or disabled.
        """
        now = timezone.now()
        usable = cls.objects.filter(pk=key_id, enabled=True, suspect_since__isnull=True,
                                    state__in=(KeyState.ACTIVE, KeyState.RATE_LIMITED))
        # updated_at moves too: the gateway's snapshot fingerprint sees the change.
        if not usable.update(suspect_since=now, updated_at=now):
            return None
        return cls._key_event(key_id, EventKind.KEY_SUSPECT, f"is suspect: {reason}; a probe re-checks it", actor)

    @classmethod
    def clear_suspicion(cls, key_id, reason, actor):
        """End a key's suspicion (a request or probe with it succeeded); returns the Event, or None if it was not."""
        now = timezone.now()
        if not cls.objects.filter(pk=key_id, suspect_since__isnull=False).update(suspect_since=None, updated_at=now):
            return None
        return cls._key_event(key_id, EventKind.KEY_ACTIVE, f"is no longer suspect: {reason}", actor)

    @classmethod
    def _key_event(cls, key_id, kind, text, actor):
        from routing.signals import config_changed

        key = cls.objects.select_related("provider").get(pk=key_id)
        event = Event.objects.create(kind=kind, api_key=key, message=f"Key {key} {text}"[:500],
                                     data={"reason": storable(text, 300), "actor": actor})
        transaction.on_commit(lambda: _publish_event(event))
        config_changed()
        return event

    def _may_become(self, state, until):
        if not self.enabled or self.state == KeyState.DISABLED:
            return False
        if state == KeyState.INVALID:
            return self.state != KeyState.INVALID
        if state == KeyState.RATE_LIMITED:
            cooling = self.state == KeyState.RATE_LIMITED and self.rate_limited_until is not None
            still_cooling = cooling and self.rate_limited_until >= until - timedelta(seconds=1)
            return self.state != KeyState.INVALID and not still_cooling
        return self.state in (KeyState.INVALID, KeyState.RATE_LIMITED)

    def _set_state(self, state, reason, until):
        self.state, self.state_reason, self.state_since = state, storable(reason, 300), timezone.now()
        self.rate_limited_until = until if state == KeyState.RATE_LIMITED else None
        if state in (KeyState.INVALID, KeyState.ACTIVE):  # confirmed either way
            self.suspect_since = None
        self.save(update_fields=["state", "state_reason", "state_since", "rate_limited_until", "suspect_since",
                                 "updated_at"])

    def _state_message(self):
        text = f"Key {self} is {KeyState(self.state).label.lower()}"
        if self.state == KeyState.RATE_LIMITED and self.rate_limited_until:
            text += f" until {self.rate_limited_until:%H:%M:%S} UTC"
        return f"{text}: {self.state_reason}" if self.state_reason else text


class WindowSource(models.TextChoices):
    """Where a deployment's context window comes from, strongest first (Deployment.window)."""

    TYPED = "typed", "typed"
    LEARNED = "learned_from_error", "learned from the provider's error"
    PROVIDER = "provider_metadata", "provider metadata"
    CATALOGUE = "catalogue", "catalogue"
    UNKNOWN = "unknown", "unknown"


# The columns behind each source, in the order they win: a typed value always does.
WINDOW_COLUMNS = (("context_window", WindowSource.TYPED), ("learned_window", WindowSource.LEARNED),
                  ("provider_window", WindowSource.PROVIDER), ("catalogue_window", WindowSource.CATALOGUE))
# What a change of model or provider makes stale: the windows found for the old one.
DISCOVERED_WINDOW_FIELDS = ("learned_window", "learned_window_at", "learned_window_error", "provider_window",
                            "catalogue_window", "catalogue_entry", "windows_checked_at", "windows_note")


class PrefillSupport(models.TextChoices):
    """Whether a deployment continues an assistant prefill, as the prefill probe (probes.prefill) last saw it."""

    VERIFIED = "verified", "Verified"  # its answer continued the given text
    REFUSED = "refused", "Refused"  # a 4xx, or an answer that started afresh: a continuation would repeat text
    UNKNOWN = "unknown", "Unknown"  # never checked, inconclusive (a timeout, a 5xx), or checked for another model


class Deployment(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator],
                            help_text="Identifier used in route weights")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(max_length=200, help_text="Model name sent to the provider")
    display_name = models.CharField(max_length=200, blank=True)
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"),
                                               validators=[MinValueValidator(0)])
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"),
                                                validators=[MinValueValidator(0)])
    context_window = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Tokens of prompt + completion, typed; it always wins. Empty: discovered (the provider's error, "
                  "its GET /models, the model catalogue) or unknown.")
    # Discovered windows (probes.windows, and the gateway for a provider's error); never typed.
    learned_window = models.PositiveIntegerField(null=True, blank=True, editable=False,
                                                 help_text="The window a provider's context-length error stated")
    learned_window_at = models.DateTimeField(null=True, blank=True, editable=False)
    learned_window_error = models.CharField(max_length=300, blank=True, editable=False,
                                            help_text="The provider's words it was learned from")
    provider_window = models.PositiveIntegerField(null=True, blank=True, editable=False,
                                                  help_text="The window the provider's GET /models reports")
    catalogue_window = models.PositiveIntegerField(null=True, blank=True, editable=False,
                                                   help_text="The window the model catalogue knows for the model")
    catalogue_entry = models.CharField(max_length=200, blank=True, editable=False,
                                       help_text="The catalogue and the entry it matched")
    windows_checked_at = models.DateTimeField(null=True, blank=True, editable=False,
                                              help_text="When probes.windows last asked the provider and catalogue")
    windows_note = models.CharField(max_length=300, blank=True, editable=False,
                                    help_text="What that check found, or why it could not ask")
    first_token_timeout = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.5), MaxValueValidator(600)],
        help_text="Seconds from sending a streamed request to its first content event; empty: learned from its "
                  "measured time to first token (WEATHERVANE_GATEWAY_FIRST_TOKEN_TIMEOUT until enough is known). "
                  "Slower fails over before the client sees anything.")
    enabled = models.BooleanField(default=True)
    # Written by the prefill probe only (probes.prefill), never by a form: what it found, for which model, when.
    prefill_support = models.CharField(
        max_length=10, choices=PrefillSupport.choices, default=PrefillSupport.UNKNOWN, editable=False,
        help_text="Whether it continues a final assistant message (checked by a probe)")
    prefill_model = models.CharField(max_length=200, blank=True, editable=False,
                                     help_text="The upstream model the prefill check was made with")
    prefill_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    prefill_detail = models.CharField(max_length=300, blank=True, editable=False)
    prefill_due_at = models.DateTimeField(null=True, blank=True, editable=False,
                                          help_text="When the prefill check runs next (also its claim while it runs)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        if "provider_id" in field_names and "upstream_model" in field_names:  # not when deferred (.only())
            instance._loaded_model = instance.provider_id, instance.upstream_model
        return instance

    def save(self, *args, **kwargs):
        """Save; a new model or provider forgets the windows discovered for the old one (checked again soon)."""
        loaded = getattr(self, "_loaded_model", None)
        if loaded is not None and loaded != (self.provider_id, self.upstream_model):
            for name in DISCOVERED_WINDOW_FIELDS:
                setattr(self, name, "" if name in ("learned_window_error", "catalogue_entry", "windows_note")
                        else None)
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], *DISCOVERED_WINDOW_FIELDS}
        super().save(*args, **kwargs)
        self._loaded_model = self.provider_id, self.upstream_model

    def window(self):
        """Return (tokens, WindowSource) of the context window the gateway holds requests to: typed, else learned
        from the provider's error, else the provider's metadata, else the catalogue; (None, UNKNOWN) when none
        says."""
        for column, source in WINDOW_COLUMNS:
            tokens = getattr(self, column)
            if tokens:
                return tokens, source
        return None, WindowSource.UNKNOWN

    def windows(self):
        """Return {source: tokens or None} of every source, typed included (what the page and the API show)."""
        return {source.value: getattr(self, column) for column, source in WINDOW_COLUMNS}

    @classmethod
    def learn_window(cls, deployment_id, tokens, error, actor):
        """Save the window a provider's context-length error stated (`error`: its words, already redacted).

        Returns the timeline Event, or None when the deployment already had that learned window (or is gone).
        """
        now = timezone.now()
        # updated_at moves too: the gateway's snapshot fingerprint sees the change.
        changed = cls.objects.filter(pk=deployment_id).exclude(learned_window=tokens).update(
            learned_window=tokens, learned_window_at=now, learned_window_error=storable(error, 300), updated_at=now)
        if not changed:
            return None
        from routing.signals import config_changed

        deployment = cls.objects.get(pk=deployment_id)
        typed = f" (its typed {deployment.context_window} still applies)" if deployment.context_window else ""
        event = Event.objects.create(
            kind=EventKind.CONTEXT_WINDOW, deployment=deployment, data={"tokens": tokens, "actor": actor,
                                                                        "error": storable(error, 300)},
            message=f"Context window of {deployment} learned from the provider's error: {tokens} tokens{typed}"[:500])
        transaction.on_commit(lambda: _publish_event(event))
        config_changed()
        return event

    @property
    def prefill(self):
        """Return the PrefillSupport in effect: a verdict about another upstream model says nothing (unknown)."""
        if self.prefill_model != self.upstream_model:
            return PrefillSupport.UNKNOWN
        return PrefillSupport(self.prefill_support)

    @property
    def prefill_checked(self):
        """Return when the prefill verdict in effect was reached (None: never, or only for another model)."""
        return self.prefill_checked_at if self.prefill_model == self.upstream_model else None

    def price_for(self, prompt_tokens, completion_tokens):
        """Return the cost in currency units of one call with this usage."""
        cost = self.input_price_per_mtok * prompt_tokens + self.output_price_per_mtok * completion_tokens
        return cost / Decimal(1_000_000)


class RouteManager(models.Manager):
    """The routes that exist for users: lists, pickers, lookups by name and the gateway's snapshot.

    A deleted route is archived, not removed (its rollups, rollouts and events describe it); an
    archived route is reached only through the history that points at it, or `Route.all_objects`.
    """

    def get_queryset(self):
        return super().get_queryset().filter(archived_at__isnull=True)


class ContinueStreams(models.TextChoices):
    """Which targets may finish a stream that broke after content reached the client (routing.gateway.proxy)."""

    AUTO = "auto", "Auto: on targets whose prefill support a probe verified"
    ON = "on", "On: on every target not seen refusing a prefill"
    OFF = "off", "Off: a broken stream ends with an error event"

    def allows(self, support):
        """Return True when a deployment with PrefillSupport `support` may be sent a continuation."""
        if self == ContinueStreams.AUTO:
            return support == PrefillSupport.VERIFIED
        return self == ContinueStreams.ON and support != PrefillSupport.REFUSED


class Route(models.Model):
    name = models.CharField(max_length=100, validators=[name_validator],
                            help_text="The model name clients ask the gateway for")
    description = models.TextField(blank=True)
    continue_streams = models.CharField(
        max_length=4, choices=ContinueStreams.choices, default=ContinueStreams.AUTO,
        verbose_name="continue broken streams",
        help_text="When a stream breaks after content reached the client, continue it on another target by sending "
                  "the text so far as an assistant prefill. Auto: only on targets whose probe verified they continue "
                  "it; on: also on targets not checked yet (never on one seen refusing); off: never.")
    version = models.PositiveIntegerField(default=1, editable=False,
                                          help_text="Bumped on every change; used for conflict detection")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    archived_at = models.DateTimeField(null=True, blank=True, editable=False,
                                       help_text="When it was deleted; its history stays, its name is free again")

    objects = RouteManager()
    all_objects = models.Manager()

    class Meta:
        ordering = ["name"]
        # Relations (a rollout's route, an event's) still reach archived routes.
        base_manager_name = "all_objects"
        constraints = [
            models.UniqueConstraint(fields=["name"], condition=models.Q(archived_at__isnull=True),
                                    name="unique_live_route_name",
                                    violation_error_message="A route with this name already exists."),
        ]

    def __str__(self):
        return f"{self.name} (deleted)" if self.archived_at else self.name

    def weights(self):
        """Return {deployment name: weight} for every target of this route."""
        targets = self.targets.select_related("deployment").order_by("deployment__name")
        return {t.deployment.name: t.weight for t in targets}

    def active_targets(self):
        """Return the targets that can receive traffic: weight > 0 and an enabled deployment and provider."""
        return self.targets.filter(weight__gt=0, deployment__enabled=True, deployment__provider__enabled=True)

    def fallback_chain(self):
        """Return the deployment names of this route's fallback chain, in the order they are tried."""
        prefetched = "fallbacks" in getattr(self, "_prefetched_objects_cache", {})
        links = self.fallbacks.all() if prefetched else self.fallbacks.select_related("deployment")
        return [f.deployment.name for f in links]


class RouteTarget(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="targets")
    weight = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])

    class Meta:
        ordering = ["route__name", "deployment__name"]
        constraints = [
            models.UniqueConstraint(fields=["route", "deployment"], name="unique_deployment_per_route"),
            models.CheckConstraint(condition=models.Q(weight__lte=100), name="weight_at_most_100"),
        ]

    def __str__(self):
        return f"{self.route.name} → {self.deployment.name} ({self.weight}%)"


class RouteFallback(models.Model):
    """One link of a route's ordered fallback chain: tried only after every weighted target failed or has an
    open circuit. Never a target with weight > 0 (routing.weights keeps the two apart)."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="fallbacks")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="fallback_for")
    position = models.PositiveSmallIntegerField(default=1, help_text="1 is tried first")

    class Meta:
        ordering = ["route_id", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["route", "deployment"], name="unique_fallback_per_route")]

    def __str__(self):
        return f"{self.route.name} fallback #{self.position}: {self.deployment.name}"


GATEWAY_KEY_PREFIX = "wv-"


def hash_gateway_key(plaintext):
    """Return the stored form of a gateway key (SHA-256; keys are 256-bit random, so no salt is needed)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


class GatewayKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    all_routes = models.BooleanField(default=True, help_text="May call every route; otherwise only those listed")
    routes = models.ManyToManyField(Route, blank=True, related_name="gateway_keys")
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute; empty = no limit")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def generate(self):
        """Give this key a fresh secret and return the plaintext, to be shown exactly once."""
        body = secrets.token_urlsafe(32)
        plaintext = f"{GATEWAY_KEY_PREFIX}{body}"
        self.prefix = plaintext[:11]
        self.key_hash = hash_gateway_key(plaintext)
        return plaintext


class EncryptionKeyCheck(models.Model):
    """One row: the fingerprint of the key that encrypts the stored secrets, and a token only it opens.

    Recorded on first use and replaced by `rotate_secrets`; see routing/keycheck.py.
    """

    fingerprint = models.CharField(max_length=16)
    token = models.TextField()
    recorded_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"encryption key {self.fingerprint}"


class AuditAction(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Updated"
    DELETE = "delete", "Deleted"
    WEIGHTS = "weights", "Weights changed"
    KEY_STATE = "key_state", "Key state changed"
    ROTATE = "rotate", "Secrets re-encrypted"
    ROLLOUT = "rollout", "Rollout gate"
    TEST = "test", "Test notification sent"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Audit events are append-only.")

    def delete(self):
        raise TypeError("Audit events are append-only.")


class AuditEvent(models.Model):
    """Append-only record of a configuration change. Before/after never hold secrets."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, help_text="User name, or system:<part> / command:<name>")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    action = models.CharField(max_length=20, choices=AuditAction.choices)
    object_type = models.CharField(max_length=50, db_index=True)
    object_id = models.CharField(max_length=100)
    object_repr = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type} {self.object_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit events are append-only.")


class EventKind(models.TextChoices):
    WEIGHTS = "weights", "Weights changed"
    HEALTH = "health", "Health changed"
    CIRCUIT_OPEN = "circuit_open", "Circuit opened"
    CIRCUIT_HALF_OPEN = "circuit_half_open", "Circuit half-open"
    CIRCUIT_CLOSED = "circuit_closed", "Circuit closed"
    KEY_INVALID = "key_invalid", "Key marked invalid"
    KEY_RATE_LIMITED = "key_rate_limited", "Key rate-limited"
    KEY_ACTIVE = "key_active", "Key active again"
    KEY_SUSPECT = "key_suspect", "Key suspect"
    PROVIDER_URL = "provider_url", "Provider endpoint changed"
    ROLLOUT = "rollout", "Rollout changed"
    CONTEXT_WINDOW = "context_window", "Context window learned"


class Event(models.Model):
    """One operational happening for the timeline: what changed, on what, and why."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=30, choices=EventKind.choices, db_index=True)
    route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    message = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.created_at:%H:%M:%S} {self.kind}: {self.message}"

    def payload(self):
        """Return this event as the timeline shows it, live and on reload (the one builder)."""
        return {
            "id": self.pk, "kind": self.kind, "kind_label": self.get_kind_display(), "message": self.message,
            "at": self.created_at.isoformat(), "route": self.route.name if self.route_id else None,
            "deployment": self.deployment.name if self.deployment_id else None,
            "api_key": str(self.api_key) if self.api_key_id else None,
        }


KEY_EVENTS = {KeyState.INVALID: EventKind.KEY_INVALID, KeyState.RATE_LIMITED: EventKind.KEY_RATE_LIMITED,
              KeyState.ACTIVE: EventKind.KEY_ACTIVE}


def _publish_event(event):
    from dashboard import live

    live.timeline_event(event)


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open"


class DeploymentCircuit(models.Model):
    """The gateway's circuit-breaker state for one deployment, as last reported."""

    deployment = models.OneToOneField(Deployment, on_delete=models.CASCADE, related_name="circuit")
    state = models.CharField(max_length=20, choices=CircuitState.choices, default=CircuitState.CLOSED)
    reason = models.CharField(max_length=300, blank=True)
    since = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    @classmethod
    def probe_succeeded(cls, deployment_id):
        """End an open circuit's cooldown because a probe of its deployment just succeeded.

        The circuit is saved half-open (every gateway process lets its next
        request through as the trial); returns True when a circuit was open.
        """
        reason = "a probe succeeded; the next request is the trial"
        changed = cls.objects.filter(deployment_id=deployment_id, state=CircuitState.OPEN).update(
            state=CircuitState.HALF_OPEN, reason=reason, since=timezone.now(), updated_at=timezone.now())
        if not changed:
            return False
        event = Event.objects.create(kind=EventKind.CIRCUIT_HALF_OPEN, deployment_id=deployment_id,
                                     message=f"Circuit half-open: {reason}", data={"reason": reason})
        transaction.on_commit(lambda: _publish_event(event))
        from routing.signals import config_changed

        config_changed()
        return True


class RequestLog(models.Model):
    """A sampled gateway request: every failure and a share of successes.

    Written in batches by the gateway's flusher, never on the request path.
    Holds no message bodies unless WEATHERVANE_GATEWAY_LOG_BODIES is on, and never a secret.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=64, db_index=True)
    route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    route_name = models.CharField(max_length=100, blank=True)
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    gateway_key = models.ForeignKey(GatewayKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=20, choices=Outcome.choices, db_index=True)
    status = models.PositiveSmallIntegerField()
    stream = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    overhead_ms = models.FloatField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    error = models.CharField(max_length=500, blank=True)
    fallback = models.CharField(max_length=100, blank=True,
                                help_text="The fallback deployment that served, when one did")
    tried = models.JSONField(default=list, blank=True,
                             help_text="[{deployment, key, outcome, status, ms}] per upstream attempt")
    request_body = models.JSONField(null=True, blank=True)
    response_body = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Bodies carry users' prompts and answers: reading the log does not mean reading them.
        permissions = [("view_request_bodies", "Can view logged request and response bodies")]

    def __str__(self):
        return f"{self.created_at:%H:%M:%S} {self.request_id} {self.outcome}"


class ApiToken(AbstractAuthToken):
    """A named REST API token of one user (django-rest-knox): only a SHA-512 digest
    and the first characters (`token_key`) are stored; it stops working at `expiry`."""

    name = models.CharField(max_length=100, help_text="What the token is for, e.g. ci-deploy")

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.name} ({self.token_key}…)"

    def expired(self, now=None):
        return self.expiry is not None and self.expiry <= (now or timezone.now())
