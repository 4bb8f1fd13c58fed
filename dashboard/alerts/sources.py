"""What the rules watch: one function per condition kind, each reading its data in one batch for every rule of
that kind (one or two queries per kind, never one per rule), returning {rule id: [Observation]}.

State conditions (a deployment down, a circuit open, a key invalid, a rollout awaiting approval, paused or stuck
past its step timeout) hold while the state lasts; one-off rollout outcomes (preflight failed, rolled back,
promoted) hold for the rule's `hold_s` while the rollout stays there; thresholds are read over the rule's window
of per-minute rollups.
"""

import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import IntegerField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from probes import rollups, runner, sketch
from probes.models import HealthState, ProbeTarget, Rollup, Source
from routing.models import (
    ApiKey,
    CircuitState,
    Deployment,
    DeploymentCircuit,
    Event,
    EventKind,
    KeyState,
    Provider,
    Route,
)
from routing.outcomes import DEPLOYMENT_FAILURES
from routing.rollouts.models import Rollout, RolloutState, RolloutTransition

from .models import ConditionKind

SUBJECT_LABELS = ("provider", "deployment", "route", "key")
ROLLOUT_EVENTS = {"preflight_failed": RolloutState.ABORTED, "rolled_back": RolloutState.ROLLED_BACK,
                  "promoted": RolloutState.PROMOTED}
# Held while they last: waiting for an approval, paused (by a human, or by a step's timeout), stuck (a running
# step past its timeout that no tick has paused: the rollout scheduler is not running), a canary provider incident
# (one bad minute on the canary alone: the step holds, nothing is proven; while that step runs).
ROLLOUT_HELD = ("awaiting_approval", "paused", "stuck", "canary_incident")
ROLLOUT_STATES = (*ROLLOUT_EVENTS, *ROLLOUT_HELD)
DEFAULT_HOLD_S = 3600
# Conditions that are a state of their subject (a deployment's health, a key's state): the state is a label, so
# each state is an alert of its own, and the engine hands one over to the next (degraded → down) rather than
# telling the first as resolved.
STATE_LABELS = {ConditionKind.DEPLOYMENT_HEALTH: "health", ConditionKind.KEY_STATE: "key_state"}
STUCK_GRACE_S = 60  # a tick every few seconds pauses a timed-out step well within this


@dataclass(frozen=True)
class Observation:
    labels: dict
    summary: str
    value: float | None = None
    since: datetime | None = None  # when the condition began, where the source knows it: `for` counts from there


def observe(rules, now):
    """Return {rule id: [Observation]} of every rule's condition holding at `now`."""
    by_kind = defaultdict(list)
    for rule in rules:
        by_kind[rule.kind].append(rule)
    found = {}
    _per_tick.cache = {}
    try:
        for kind, kind_rules in by_kind.items():
            for rule, observations in OBSERVERS[kind](kind_rules, now):
                found[rule.pk] = [o for o in observations if _in_scope(rule, o.labels)]
    finally:
        _per_tick.cache = None
    return found


def _in_scope(rule, labels):
    """A rule's provider / deployment / route / key labels narrow it to those subjects."""
    return all(labels.get(name) == rule.labels[name] for name in SUBJECT_LABELS if rule.labels.get(name))


# --- state conditions ----------------------------------------------------------------------------------------


_per_tick = threading.local()  # what several kinds read (the targets, the names), read once per `observe`


def _once(name, read):
    cache = getattr(_per_tick, "cache", None)
    if cache is None:  # called on its own, outside `observe`
        return read()
    if name not in cache:
        cache[name] = read()
    return cache[name]


def _targets():
    rows = ProbeTarget.objects.filter(enabled=True, deployment__enabled=True, deployment__provider__enabled=True)
    return _once("targets", lambda: list(rows.select_related("deployment__provider", "api_key")))


