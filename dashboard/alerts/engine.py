"""The alert engine: one `tick(now)` evaluates every rule, moves alerts pending → firing → resolved, marks the
silenced, inhibited and in-maintenance ones, and sends each policy's groups with Alertmanager's timing.

A tick first claims the engine's lease with a conditional UPDATE (as the rollout controller does), then works in
one transaction; its notifications go to `delivery.enqueue` only after that transaction committed. Two
overlapping ticks never both run, so nothing is sent twice; a tick that dies midway rolls back whole and sends
nothing, and the next tick after its lease starts from the stored state.

Grouping follows Alertmanager: a new group waits `group_wait` before its first notification; afterwards it is
sent again when an alert joined or resolved, at most every `group_interval`, and while anything still fires,
every `repeat_interval`. A silenced, inhibited or in-maintenance alert leaves its groups without a
notification; when that ends it is new to them and is sent again.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from dashboard import live

from . import delivery, sources
from .matching import Inhibitions, fingerprint, matches_all
from .message import AlertItem, Message, page_url
from .models import (
    OPEN_STATES,
    SEVERITY_RANK,
    Alert,
    AlertGroup,
    AlertRule,
    AlertState,
    EngineLease,
    InhibitRule,
    MaintenanceWindow,
    NotificationPolicy,
    Silence,
    Suppression,
)

LEASE_S = 60
FIRING, RESOLVED = AlertState.FIRING, AlertState.RESOLVED


# --- the lease -----------------------------------------------------------------------------------------------


def claim(now):
    """Take the tick lease; return the claimed tick number, or None while another tick holds it."""
    EngineLease.objects.get_or_create(pk=1)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    if not EngineLease.objects.filter(free, pk=1).update(ticks=F("ticks") + 1,
                                                         lease_until=now + timedelta(seconds=LEASE_S)):
        return None
    return EngineLease.objects.values_list("ticks", flat=True).get(pk=1)


def _release(number, now):
    EngineLease.objects.filter(pk=1, ticks=number).update(lease_until=None, last_tick_at=now)


def tick(now=None):
    """Claim and run one evaluation; return {"firing", "pending", "sent"} counts, or None when not claimed."""
    now = now or timezone.now()
    number = claim(now)
    if number is None:
        return None
    try:
        with transaction.atomic():
            outbox, counts = evaluate(now)
    finally:
        _release(number, now)
    for message, channel_ids in outbox:
        delivery.enqueue(message, channel_ids)
    _publish(counts if not outbox else {**counts, "sent_at": now.isoformat()})
    return {**counts, "sent": len(outbox)}


def next_due():
    """Return when the first pending alert's `for` ends (a tick then fires it), or None when none is pending."""
    pending = Alert.objects.filter(state=AlertState.PENDING).values_list("started_at", "rule__for_s")
    return min((started + timedelta(seconds=for_s) for started, for_s in pending), default=None)


def evaluate(now):
    """Do one tick's work inside the caller's transaction; return ([(Message, channel ids)], counts)."""
    rules = list(AlertRule.objects.filter(enabled=True))
    observed = sources.observe(rules, now)
    _update_alerts(rules, observed, now)
    firing = _with_rules(Alert.objects.filter(state=FIRING), rules)
    _mark_suppressed(firing, now)
    keep = now - timedelta(days=settings.ALERT_RESOLVED_KEEP_DAYS)
    Alert.objects.filter(state=RESOLVED, resolved_at__lt=keep).delete()
    outbox = _notify(firing, now, rules)
    pending = Alert.objects.filter(state=AlertState.PENDING).count()
    return outbox, {"firing": sum(1 for a in firing if not a.suppressed), "pending": pending}


class AlertRow:
    """What a tick reads of an alert to mute, group and notify it: thousands per tick, so plain rows rather than
    models (building a model per alert was a third of a tick)."""

    FIELDS = ("pk", "rule_id", "fingerprint", "labels", "state", "summary", "suppressed", "suppressed_by",
              "started_at", "fired_at", "resolved_at")
    __slots__ = (*FIELDS, "rule")

    def __init__(self, values, rule):
        for name, value in zip(self.FIELDS, values, strict=True):
            setattr(self, name, value)
        self.rule = rule


