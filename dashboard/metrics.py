"""The dashboard's figures: windows, series, sparklines and health, read through probes.rollups.

Every figure comes from `probes.models.Rollup` rows merged by
`probes.rollups` (the one home of their arithmetic), so a percentile over any
window or bucket is a merge of per-minute sketches, never an average of
averages, and the dashboard and the REST API read a window the same way.
"""

from collections import defaultdict
from datetime import timedelta

from django.utils import timezone

from probes.models import HealthState, ProbeTarget, Source
from probes.rollups import (
    BUCKET,
    EMPTY,
    SPAN,
    SPEED_RULE,  # noqa: F401  (what the pages say about tokens/s)
    Window,
    epoch_ms,
    figures_by,
    floor_to,
    measurable_speed,  # noqa: F401  (the dashboard's name for it)
    merge_rows,
    minute_of,
    parse_window,  # noqa: F401  (the dashboard's name for it)
    read_window,
    select_rows,
)
from routing.models import CircuitState, KeyState

# How often a page re-reads a window while live messages arrive (seconds).
REFRESH_S = {Window.M5: 10, Window.M15: 10, Window.H1: 15, Window.H24: 60, Window.D7: 300}

TILE_SPAN = timedelta(minutes=15)
SPARK_SPAN = timedelta(minutes=30)
MINUTE = timedelta(minutes=1)
RATE_SPAN = MINUTE  # "Requests/s" and "Live share": the last 60 seconds, so a rate reads as traffic is now
ROUTE_CHART_SPAN = timedelta(minutes=30)  # a route's split and traffic over time, per minute
ROLLOUT_SPAN = timedelta(minutes=30)  # a rollout's charts: the last half hour of its route, per minute
ROLLOUT_CHART_FIELDS = ("t", "count", "p50_ms", "p95_ms", "ttft_p50_ms", "ttft_p95_ms")
HEALTH_RANK = {HealthState.UNKNOWN: 0, HealthState.UP: 1, HealthState.DEGRADED: 2, HealthState.DOWN: 3}


def figures_by_deployment(deployment_ids, since, source=None, route_id=None):
    """Return {deployment id: merged figures} over [since, now); missing ids get empty figures."""
    figures = figures_by(select_rows(list(deployment_ids), source, since, route_id=route_id))
    return {pk: figures.get(pk, dict(EMPTY)) for pk in deployment_ids}


def route_rows(route_id, since):
    """Return one route's own gateway traffic rows from `since` (a list: several figures read them)."""
    return list(select_rows(source=Source.TRAFFIC, since=since, route_id=route_id))


def figures_by_deployment_of(rows, deployment_ids, since):
    """Return {deployment id: merged figures} of the `rows` from `since`'s minute; missing ids get empty figures."""
    figures = figures_by([row for row in rows if row.minute >= minute_of(since)])
    return {pk: figures.get(pk, dict(EMPTY)) for pk in deployment_ids}


NO_ROUTE_TRAFFIC = {**EMPTY, "rps": 0.0}


def route_figures(now, span=TILE_SPAN):
    """Return {route id: figures of its gateway traffic over `span`, with `rps` over the last minute}."""
    rows = list(select_rows(source=Source.TRAFFIC, since=now - span))
    figures = figures_by([row for row in rows if row.route_id is not None], "route_id")
    recent = last_minute(rows, now, "route_id")
    return {route_id: {**found, "rps": rate_per_s(recent[route_id])} for route_id, found in figures.items()}


def last_minute(rows, now, dimension="deployment_id"):
    """Return {value of `dimension`: requests in the 60 s before `now`} of per-minute rows.

    Rows count calendar minutes, so the current minute counts whole and the previous one by the part of it
    that lies within the last 60 s (exact for steady traffic): 60 requests a minute read 60, at any second.
    """
    current = floor_to(now, MINUTE)
    overlap = 1 - (now - current) / MINUTE
    counts = defaultdict(float)
    for row in rows:
        if row.minute >= current:
            counts[getattr(row, dimension)] += row.count
        elif row.minute >= current - MINUTE:
            counts[getattr(row, dimension)] += row.count * overlap
    return counts


def rate_per_s(count):
    """Requests per second of a last_minute() count."""
    return count / RATE_SPAN.total_seconds()


def route_chart(rows, names, now, span=ROUTE_CHART_SPAN):
    """Return {since_ms, step_ms, t: [minute epoch ms], targets: {name: [requests/s]}} of one route's traffic
    rows per minute over `span` (oldest first, every minute present; the current one over its elapsed part).
    `names` maps deployment id to name; the stacked bars are the route's traffic, their layers its split."""
    first = floor_to(now - span, MINUTE)
    minutes = [first + n * MINUTE for n in range(int((floor_to(now, MINUTE) - first) / MINUTE) + 1)]
    counts = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row.minute >= first and row.deployment_id in names:
            counts[names[row.deployment_id]][row.minute] += row.count
    seconds = [max(1.0, min(60.0, (now - m).total_seconds())) for m in minutes]
    return {"since_ms": epoch_ms(first), "step_ms": int(MINUTE.total_seconds() * 1000),
            "t": [epoch_ms(m) for m in minutes],
            "targets": {name: [counts[name][m] / s for m, s in zip(minutes, seconds, strict=True)]
                        for name in sorted(names.values())}}