def _target_labels(target):
    labels = {"provider": target.deployment.provider.name, "deployment": target.deployment.name}
    if target.api_key_id:
        labels["key"] = target.api_key.label
    return labels


def deployment_health(rules, now):
    targets = _targets()
    for rule in rules:
        states = rule.params.get("states") or [HealthState.DOWN]
        yield rule, [Observation({**_target_labels(t), "health": t.health},
                                 f"{t} is {t.health}: {t.health_reason}".rstrip(": "), since=t.health_since)
                     for t in targets if t.health in states]


def provider_down(rules, now):
    healths = defaultdict(set)
    for target in _targets():
        healths[target.deployment.provider.name].add(target.health)
    down = [name for name, states in healths.items() if states == {HealthState.DOWN}]
    observations = [Observation({"provider": name}, f"provider {name} is down: every probed deployment is down")
                    for name in sorted(down)]
    for rule in rules:
        yield rule, observations


def circuit_open(rules, now):
    circuits = DeploymentCircuit.objects.exclude(state=CircuitState.CLOSED).select_related("deployment__provider")
    observations = [Observation({"provider": c.deployment.provider.name, "deployment": c.deployment.name},
                                f"circuit of {c.deployment.name} is {c.get_state_display().lower()}: {c.reason}")
                    for c in circuits]
    for rule in rules:
        yield rule, observations


def key_state(rules, now):
    keys = list(ApiKey.objects.filter(enabled=True, state__in=(KeyState.INVALID, KeyState.RATE_LIMITED))
                .select_related("provider"))
    for rule in rules:
        states = rule.params.get("states") or [KeyState.INVALID, KeyState.RATE_LIMITED]
        yield rule, [Observation({"provider": k.provider.name, "key": k.label, "key_state": k.state},
                                 f"key {k} is {k.get_state_display().lower()}: {k.state_reason}".rstrip(": "))
                     for k in keys if k.state in states and _still_limited(k, now)]


def _still_limited(key, now):
    return key.state != KeyState.RATE_LIMITED or key.rate_limited_until is None or key.rate_limited_until > now


def rollout(rules, now):
    horizon = now - timedelta(seconds=max(r.params.get("hold_s", DEFAULT_HOLD_S) for r in rules))
    transitions = list(RolloutTransition.objects.filter(at__gte=horizon, to_state__in=ROLLOUT_EVENTS.values())
                       .select_related("rollout__route", "rollout__canary"))
    held = _held_rollouts(now)
    for rule in rules:
        wanted = rule.params.get("states") or list(ROLLOUT_STATES)
        since = now - timedelta(seconds=rule.params.get("hold_s", DEFAULT_HOLD_S))
        found = {}
        for t in transitions:
            name = _rollout_event(t)
            if name in wanted and t.at >= since and t.rollout.state == t.to_state:
                found[t.rollout_id] = _rollout_observation(t.rollout, name, t.reason)
        found |= {pk: observation for pk, (name, observation) in held.items() if name in wanted}
        yield rule, list(found.values())


def _held_rollouts(now):
    """Return {rollout id: (held condition, Observation)} of rollouts awaiting approval, paused or stuck."""
    states = (RolloutState.AWAITING_APPROVAL, RolloutState.PAUSED, RolloutState.RUNNING)
    rollouts = Rollout.objects.filter(state__in=states).select_related("route", "canary")
    paused_why = dict(RolloutTransition.objects.filter(rollout__state=RolloutState.PAUSED, to_state=RolloutState.PAUSED)
                      .order_by("at", "id").values_list("rollout_id", "reason"))  # the latest pause's reason wins
    incidents = _incidents([ro for ro in rollouts if ro.state == RolloutState.RUNNING])
    held = {}
    for ro in rollouts:
        if ro.state == RolloutState.AWAITING_APPROVAL:
            name, why = "awaiting_approval", "a human's approval is needed"
        elif ro.state == RolloutState.PAUSED:
            name, why = "paused", paused_why.get(ro.pk, "paused")
        elif _overdue_s(ro, now) > STUCK_GRACE_S:
            name = "stuck"
            why = (f"step {ro.step + 1} is {_overdue_s(ro, now):.0f} s past its {ro.step_timeout_s} s timeout "
                   "and no tick has paused it")
        elif ro.pk in incidents:
            name, why = "canary_incident", incidents[ro.pk]
        else:
            continue
        held[ro.pk] = (name, _rollout_observation(ro, name, why))
    return held


