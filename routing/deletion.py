"""Deleting registry objects: the one path for the API, the admin and any page.

Nothing deletes history (DESIGN, "Contracts that must hold"). A route is archived: it leaves
every list, picker and the gateway (its name answers 404 and is free for a new route), while
its rollups, rollouts, events and audit rows stay and still name it. A deployment, provider
or key is deleted for real, but only when no history points at it: those foreign keys are
PROTECT, so the refusal is a 409 saying what holds it. Before either, anything an active
rollout involves is refused, naming the rollout.
"""

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone

from routing.audit import deleted_with, record, snapshot
from routing.models import AuditAction, Deployment, Provider, Route
from routing.rollouts.models import ACTIVE_STATES, Rollout
from routing.signals import CONFIG_MODELS


class InUse(Exception):
    """The object cannot be deleted (a 409): the message says what holds it and what to do instead."""


class InUseByRollout(InUse):
    """An active rollout involves the object: deleting it would pull the ground from under that rollout."""

    def __init__(self, obj, rollout):
        what = type(obj)._meta.verbose_name
        state = rollout.get_state_display().lower()
        super().__init__(f"The {what} {obj.name!r} is in use by rollout {rollout.pk} of {rollout.canary.name!r} "
                         f"onto {rollout.route.name!r} ({state}); abort it or let it finish, then delete.")
        self.rollout = rollout


def active_rollout(obj):
    """Return the oldest active rollout that `obj` (a route, deployment or provider) takes part in, or None:
    as its route, its canary, or a target of its route (the baseline)."""
    if isinstance(obj, Route):
        involved = Q(route=obj)
    elif isinstance(obj, Deployment):
        involved = Q(canary=obj) | Q(route__targets__deployment=obj)
    elif isinstance(obj, Provider):
        involved = Q(canary__provider=obj) | Q(route__targets__deployment__provider=obj)
    else:
        return None
    rollouts = Rollout.objects.filter(involved, state__in=ACTIVE_STATES).select_related("route", "canary")
    return rollouts.order_by("id").first()


def refuse_if_in_use(obj):
    """Raise InUseByRollout when an active rollout involves `obj`."""
    rollout = active_rollout(obj)
    if rollout is not None:
        raise InUseByRollout(obj, rollout)


def refusal(obj):
    """Return why `obj` cannot be deleted now (the 409's sentence), or None when it can: for pages that
    ask before they delete, like the admin's confirmation."""
    rollout = active_rollout(obj)
    if rollout is not None:
        return str(InUseByRollout(obj, rollout))
    if isinstance(obj, Route):
        return None
    try:
        deleted_with(obj)
    except ProtectedError as refused:
        return in_use_message(obj, refused.protected_objects)
    return None


def delete(obj, *, actor, user=None, reason=""):
    """Delete `obj` (archive it, for a route) together with its audit rows, in one transaction.

    Raises InUseByRollout when an active rollout involves it, InUse when history or configuration
    points at it (a PROTECT foreign key); nothing is changed then.
    """
    with transaction.atomic():
        refuse_if_in_use(obj)
        if isinstance(obj, Route):
            archive_route(obj, actor=actor, user=user, reason=reason)
            return
        try:
            doomed = [obj, *deleted_with(obj)]  # collecting raises ProtectedError before anything is written
        except ProtectedError as refused:
            raise InUse(in_use_message(obj, refused.protected_objects)) from None
        for each in doomed:
            record(action=AuditAction.DELETE, obj=each, actor=actor, user=user, before=snapshot(each), reason=reason)
        obj.delete()


def archive_route(route, *, actor, user=None, reason=""):
    """Take `route` out of service for good, keeping its history.

    Its targets and fallbacks (configuration, kept in the audit row's `before`) are removed so the
    deployments are free again; the saved route tells the gateways to rebuild without it.
    """
    route = Route.objects.select_for_update().get(pk=route.pk)  # after any weight change in flight
    before = snapshot(route)
    route.targets.all().delete()
    route.fallbacks.all().delete()
    route.archived_at = timezone.now()
    route.version += 1
    route.save(update_fields=["archived_at", "version", "updated_at"])
    record(action=AuditAction.DELETE, obj=route, actor=actor, user=user, before=before, reason=reason,
           object_repr=route.name)


def in_use_message(obj, protected):
    """Return the sentence for a refused delete: what still points at `obj`, counted by kind
    (configuration named, history only counted), and what to do instead."""
    groups = defaultdict(list)
    for other in protected:
        groups[type(other)].append(other)
    parts = []
    for model, objs in sorted(groups.items(), key=lambda item: item[0]._meta.verbose_name):
        noun = model._meta.verbose_name if len(objs) == 1 else model._meta.verbose_name_plural
        named = f": {', '.join(sorted(str(o) for o in objs)[:5])}" if model in CONFIG_MODELS else ""
        parts.append(f"{len(objs)} {noun}{named}")
    text = f"The {type(obj)._meta.verbose_name} {obj} is still in use by {'; '.join(parts)}."
    if any(model not in CONFIG_MODELS for model in groups):
        text += (" History outlives what it describes, so it cannot be deleted: disable it instead (its rollups "
                 f"age out after {settings.ROLLUP_RETENTION_DAYS} days; rollouts stay).")
    return text