def _with_rules(alerts, rules):
    """Return AlertRows of the alerts, their rules taken from `rules` (the tick's own), reading only the missing
    ones (a join would build one more model per alert)."""
    rows = list(alerts.values_list(*AlertRow.FIELDS))
    known = {rule.pk: rule for rule in rules}
    missing = {row[1] for row in rows} - known.keys()
    known |= {rule.pk: rule for rule in AlertRule.objects.filter(pk__in=missing)} if missing else {}
    return [AlertRow(row, known[row[1]]) for row in rows]


# --- alerts: pending → firing → resolved ---------------------------------------------------------------------


def alert_labels(rule, observed_labels):
    """Return an alert's labels: the subject's, the rule's own (free) labels, alertname, severity and kind."""
    free = {k: str(v) for k, v in rule.labels.items() if k not in sources.SUBJECT_LABELS}
    return {**observed_labels, **free, "alertname": rule.name, "severity": rule.severity, "kind": rule.kind}


ALERT_FIELDS = ("pk", "fingerprint", "state", "summary", "value", "started_at")  # what an update needs


def _update_alerts(rules, observed, now):
    """Create, fire and resolve alerts. Only changes are written: alerts that fire or resolve in one UPDATE each
    (thousands may at once), changed summaries and values in one statement run per row."""
    open_alerts = {row["fingerprint"]: row for row in Alert.objects.filter(state__in=OPEN_STATES)
                   .values(*ALERT_FIELDS)}
    seen, new, rewritten, fired = set(), [], [], []
    successors = Successors()
    for rule in rules:
        for observation in observed.get(rule.pk, ()):
            labels = alert_labels(rule, observation.labels)
            fp = fingerprint(labels)
            if fp in seen:
                continue
            seen.add(fp)
            summary, row = observation.summary[:500], open_alerts.get(fp)
            if row is None:
                # The probes' verdict, not this tick, is when a deployment went down: a tick later is no extra wait.
                started = min(observation.since or now, now)
                state = FIRING if (now - started).total_seconds() >= rule.for_s else AlertState.PENDING
                new.append(Alert(rule=rule, fingerprint=fp, labels=labels, started_at=started, state=state,
                                 fired_at=now if state == FIRING else None, summary=summary,
                                 value=observation.value))
            else:
                state = FIRING if _due_to_fire(row, rule, now) or row["state"] == FIRING else AlertState.PENDING
                if row["summary"] != summary or row["value"] != observation.value:
                    rewritten.append((summary, observation.value, row["pk"]))
                if _due_to_fire(row, rule, now):
                    fired.append(row["pk"])
            successors.add(rule.kind, labels, state, summary)
    gone = [row for fp, row in open_alerts.items() if fp not in seen]
    for chunk in _chunks([row["pk"] for row in gone if row["state"] == AlertState.PENDING]):
        Alert.objects.filter(pk__in=chunk).delete()
    _end([row["pk"] for row in gone if row["state"] == FIRING], successors, now)
    _update(fired, state=FIRING, fired_at=now)
    Alert.objects.bulk_create(new)
    _rewrite(rewritten)


def subject_of(kind, labels):
    """Return what an alert of a state condition is about, as (kind, subject labels), or None for other kinds.
    Alerts with one subject in different states (degraded, down) are one thing that changed."""
    if kind not in sources.STATE_LABELS:
        return None
    return kind, tuple(labels.get(name, "") for name in sources.SUBJECT_LABELS)


def state_of(kind, labels):
    return labels.get(sources.STATE_LABELS[kind], "")


class Successors:
    """The states each subject of a state condition holds this tick: {subject: {state: (firing?, summary)}}."""

    def __init__(self):
        self.found = defaultdict(dict)

    def add(self, kind, labels, alert_state, summary):
        subject = subject_of(kind, labels)
        if subject is not None:
            state = state_of(kind, labels)
            firing = alert_state == FIRING or self.found[subject].get(state, (False,))[0]
            self.found[subject][state] = (firing, summary)

    def of(self, kind, labels):
        """Return (firing?, summary) of the state that follows an alert with `labels`, or None when none does."""
        subject = subject_of(kind, labels)
        if subject is None:
            return None
        others = [held for state, held in self.found.get(subject, {}).items() if state != state_of(kind, labels)]
        return max(others, key=lambda held: held[0], default=None)


