"""Base classes every REST API view shares (routing, probes, load tests, rollouts): request-size
limits, the audit trail of every change, read-only viewsets with numeric ids."""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from rest_framework import serializers, viewsets

from routing import deletion, weights
from routing.api import errors
from routing.audit import actor_name, record, snapshot
from routing.models import AuditAction

REASON_HEADER = "X-Audit-Reason"
MAX_REASON_LENGTH = weights.MAX_REASON_LENGTH


@dataclass(frozen=True)
class AuditContext:
    actor: str
    user: object
    reason: str


class BodySizeLimitMixin:
    """Answer 413 for bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (DRF's parsers read
    the stream directly, so Django's own limit would not apply to JSON)."""

    def initial(self, request, *args, **kwargs):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            raise errors.PayloadTooLarge(limit)
        super().initial(request, *args, **kwargs)


class AuditedModelViewSet(BodySizeLimitMixin, viewsets.ModelViewSet):
    """CRUD where each change is saved together with one AuditEvent."""

    def audit_context(self):
        reason = self.request.headers.get(REASON_HEADER, "").strip()
        if len(reason) > MAX_REASON_LENGTH:
            message = f"Keep the reason under {MAX_REASON_LENGTH} characters."
            raise serializers.ValidationError({REASON_HEADER: [message]})
        return AuditContext(actor_name(self.request.user), self.request.user, reason)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.request is not None and self.request.method not in ("GET", "HEAD", "OPTIONS"):
            context["audit"] = self.audit_context()
        return context

    def _record(self, action, obj, before, after, reason=None):
        audit = self.audit_context()
        reason = reason or audit.reason
        record(action=action, obj=obj, actor=audit.actor, user=audit.user, before=before, after=after, reason=reason)

    def perform_create(self, serializer):
        save_audited(serializer, self.audit_context())

    def perform_update(self, serializer):
        save_audited(serializer, self.audit_context())

    def perform_destroy(self, instance):
        audit = self.audit_context()
        deletion.delete(instance, actor=audit.actor, user=audit.user, reason=audit.reason)


def save_audited(serializer, audit):
    """Save a validated serializer (a create, or an update of its instance) with its AuditEvent in one
    transaction; return the object. The API's viewsets and the pages' forms both save here."""
    with transaction.atomic():
        before = snapshot(serializer.instance) if serializer.instance is not None else None
        obj = serializer.save()
        action = AuditAction.CREATE if before is None else AuditAction.UPDATE
        record(action=action, obj=obj, actor=audit.actor, user=audit.user, before=before, after=snapshot(obj),
               reason=audit.reason)
    return obj


class ReadOnlyViewSet(BodySizeLimitMixin, viewsets.ReadOnlyModelViewSet):
    lookup_value_regex = r"\d+"