def _incidents(running):
    """Return {rollout id: the incident's timeline message} of running rollouts whose current step saw a canary
    provider incident (routing.rollouts.controller puts one event on the timeline per step)."""
    started = {ro.pk: ro.step_started_at for ro in running if ro.step_started_at}
    if not started:
        return {}
    events = Event.objects.filter(kind=EventKind.ROLLOUT, data__incident=True, created_at__gte=min(started.values()),
                                  deployment_id__in=[ro.canary_id for ro in running])
    found = {}
    for data, message, at in events.order_by("created_at").values_list("data", "message", "created_at"):
        pk = data.get("rollout")
        if pk in started and at >= started[pk]:
            found[pk] = message.split(": ", 1)[-1]
    return found


def _overdue_s(rollout, now):
    if rollout.step_started_at is None:
        return 0.0
    return (now - rollout.step_started_at).total_seconds() - rollout.step_timeout_s


def _rollout_event(transition):
    if transition.to_state == RolloutState.ABORTED:
        return "preflight_failed" if transition.from_state == RolloutState.PREFLIGHT else None
    return {v: k for k, v in ROLLOUT_EVENTS.items()}.get(transition.to_state)


def _rollout_observation(ro, event, reason):
    labels = {"route": ro.route.name, "deployment": ro.canary.name, "rollout": str(ro.pk), "event": event}
    return Observation(labels, f"{ro}: {event.replace('_', ' ')}: {reason}"[:500])


def probe_budget(rules, now):
    spent = runner.spent_budget_slowdowns(now.date())
    names = dict(Provider.objects.filter(pk__in=spent).values_list("pk", "name"))
    observations = [Observation({"provider": names[pk]}, f"probe budget of {names[pk]} is spent today; probes "
                                f"run {spent[pk]}x slower") for pk in sorted(names)]
    for rule in rules:
        yield rule, observations


def no_data(rules, now):
    intervals = {pk: interval for pk, interval, _ in runner.schedulable_targets()}
    targets = [t for t in _targets() if t.pk in intervals]
    for rule in rules:
        times = rule.params.get("intervals", 3)
        found = []
        for t in targets:
            last = t.last_probe_at or t.created_at
            if (now - last).total_seconds() > times * intervals[t.pk]:
                silent = f"since {t.last_probe_at:%H:%M:%S} UTC" if t.last_probe_at else "ever"
                found.append(Observation(_target_labels(t), f"no probe result from {t} {silent}"))
        yield rule, found


# --- thresholds over rollups ----------------------------------------------------------------------------------


def _names():
    def read():
        deployments = {pk: (name, provider) for pk, name, provider in
                       Deployment.objects.values_list("pk", "name", "provider__name")}
        # Deleted routes too: their rollups stay (archived, see routing.deletion) and still count.
        return deployments, dict(Route.all_objects.values_list("pk", "name"))

    return _once("names", read)