def _end(ids, successors, now):
    """End the firing alerts `ids`, whose condition no longer holds. One whose subject moved to another state hands
    over: it keeps firing while that state is pending, and once it fires is resolved as superseded (not told as
    resolved where the successor is told, see _notify). The others are resolved."""
    rows = [row for chunk in _chunks(ids) for row in Alert.objects.filter(pk__in=chunk)
            .values_list("pk", "labels", "rule__kind")] if ids else []
    resolved, superseded = [], defaultdict(list)
    for pk, labels, kind in rows:
        follows = successors.of(kind, labels)
        if follows is None:
            resolved.append(pk)
        elif follows[0]:
            superseded[f"now {follows[1]}"[:200]].append(pk)
    _update(resolved, state=RESOLVED, resolved_at=now, suppressed="", suppressed_by="")
    for by, chunk in superseded.items():
        _update(chunk, state=RESOLVED, resolved_at=now, suppressed=Suppression.SUPERSEDED, suppressed_by=by)


def _rewrite(rows):
    """Write [(summary, value, id)]: one statement run for every row. (Django's bulk_update builds a CASE per
    field and row, which costs seconds of Python for the thousands of summaries a threshold tick changes.)"""
    if not rows:
        return
    table, quote = Alert._meta.db_table, connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {quote(table)} SET {quote('summary')} = %s, {quote('value')} = %s "
                           f"WHERE {quote('id')} = %s", rows)


def _chunks(ids, size=900):
    """Slices of ids short enough for any database's limit on query parameters."""
    return (ids[i:i + size] for i in range(0, len(ids), size))


def _update(ids, **values):
    for chunk in _chunks(ids):
        Alert.objects.filter(pk__in=chunk).update(**values)


def _due_to_fire(alert, rule, now):
    """alert: a dict with state and started_at."""
    return alert["state"] == AlertState.PENDING and (now - alert["started_at"]).total_seconds() >= rule.for_s


# --- silences, maintenance, inhibition -----------------------------------------------------------------------


def _mark_suppressed(firing, now):
    """Set each firing alert's `suppressed` (silenced, in maintenance or inhibited, in that order) and save changes."""
    silences = list(Silence.objects.filter(starts_at__lte=now, ends_at__gt=now))
    windows = [w for w in MaintenanceWindow.objects.filter(enabled=True) if w.is_open(now)]
    inhibitions = Inhibitions(InhibitRule.objects.filter(enabled=True), [(a.fingerprint, a.labels) for a in firing])
    changed = defaultdict(list)  # (suppressed, by) → alert ids: one UPDATE per distinct value
    for alert in firing:
        reason, by = suppression(alert.labels, alert.fingerprint, silences, windows, inhibitions)
        by = by[:200]
        if (reason, by) != (alert.suppressed, alert.suppressed_by):
            alert.suppressed, alert.suppressed_by = reason, by
            changed[(reason, by)].append(alert.pk)
    for (reason, by), ids in changed.items():
        _update(ids, suppressed=reason, suppressed_by=by)


def suppression(labels, own_fingerprint, silences, windows, inhibitions):
    """Return (Suppression, what suppresses it) of one alert's labels; (NONE, "") when it is to be sent."""
    for silence in silences:
        if matches_all(silence.matchers, labels):
            return Suppression.SILENCED, f"silence {silence.pk} by {silence.created_by}"
    for window in windows:
        if matches_all(window.matchers, labels):
            return Suppression.MAINTENANCE, f"maintenance window {window.name}"
    rule = inhibitions.muted_by(labels, own_fingerprint)
    if rule:
        return Suppression.INHIBITED, f"inhibit rule {rule}"
    return Suppression.NONE, ""


# --- routing and grouping ------------------------------------------------------------------------------------


def route(labels, policies):
    """Return the policies an alert goes to: the first that matches, and the following ones while `continue`."""
    chosen = []
    for policy in policies:
        if policy.severities and labels.get("severity") not in policy.severities:
            continue
        if matches_all(policy.matchers, labels):
            chosen.append(policy)
            if not policy.continue_matching:
                break
    return chosen


