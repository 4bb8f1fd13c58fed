"""Recording configuration changes. The API, the admin and management commands
all call `record`, so every change leaves one AuditEvent with the same shape."""

from decimal import Decimal

from django.db import router
from django.db.models.deletion import Collector

from routing.models import AuditEvent, RouteFallback, RouteTarget

# Fields that must never be copied into an audit row (masked forms are kept).
SECRET_FIELDS = {"secret_encrypted", "target_encrypted", "key_hash", "password", "digest"}


def snapshot(obj):
    """Return a JSON-safe dict of `obj`'s concrete fields, secrets left out.

    Routes include their weights and fallback chain; API keys keep only their masked hint.
    """
    data = {}
    for field in obj._meta.concrete_fields:
        if field.name in SECRET_FIELDS:
            continue
        value = getattr(obj, field.attname)
        data[field.attname] = _jsonable(value)
    for field in obj._meta.many_to_many:
        if obj.pk:
            data[field.name] = sorted(str(o) for o in getattr(obj, field.name).all())
    if obj._meta.model_name == "route" and obj.pk:
        data["weights"] = obj.weights()
        data["fallbacks"] = obj.fallback_chain()
    return data


def _jsonable(value):
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, type(None), list, dict)):
        return value
    return str(value)


def actor_name(user):
    return user.get_username() if user is not None and user.is_authenticated else "anonymous"


def record(*, action, obj=None, actor, user=None, before=None, after=None, reason="", object_type=None,
           object_id=None, object_repr=None):
    """Save and return one AuditEvent. Call inside the transaction that made the change."""
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)[:200]
    return AuditEvent.objects.create(
        actor=actor,
        user=user if user is not None and getattr(user, "is_authenticated", False) else None,
        action=action,
        object_type=object_type,
        object_id=object_id or "",
        object_repr=object_repr or "",
        before=before,
        after=after,
        reason=reason,
    )



def deleted_with(obj):
    """Return the registry objects (other than route targets and fallbacks, which their route's
    snapshot covers) that deleting `obj` would delete too, e.g. a provider's keys."""
    collector = Collector(using=router.db_for_write(type(obj)))
    collector.collect([obj])
    cascaded = [o for model, objs in collector.data.items() if model in _config_models() for o in objs]
    cascaded += [o for queryset in collector.fast_deletes if queryset.model in _config_models() for o in queryset]
    return [o for o in cascaded if o != obj and not isinstance(o, (RouteTarget, RouteFallback))]


def _config_models():
    from routing.signals import CONFIG_MODELS

    return CONFIG_MODELS