def ttft_p95(rules, now):
    longest = max(r.params.get("window_s", 300) for r in rules)
    rows = Rollup.objects.filter(minute__gte=rollups.minute_of(now - timedelta(seconds=longest))).exclude(ttft=None)
    parsed = _parsed_ttft(list(rows.values_list("pk", "count")))
    deployments, _ = _names()
    windows = defaultdict(set)  # source → the windows its rules look at
    for rule in rules:
        windows[rule.params.get("source", "all")].add(rule.params.get("window_s", 300))
    p95s = {}  # (window, source) → {deployment id: (p95 ms, requests)}, computed once for the rules that share them
    for source, its_windows in windows.items():
        p95s |= {(window, source): p95 for window, p95 in _p95s_by_window(parsed, now, its_windows, source).items()}
    for rule in rules:
        window, source = rule.params.get("window_s", 300), rule.params.get("source", "all")
        found = []
        threshold, least = rule.params["threshold_ms"], rule.params.get("min_count", 1)
        for pk, (p95, count) in p95s[(window, source)].items():
            if p95 is not None and count >= least and p95 > threshold:
                name, provider = deployments[pk]
                found.append(Observation({"provider": provider, "deployment": name},
                                         f"{name} p95 TTFT {p95:.0f} ms > {threshold:g} ms over {_span(window)}", p95))
        yield rule, found


_ttft_cache = {}  # (rollup id, count) → (minute, source, deployment id, parsed TTFT sketch), kept between ticks


def _parsed_ttft(rows):
    """Return [(minute, source, deployment id, count, TTFT sketch)] of the [(id, count)] rows, reading and parsing
    only new or grown ones.

    Only the TTFT sketch is read (not the latency one), and a rollup row only grows (every merge adds requests),
    so a row with the count seen last tick holds the same sketch (and its minute, source and deployment never
    change): past minutes are read and parsed once, not every tick.
    """
    global _ttft_cache
    wanted = set(rows)
    missing = [pk for pk, count in wanted if (pk, count) not in _ttft_cache]
    fields = ("pk", "count", "minute", "source", "deployment_id", "ttft")
    fresh = {}
    for chunk in (missing[i:i + 900] for i in range(0, len(missing), 900)):
        fresh |= {(pk, count): (minute, source, deployment_id, sketch.from_json(ttft))
                  for pk, count, minute, source, deployment_id, ttft in
                  Rollup.objects.filter(pk__in=chunk).values_list(*fields)}
    cache = {key: _ttft_cache.get(key) or fresh.get(key) for key in wanted}
    _ttft_cache = {key: value for key, value in cache.items() if value is not None}
    return [(minute, source, deployment_id, count, ttft)
            for (pk, count), (minute, source, deployment_id, ttft) in _ttft_cache.items()]


def _p95s_by_window(parsed, now, windows, source):
    """Return {window s: {deployment id: (p95 ms, requests)}} of `source`'s rows ("all": every source).

    The rows are merged newest first into one sketch per deployment, read at each window's start: a longer window
    adds only its older minutes to the shorter one's sketch, so every row is merged once.
    """
    rows = sorted((row for row in parsed if source in ("all", row[1])), key=lambda row: row[0], reverse=True)
    merged, counts, found, i = {}, defaultdict(int), {}, 0
    for window in sorted(windows):
        start = rollups.minute_of(now - timedelta(seconds=window))
        while i < len(rows) and rows[i][0] >= start:
            _, _, deployment_id, count, ttft = rows[i]
            counts[deployment_id] += count
            if deployment_id not in merged:
                merged[deployment_id] = sketch.new()  # rows are shared by ticks: merge into a sketch of its own
            merged[deployment_id].merge(ttft)
            i += 1
        found[window] = {pk: (sketch.quantiles(merged[pk], (0.95,))[0.95], counts[pk]) for pk in merged}
    return found


def error_rate(rules, now):
    """Observe the deployment error rate (routing.outcomes.deployment_errors: never a client's error or a
    key's 429) of each route's traffic or each deployment over each rule's window."""
    per_subject = _counts_per_window(now, {r.params.get("window_s", 600) for r in rules})
    deployments, routes = _names()
    counted = {}  # (scope, window) → {subject: [requests, failures]}, counted once for every rule that shares them
    for rule in rules:
        scope, window = rule.params.get("scope", "route"), rule.params.get("window_s", 600)
        if (scope, window) not in counted:
            counted[(scope, window)] = _count_by(per_subject, scope, window)
        found = []
        for subject, (n, bad) in counted[(scope, window)].items():
            rate = bad / n if n else 0.0
            if n >= rule.params.get("min_count", 20) and rate > rule.params["threshold"]:
                labels, name = _subject_labels(scope, subject, deployments, routes)
                found.append(Observation(labels, f"{name} deployment error rate {rate:.1%} > "
                                                 f"{rule.params['threshold']:.1%} over {_span(window)} "
                                                 f"({bad} of {n})", rate))
        yield rule, found