def group_of(policy, labels):
    """Return (key, shared labels) of the group an alert joins in a policy ('...' groups by every label)."""
    names = sorted(labels) if "..." in policy.group_by else sorted(policy.group_by)
    shared = {name: labels.get(name, "") for name in names}
    return ",".join(f'{k}="{v}"' for k, v in shared.items())[:500], shared


def _notify(firing, now, rules):
    policies = list(NotificationPolicy.objects.filter(enabled=True).prefetch_related("channels"))
    by_pk = {policy.pk: policy for policy in policies}
    stored = {(g.policy_id, g.key): g for g in AlertGroup.objects.all()}
    recent_resolved = _resolved_news(stored.values(), now, rules)
    members = {}  # (policy id, key) → (policy, shared labels, {fingerprint: (status, alert)})
    told_elsewhere = _successor_policies(firing, policies)
    for status, alerts in ((RESOLVED, recent_resolved), (FIRING, [a for a in firing if not a.suppressed])):
        for alert in alerts:
            successor_policies = told_elsewhere(alert) if status == RESOLVED else set()
            for policy in route(alert.labels, policies):
                if policy.pk in successor_policies:
                    continue  # its successor (degraded → down) is this policy's news, not its end
                key, shared = group_of(policy, alert.labels)
                members.setdefault((policy.pk, key), (policy, shared, {}))[2][alert.fingerprint] = (status, alert)
    outbox, writes = [], GroupWrites()
    for ident in set(members) | set(stored):
        policy, shared, current = members.get(ident, (by_pk.get(ident[0]), {}, {}))
        sent = _flush_group(stored.get(ident), policy, ident[1], shared, current, now, writes)
        if sent is not None:
            outbox.append(sent)
    writes.save()
    return outbox


def _successor_policies(firing, policies):
    """Return a function: a resolved alert → the ids of the policies that take the firing alert that superseded
    it (an empty set for an alert that was not superseded)."""
    states = defaultdict(list)  # subject → labels of its firing alerts
    for alert in firing:
        subject = subject_of(alert.rule.kind, alert.labels)
        if subject is not None:
            states[subject].append(alert.labels)

    def policies_of(alert):
        if alert.suppressed != Suppression.SUPERSEDED:
            return set()
        kind = alert.rule.kind
        followers = [labels for labels in states.get(subject_of(kind, alert.labels), ())
                     if state_of(kind, labels) != state_of(kind, alert.labels)]
        return {policy.pk for labels in followers for policy in route(labels, policies)}

    return policies_of


def _resolved_news(groups, now, rules):
    """Return the alerts resolved in the last day that some group last sent as firing: the only resolved ones a
    notification can tell about."""
    told = {fp for group in groups for fp, status in group.notified.items() if status == FIRING}
    recent = Alert.objects.filter(state=RESOLVED, resolved_at__gte=now - timedelta(days=1))
    return [alert for chunk in _chunks(sorted(told))
            for alert in _with_rules(recent.filter(fingerprint__in=chunk), rules)]


class GroupWrites:
    """The group rows one tick creates, changes and deletes, written in one query per kind (a burst of alerts
    can open hundreds of groups at once)."""

    def __init__(self):
        self.created, self.changed, self.deleted = [], [], []

    def save(self):
        AlertGroup.objects.bulk_create(self.created)
        AlertGroup.objects.bulk_update(self.changed, ["notified", "last_sent_at", "channels_told"], batch_size=200)
        for chunk in _chunks(self.deleted):
            AlertGroup.objects.filter(pk__in=chunk).delete()


