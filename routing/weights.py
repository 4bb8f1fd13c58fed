"""The one validated path for changing a route's traffic split and its fallback chain.

The REST API, the admin and the dashboard's slider all call `apply_weights`
(or `note_split_change` after they replaced targets themselves), so every
split or chain change is checked the same way, bumps `Route.version`, leaves
one "weights" AuditEvent and one timeline Event, and reaches open dashboards.

Fallbacks are an ordered list of deployments tried only after every weighted
target failed or has an open circuit. A deployment is either a weighted
target (weight > 0) or a fallback, never both: a request listing it as both
is refused, and a weights-only change that gives a fallback weight > 0 takes
it out of the chain (recorded in the same audit row). Weight 0 still means no
traffic; a weight-0 target may be a fallback ("primary 100 %, fallback on
failure").
"""

from django.db import transaction
from django.utils import timezone

from dashboard import live
from routing.audit import record
from routing.models import AuditAction, AuditEvent, Deployment, Event, EventKind, Route, RouteFallback, RouteTarget

MAX_REASON_LENGTH = 1000
MAX_TARGETS = 100
MAX_FALLBACKS = 10


class WeightsInvalid(Exception):
    """The requested split was rejected; `errors` maps a field to its messages."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items()))
        self.errors = errors


class RouteLocked(Exception):
    """A staged rollout drives this route's split; only that rollout may change it until it is paused or ends."""

    def __init__(self, rollout):
        state = rollout.get_state_display().lower()
        super().__init__(f"Route {rollout.route.name!r} is driven by rollout {rollout.pk} of {rollout.canary.name!r} "
                         f"({state}); pause or abort that rollout to change weights by hand.")
        self.rollout = rollout


def locking_rollout(route, actor=None):
    """Return the rollout that refuses manual weight changes on `route` (None when free, or when
    `actor` is that rollout's own). A paused rollout lets a human take the wheel."""
    from routing.rollouts.models import LOCKING_STATES, Rollout

    rollout = Rollout.objects.select_related("route", "canary").filter(
        route_id=route.pk, state__in=LOCKING_STATES).first()
    return None if rollout is None or actor == rollout.actor else rollout


def refuse_if_locked(route, actor=None):
    """Raise RouteLocked when a running rollout drives `route` and `actor` is not that rollout."""
    rollout = locking_rollout(route, actor)
    if rollout is not None:
        raise RouteLocked(rollout)


class StaleVersion(Exception):
    """The caller edited an older version of the route; `current` is the version now stored."""

    def __init__(self, current):
        super().__init__(f"The route changed meanwhile; its version is now {current}.")
        self.current = current


def check_weights(weights, targets=None):
    """Return {field: [messages]} of everything wrong with `weights` ({} when valid).

    `weights` maps deployment names to integer weights 0-100 that must add up
    to 100; a deployment with weight > 0 must be enabled. With `targets` (the
    deployment names of an existing route) the names must be exactly those.
    Problems with one entry are reported under "weights.<deployment name>".
    """
    if not isinstance(weights, dict) or not weights:
        return {"weights": ["Give an object that maps each target deployment's name to a whole-number weight."]}
    if len(weights) > MAX_TARGETS:
        return {"weights": [f"A route can have at most {MAX_TARGETS} targets."]}
    deployments = Deployment.objects.select_related("provider").in_bulk([str(n) for n in weights], field_name="name")
    errors = {}
    for name, weight in weights.items():
        problem = _entry_problem(name, weight, deployments.get(name), targets)
        if problem:
            errors[f"weights.{name}"] = [problem]
    missing = sorted(set(targets or ()) - set(weights))
    if missing:
        errors["weights"] = [f"Every target needs a weight; missing: {', '.join(missing)}."]
    total = sum(w for w in weights.values() if _is_weight(w))
    if all(_is_weight(w) for w in weights.values()) and total != 100:
        errors.setdefault("weights", []).append(f"Weights must add up to exactly 100, not {total}.")
    return errors


def _is_weight(value):
    # bool is a subclass of int, and True must not pass as weight 1.
    return type(value) is int and 0 <= value <= 100