def _counts_per_window(now, windows):
    """Return one row per (source, route, deployment) with its requests `n<window>` and its deployment failures
    `f<window>_<outcome>` over each window: summed by the database, not minute by minute in Python."""
    longest = max(windows)
    rows = Rollup.objects.filter(minute__gte=rollups.minute_of(now - timedelta(seconds=longest)))
    sums = {}
    for window in windows:
        since = Q(minute__gte=rollups.minute_of(now - timedelta(seconds=window)))
        sums[f"n{window}"] = Sum("count", filter=since)
        for kind in DEPLOYMENT_FAILURES:
            sums[f"f{window}_{kind}"] = Sum(Cast(KT(f"errors__{kind}"), IntegerField()), filter=since)
    return list(rows.values("source", "route_id", "deployment_id").annotate(**sums))


def _count_by(per_subject, scope, window):
    """Return {route or deployment id: [requests, deployment failures]} over `window` s (a route's: its gateway
    traffic only)."""
    counts = defaultdict(lambda: [0, 0])
    for row in per_subject:
        subject = row["route_id"] if scope == "route" else row["deployment_id"]
        if subject is not None and (scope != "route" or row["source"] == Source.TRAFFIC):
            counts[subject][0] += row[f"n{window}"] or 0
            counts[subject][1] += sum(row[f"f{window}_{kind}"] or 0 for kind in DEPLOYMENT_FAILURES)
    return counts


def _subject_labels(scope, subject, deployments, routes):
    if scope == "route":
        return {"route": routes[subject]}, routes[subject]
    name, provider = deployments[subject]
    return {"provider": provider, "deployment": name}, name


def spend_today(rules, now):
    midnight = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    rows = Rollup.objects.filter(source=Source.TRAFFIC, minute__gte=midnight)
    per = list(rows.values("route_id", "deployment_id").annotate(spent=Sum("cost")))
    deployments, routes = _names()
    totals = {scope: _spent_by(per, scope) for scope in {r.params.get("scope", "total") for r in rules}}
    for rule in rules:
        scope, limit = rule.params.get("scope", "total"), rule.params["limit"]
        found = []
        for subject, spent in totals[scope].items():
            if spent > limit:
                labels, name = ({}, "all traffic") if scope == "total" else _subject_labels(
                    scope, subject, deployments, routes)
                found.append(Observation(labels, f"{name} spent {spent:.2f} today (UTC) > limit {limit:g}", spent))
        yield rule, found


def _spent_by(per, scope):
    totals = defaultdict(float)
    for row in per:
        subject = None if scope == "total" else row["route_id" if scope == "route" else "deployment_id"]
        if scope == "total" or subject is not None:
            totals[subject] += float(row["spent"] or 0)
    return totals


def _span(seconds):
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


OBSERVERS = {
    ConditionKind.DEPLOYMENT_HEALTH: deployment_health, ConditionKind.PROVIDER_DOWN: provider_down,
    ConditionKind.CIRCUIT_OPEN: circuit_open, ConditionKind.KEY_STATE: key_state, ConditionKind.ROLLOUT: rollout,
    ConditionKind.PROBE_BUDGET: probe_budget, ConditionKind.NO_DATA: no_data, ConditionKind.TTFT_P95: ttft_p95,
    ConditionKind.ERROR_RATE: error_rate, ConditionKind.SPEND_TODAY: spend_today,
}
