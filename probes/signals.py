"""Every enabled deployment gets a probe target of its own, created as it is saved."""

import logging

from django.db import IntegrityError, transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from probes.models import ProbeTarget
from routing import audit
from routing.models import AuditAction, Deployment

log = logging.getLogger(__name__)
ACTOR = "system:probes"


def ensure_target(deployment, api_key=None, actor=ACTOR, user=None):
    """Return the probe target of `deployment` (of one of its keys when `api_key`), creating and auditing it if
    missing."""
    existing = ProbeTarget.objects.filter(deployment=deployment, api_key=api_key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            target = ProbeTarget.objects.create(deployment=deployment, api_key=api_key)
            reason = "probe target for a deployment" if api_key is None else "per-key probe target"
            audit.record(action=AuditAction.CREATE, obj=target, actor=actor, user=user,
                         after=audit.snapshot(target), reason=reason)
    except IntegrityError:  # created meanwhile by another process
        return ProbeTarget.objects.get(deployment=deployment, api_key=api_key)
    return target


def ensure_all_targets():
    """Create the missing rotating targets of enabled deployments (those made before probes existed).

    Returns how many."""
    rotating = ProbeTarget.objects.filter(api_key__isnull=True).values("deployment_id")
    missing = Deployment.objects.filter(enabled=True).exclude(pk__in=rotating)
    created = 0
    for deployment in missing:
        ensure_target(deployment)
        created += 1
    return created


@receiver(post_save, sender=Deployment)
def _target_for_new_deployment(sender, instance, raw=False, **kwargs):
    if instance.enabled and not raw:
        ensure_target(instance)