def _entry_problem(name, weight, deployment, targets):
    if type(weight) is not int:
        return f"Weight must be a whole number from 0 to 100, not {type(weight).__name__} {weight!r}."[:300]
    if not 0 <= weight <= 100:
        return f"Weight must be from 0 to 100, not {weight}."
    if deployment is None:
        return f"There is no deployment named {name!r}."
    if targets is not None and name not in targets:
        return f"Deployment {name!r} is not a target of this route."
    if weight > 0 and not deployment.enabled:
        return f"Deployment {name!r} is disabled; give it weight 0 or enable it first."
    if weight > 0 and not deployment.provider.enabled:
        return f"Provider {deployment.provider.name!r} of deployment {name!r} is disabled; give it weight 0."
    return None


def check_fallbacks(fallbacks, split=None):
    """Return {field: [messages]} of everything wrong with the fallback chain `fallbacks` ({} when valid).

    `fallbacks` lists deployment names in the order they are tried: each an
    existing deployment, enabled at an enabled provider, listed once, and not
    a target with weight > 0 in `split` ({deployment name: weight}, the split
    the chain goes with). Problems with one entry are reported under
    "fallbacks.<deployment name>".
    """
    if not isinstance(fallbacks, list) or any(type(name) is not str for name in fallbacks):
        return {"fallbacks": ["Give a list of deployment names, in the order they are tried ([] for none)."]}
    if len(fallbacks) > MAX_FALLBACKS:
        return {"fallbacks": [f"A route can have at most {MAX_FALLBACKS} fallbacks."]}
    errors = {}
    twice = sorted({name for name in fallbacks if fallbacks.count(name) > 1})
    if twice:
        errors["fallbacks"] = [f"Each deployment may be listed once; repeated: {', '.join(twice)}."[:300]]
    deployments = Deployment.objects.select_related("provider").in_bulk(fallbacks, field_name="name")
    weighted = split if isinstance(split, dict) else {}
    for name in dict.fromkeys(fallbacks):
        problem = _fallback_problem(name, deployments.get(name), weighted.get(name))
        if problem:
            errors[f"fallbacks.{name[:100]}"] = [problem]
    return errors


def _fallback_problem(name, deployment, weight):
    if deployment is None:
        return f"There is no deployment named {name[:100]!r}."
    if _is_weight(weight) and weight > 0:
        return (f"Deployment {name!r} is a target with weight {weight}; a fallback must have weight 0 or not be a "
                "target (fallbacks are tried only after every weighted target failed).")
    if not deployment.enabled:
        return f"Deployment {name!r} is disabled; enable it first."
    if not deployment.provider.enabled:
        return f"Provider {deployment.provider.name!r} of deployment {name!r} is disabled."
    return None


def set_fallbacks(route, names):
    """Replace the fallback chain of `route` with the deployments `names`, in that order (validated already)."""
    ids = dict(Deployment.objects.filter(name__in=names).values_list("name", "id"))
    _forget_prefetched_chain(route)
    route.fallbacks.all().delete()
    RouteFallback.objects.bulk_create(RouteFallback(route=route, deployment_id=ids[name], position=position)
                                      for position, name in enumerate(names, start=1))


def drop_weighted_fallbacks(route):
    """Take out of the chain every fallback that is now a target with weight > 0 (it gets traffic by weight)."""
    _forget_prefetched_chain(route)
    route.fallbacks.filter(deployment__targets__route=route, deployment__targets__weight__gt=0).delete()


def _forget_prefetched_chain(route):
    getattr(route, "_prefetched_objects_cache", {}).pop("fallbacks", None)


def _check_reason(reason):
    if not isinstance(reason, str) or not reason.strip():
        return {"reason": ["Say why the split changes; the reason is kept in the audit trail."]}
    if len(reason) > MAX_REASON_LENGTH:
        return {"reason": [f"Keep the reason under {MAX_REASON_LENGTH} characters."]}
    return {}


