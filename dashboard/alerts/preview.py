"""What a rule or a policy being edited would catch, before it is saved: a rule's condition observed now (the
engine's own sources and labels), a policy's share of the alerts firing now (the engine's own routing, with the
policy in its place among the others). Read-only: nothing here is saved or sent."""

from . import sources
from .engine import alert_labels, route
from .matching import fingerprint
from .models import Alert, AlertRule, AlertState, NotificationPolicy

SHOWN = 50


def rule_catches(data, now):
    """Return what a rule of validated `data` (the API serializer's) would make alerts of now:
    {"count", "alerts": [{labels, summary, firing (an alert with these labels already fires)}]}."""
    rule = AlertRule(**{k: v for k, v in data.items() if k != "id"})
    observed = sources.observe([rule], now).get(None, [])
    firing = set(Alert.objects.filter(state=AlertState.FIRING).values_list("fingerprint", flat=True))
    rows = []
    for observation in observed[:SHOWN]:
        labels = alert_labels(rule, observation.labels)
        rows.append({"labels": _shown(labels), "summary": observation.summary,
                     "firing": fingerprint(labels) in firing})
    return {"count": len(observed), "alerts": rows, "for_s": rule.for_s}


def policy_catches(data, instance):
    """Return which firing alerts a policy of validated `data` would take, in its `order` among the enabled
    policies (replacing `instance`, the policy edited, or None): {"count", "alerts", "earlier": [{..., "by"}]}
    (alerts its matchers match that an earlier policy takes first)."""
    candidate = NotificationPolicy(**{k: v for k, v in data.items() if k not in ("id", "channels")})
    candidate.pk = instance.pk if instance else None
    others = NotificationPolicy.objects.filter(enabled=True).exclude(pk=candidate.pk or 0)
    policies = sorted([*others, candidate], key=lambda p: (p.order, p.pk or 2**63))
    alone = [candidate]
    caught, earlier = [], []
    for alert in Alert.objects.filter(state=AlertState.FIRING).select_related("rule"):
        chosen = route(alert.labels, policies)
        row = {"rule": alert.rule.name, "summary": alert.summary, "labels": _shown(alert.labels),
               "suppressed": alert.suppressed}
        if any(policy is candidate for policy in chosen):
            caught.append(row)
        elif route(alert.labels, alone):
            earlier.append(row | {"by": chosen[-1].name if chosen else ""})
    return {"count": len(caught), "alerts": caught[:SHOWN], "earlier": earlier[:SHOWN]}


def _shown(labels):
    return {k: v for k, v in labels.items() if k not in ("alertname", "kind")}