def _flush_group(group, policy, key, shared, current, now, writes):
    """Bring one group's notification state up to date (its writes go to `writes`); return (Message, channel ids)
    when it is due, else None."""
    notified = dict(group.notified) if group else {}
    firing = {fp for fp, (status, _) in current.items() if status == FIRING}
    resolved = {fp for fp, (status, _) in current.items() if status == RESOLVED and notified.get(fp) == FIRING}
    if group is None:
        if not firing:
            return None
        group = AlertGroup(policy=policy, key=key, labels=shared, created_at=now, notified={})
        writes.created.append(group)
    elif policy is not None:
        group.policy = policy  # the prefetched one, with its channels: no query per group
    # An alert that left silently (silenced, inhibited, in maintenance) is forgotten: back, it is news again.
    notified = {fp: status for fp, status in notified.items() if fp in firing or fp in resolved}
    if not firing and not resolved:
        writes.deleted.append(group.pk)
        return None
    channel_ids = [c.pk for c in policy.channels.all() if c.enabled]
    if not _due(group, policy, firing, resolved, notified, now):
        told, newcomers = _newcomers(group, channel_ids, firing)
        _change(group, writes, notified=notified, channels_told=told)
        if not newcomers:
            return None
        return build_message(group, [current[fp][1] for fp in sorted(firing)], now), newcomers
    message = build_message(group, [current[fp][1] for fp in sorted(firing | resolved)], now)
    remaining = {fp: FIRING for fp in firing}
    if remaining:
        _change(group, writes, notified=remaining, last_sent_at=now, channels_told=channel_ids)
    else:
        writes.deleted.append(group.pk)
    return (message, channel_ids) if channel_ids else None


def _newcomers(group, channel_ids, firing):
    """Return (the channels told of a group that is not due, those of `channel_ids` to tell now): a channel added
    to the policy (or enabled again) while the group fires hears what fires at once, not at the next repeat."""
    if group.last_sent_at is None:
        return group.channels_told, []  # its first notification, after the group's wait, goes to every channel
    if group.channels_told is None:
        return channel_ids, []  # sent before the channels told were recorded: its policy's count as told
    newcomers = [pk for pk in channel_ids if pk not in group.channels_told] if firing else []
    return group.channels_told + newcomers, newcomers


def _change(group, writes, **values):
    """Set `values` on a group; a stored group whose values changed joins the tick's bulk update."""
    changed = any(getattr(group, name) != value for name, value in values.items())
    for name, value in values.items():
        setattr(group, name, value)
    if changed and group.pk is not None:
        writes.changed.append(group)


def _due(group, policy, firing, resolved, notified, now):
    if group.last_sent_at is None:
        return (now - group.created_at).total_seconds() >= policy.group_wait_s
    since = (now - group.last_sent_at).total_seconds()
    news = bool(resolved) or bool(firing - {fp for fp, s in notified.items() if s == FIRING})
    return (news and since >= policy.group_interval_s) or (bool(firing) and since >= policy.repeat_interval_s)


def build_message(group, alerts, now):
    """Return the Message of one group notification of `alerts` (firing ones first, then resolved)."""
    items = tuple(AlertItem(rule=a.rule.name, status=a.state, severity=a.rule.severity, summary=_summary(a),
                            labels=dict(a.labels), started_at=a.fired_at or a.started_at, ended_at=a.resolved_at)
                  for a in sorted(alerts, key=lambda a: (a.state != FIRING, SEVERITY_RANK[a.rule.severity])))
    firing = [i for i in items if i.status == FIRING]
    status = FIRING if firing else RESOLVED
    severity = min((i.severity for i in (firing or items)), key=lambda s: SEVERITY_RANK[s])
    count = len(firing) if firing else len(items)
    subject = ", ".join(f"{k}={v}" for k, v in group.labels.items() if v) or group.policy.name
    title = f"[{status.upper()}{f':{count}' if count > 1 else ''}] {items[0].rule if count == 1 else subject}"
    text = "\n".join(f"{i.status.upper()} ({i.severity}): {i.summary}" for i in items)
    return Message(group_key=f"{group.policy.name}:{{{group.key}}}", status=status, severity=severity,
                   title=title[:200], text=text, labels=dict(group.labels), alerts=items, url=page_url(), sent_at=now)


def _summary(alert):
    """An alert's sentence; a superseded one's says what it became (told where its successor is not)."""
    if alert.suppressed == Suppression.SUPERSEDED:
        return f"{alert.summary}; {alert.suppressed_by}"[:500]
    return alert.summary


# --- live ----------------------------------------------------------------------------------------------------


_last_published = {}


def _publish(counts):
    """Tell open pages the counts when they changed (every tick would be a message per socket per tick)."""
    if _last_published == counts:
        return
    _last_published.clear()
    _last_published.update(counts)
    live.alerts_changed(live.AlertsChanged(firing=counts["firing"], pending=counts["pending"],
                                           at=counts.get("sent_at") or timezone.now().isoformat()))