def series(deployment_id, window, now=None):
    """Return (totals, points) of one deployment's charts over `window` (probes.rollups.read_window).

    Latency and errors merge probes and real traffic; `rps` counts real traffic only.
    """
    now = now or timezone.now()
    size = BUCKET[window]
    rows = select_rows(deployment_id, since=floor_to(now - SPAN[window], size))
    return read_window(rows, now - SPAN[window], now, size, rate_source=Source.TRAFFIC)


def rollout_series(route_id, canary_id, until, span=ROLLOUT_SPAN):
    """Return {since_ms, until_ms, canary: points, baseline: points} of a route's own traffic per minute.

    Both arms cover the same minutes (every one present, oldest first): the canary's rows and every other
    target's merged. A point has its latency and time-to-first-token percentiles, `error_rate` (the deployment
    error rate a rollout judges: never the client's, never a key's 429) and `share` (its part of the minute's
    requests).
    """
    since, bucket = until - span, timedelta(minutes=1)
    arms = {"canary": [], "baseline": []}
    for row in select_rows(source=Source.TRAFFIC, since=floor_to(since, bucket), until=until, route_id=route_id):
        arms["canary" if row.deployment_id == canary_id else "baseline"].append(row)
    points = {arm: read_window(rows, since, until, bucket)[1] for arm, rows in arms.items()}
    charts = {"since_ms": epoch_ms(since), "until_ms": epoch_ms(until), "canary": [], "baseline": []}
    for canary, baseline in zip(points["canary"], points["baseline"], strict=True):
        total = canary["count"] + baseline["count"]
        for arm, point in (("canary", canary), ("baseline", baseline)):
            charts[arm].append(_rollout_point(point, total))
    return charts


def _rollout_point(point, total):
    return {**{name: point[name] for name in ROLLOUT_CHART_FIELDS}, "error_rate": point["error_rate"],
            "share": point["count"] / total if total else None}


def sparklines(deployment_ids, now=None):
    """Return {deployment id: [[minute epoch ms, p50 ms], ...]} over the last SPARK_SPAN."""
    now = now or timezone.now()
    grouped = defaultdict(lambda: defaultdict(list))
    for row in select_rows(list(deployment_ids), since=floor_to(now - SPARK_SPAN, timedelta(minutes=1))):
        grouped[row.deployment_id][row.minute].append(row)
    lines = {pk: [] for pk in deployment_ids}
    for pk, minutes in grouped.items():
        for minute, rows in sorted(minutes.items()):
            p50 = merge_rows(rows)["p50_ms"]
            if p50 is not None:
                lines[pk].append([epoch_ms(minute), round(p50, 1)])
    return lines


def probe_health(deployment_ids):
    """Return {deployment id: [enabled ProbeTargets]} (with their keys)."""
    targets = defaultdict(list)
    enabled = ProbeTarget.objects.filter(deployment_id__in=list(deployment_ids), enabled=True)
    for target in enabled.select_related("api_key"):
        targets[target.deployment_id].append(target)
    return targets


def deployment_health(deployment, probe_targets, circuit=None):
    """Return (HealthState value, reason) for a deployment.

    An open circuit means down; otherwise the worst health its probes concluded;
    a half-open circuit is at least degraded. No probes and no circuit: unknown.
    """
    if not deployment.enabled or not deployment.provider.enabled:
        return HealthState.UNKNOWN, "Disabled: receives no traffic and no probes."
    if circuit is not None and circuit.state == CircuitState.OPEN:
        return HealthState.DOWN, f"Circuit open: {circuit.reason}".rstrip(": ")
    state, reason = HealthState.UNKNOWN, "No probe results yet."
    for target in probe_targets:
        if HEALTH_RANK[target.health] > HEALTH_RANK[state]:
            state, reason = target.health, target.health_reason
    trial_only = circuit is not None and circuit.state == CircuitState.HALF_OPEN
    if trial_only and HEALTH_RANK[state] < HEALTH_RANK[HealthState.DEGRADED]:
        return HealthState.DEGRADED, f"Circuit half-open: {circuit.reason}".rstrip(": ")
    return state, reason


def key_health(key, probe_targets):
    """Return {label, masked, state, state_label, reason, probe_health} for display (never the secret)."""
    probe = next((t for t in probe_targets if t.api_key_id == key.pk), None)
    state = KeyState(key.state) if key.enabled else KeyState.DISABLED
    return {
        "label": key.label, "masked": key.masked, "enabled": key.enabled,
        "state": state.value, "state_label": state.label,
        "reason": key.state_reason, "since": key.state_since.isoformat() if key.state_since else None,
        "rate_limited_until": key.rate_limited_until.isoformat() if key.rate_limited_until else None,
        "probe_health": probe.health if probe else None,
    }