def apply_weights(route, weights, *, reason, actor, user=None, expected_version=None, fallbacks=None):
    """Set the split of `route` to `weights` and/or its fallback chain to `fallbacks`; return the updated route.

    `weights=None` keeps the split (a chain-only change, allowed while a
    rollout drives the split); `fallbacks=None` keeps the chain, except the
    deployments the new split gives weight > 0. Raises StaleVersion when
    `expected_version` is given and differs from the stored version,
    RouteLocked when a running rollout other than `actor` drives the route and
    the split is to change, WeightsInvalid when the weights, the fallbacks or
    the reason are wrong. Nothing is changed when it raises.
    """
    with transaction.atomic():
        route = Route.objects.select_for_update().get(pk=route.pk)
        if expected_version is not None and expected_version != route.version:
            raise StaleVersion(route.version)
        if weights is not None:
            refuse_if_locked(route, actor)
        targets = {t.deployment.name: t for t in route.targets.select_related("deployment")}
        split = {name: t.weight for name, t in targets.items()} if weights is None else weights
        errors = check_weights(weights, targets=set(targets)) if weights is not None else {}
        if fallbacks is not None:
            errors.update(check_fallbacks(fallbacks, split))
        errors.update(_check_reason(reason))
        if errors:
            raise WeightsInvalid(errors)
        before, chain_before = route.weights(), route.fallback_chain()
        if weights is not None:
            for name, target in targets.items():
                target.weight = weights[name]
            RouteTarget.objects.bulk_update(targets.values(), ["weight"])
        if fallbacks is not None:
            set_fallbacks(route, fallbacks)
        else:
            drop_weighted_fallbacks(route)
        note_split_change(route, before, reason=reason, actor=actor, user=user, always=True,
                          fallbacks_before=chain_before)
    return route


def weights_history(route):
    """Return the "weights" AuditEvents of `route`, newest first."""
    return AuditEvent.objects.filter(object_type="route", object_id=str(route.pk), action=AuditAction.WEIGHTS)


def revert_weights(route, *, reason, actor, user=None, expected_version=None):
    """Restore the split (and the fallback chain, where recorded) in force before the last change; return the route.

    Raises WeightsInvalid when there is no earlier change, or when the old split
    no longer fits the route (targets added or removed, a deployment disabled).
    """
    with transaction.atomic():
        route = Route.objects.select_for_update().get(pk=route.pk)
        last = weights_history(route).first()
        if last is None or not isinstance((last.before or {}).get("weights"), dict):
            raise WeightsInvalid({"weights": [f"Route {route.name!r} has no earlier weights change to revert."]})
        chain = last.before.get("fallbacks")
        return apply_weights(
            route, last.before["weights"], reason=reason, actor=actor, user=user, expected_version=expected_version,
            fallbacks=chain if isinstance(chain, list) else None,
        )


def note_split_change(route, before, *, reason, actor, user=None, always=False, fallbacks_before=None):
    """Bump `route.version` and, if its split differs from `before` or its chain from
    `fallbacks_before` (or `always`), record the weights AuditEvent and timeline Event
    and tell open dashboards once the transaction commits. Call inside the
    transaction that changed the targets or fallbacks.
    """
    if before is not None and before != route.weights():
        refuse_if_locked(route, actor)
    old_version = route.version
    route.version = old_version + 1
    route.save(update_fields=["version", "updated_at"])
    after, chain = route.weights(), route.fallback_chain()
    chain_before = chain if fallbacks_before is None else fallbacks_before
    if before is None or (before == after and chain_before == chain and not always):
        return
    old, new = {"version": old_version, "weights": before}, {"version": route.version, "weights": after}
    if chain_before or chain:  # a route without fallbacks keeps the rows it always had
        old["fallbacks"], new["fallbacks"] = chain_before, chain
    record(action=AuditAction.WEIGHTS, obj=route, actor=actor, user=user, reason=reason, before=old, after=new)
    message = describe_change(route.name, before, after)
    if chain_before != chain:
        message += "; " + describe_chain_change(chain_before, chain)
    event = Event.objects.create(
        kind=EventKind.WEIGHTS, route=route, message=message[:500],
        data={"version": route.version, "before": before, "after": after, "actor": actor, "reason": reason,
              "fallbacks_before": chain_before, "fallbacks": chain},
    )
    transaction.on_commit(lambda: _publish(route, after, chain, actor, reason, event))


def describe_change(route_name, before, after):
    """Return a one-line summary such as "chat: stable 90→50, canary 10→50"."""
    names = sorted(set(before) | set(after))
    moves = [f"{n} {before.get(n, '–')}→{after.get(n, '–')}" for n in names if before.get(n) != after.get(n)]
    return f"{route_name}: {', '.join(moves) or 'split unchanged'}"


def describe_chain_change(before, after):
    """Return a summary such as "fallbacks none ⇒ backup → spare"."""
    return f"fallbacks {' → '.join(before) or 'none'} ⇒ {' → '.join(after) or 'none'}"


def _publish(route, weights, chain, actor, reason, event):
    at = event.created_at.isoformat() if event.created_at else timezone.now().isoformat()
    live.weights_changed(live.WeightsChanged(route=route.name, version=route.version, weights=weights, actor=actor,
                                             reason=reason, at=at, fallbacks=chain))
    live.timeline_event(event)
