"""Read helpers for the dashboard's figures: windows, per-bucket series, health.

Every figure comes from `probes.models.Rollup` rows merged with
`probes.rollups.merge_rows`, so a percentile over any window or bucket is a
merge of per-minute sketches, never an average of averages.
"""

from collections import defaultdict
from datetime import timedelta

from django.db import models
from django.utils import timezone

from probes.models import HealthState, ProbeTarget, Rollup, Source
from probes.rollups import merge_rows
from routing.models import CircuitState, KeyState

EMPTY = merge_rows([])


class Window(models.TextChoices):
    M15 = "15m", "15 min"
    H1 = "1h", "1 hour"
    H24 = "24h", "24 hours"
    D7 = "7d", "7 days"


SPAN = {Window.M15: timedelta(minutes=15), Window.H1: timedelta(hours=1),
        Window.H24: timedelta(days=1), Window.D7: timedelta(days=7)}
# Bucket sizes keep every chart under ~100 points.
BUCKET = {Window.M15: timedelta(minutes=1), Window.H1: timedelta(minutes=1),
          Window.H24: timedelta(minutes=15), Window.D7: timedelta(hours=2)}
# How often a page re-reads a window while live messages arrive (seconds).
REFRESH_S = {Window.M15: 10, Window.H1: 15, Window.H24: 60, Window.D7: 300}

TILE_SPAN = timedelta(minutes=15)
SPARK_SPAN = timedelta(minutes=30)
HEALTH_RANK = {HealthState.UNKNOWN: 0, HealthState.UP: 1, HealthState.DEGRADED: 2, HealthState.DOWN: 3}


def parse_window(value, default=Window.H1):
    """Return the Window named by `value` (the default when empty); raise ValueError naming the field."""
    if not value:
        return Window(default)
    try:
        return Window(value)
    except ValueError:
        choices = ", ".join(Window.values)
        raise ValueError(f"window must be one of {choices}, not {value[:20]!r}.") from None


def epoch_ms(when):
    return int(when.timestamp() * 1000)


def floor_to(when, size):
    """Return `when` rounded down to a multiple of `size` since the epoch."""
    seconds = int(size.total_seconds())
    return when - timedelta(seconds=int(when.timestamp()) % seconds, microseconds=when.microsecond)


def _rows(deployment_ids, since, source=None):
    rows = Rollup.objects.filter(deployment_id__in=list(deployment_ids), minute__gte=since)
    if source is not None:
        rows = rows.filter(source=source)
    return rows.only("minute", "source", "deployment_id", "count", "ok", "errors", "latency", "ttft",
                     "tokens_in", "tokens_out", "tps_sum", "tps_count", "cost")


def figures_by_deployment(deployment_ids, since, source=None):
    """Return {deployment id: merged figures} over [since, now); missing ids get empty figures."""
    grouped = defaultdict(list)
    for row in _rows(deployment_ids, since, source):
        grouped[row.deployment_id].append(row)
    return {pk: merge_rows(grouped[pk]) if pk in grouped else dict(EMPTY) for pk in deployment_ids}


def series(deployment_id, window, now=None):
    """Return (totals, points) of one deployment's charts over `window`, from one read.

    `totals` are the merged figures of the whole window (see probes.rollups).
    Each point, oldest first: {t (bucket start, epoch ms), p50, p95, p99,
    ttft_p50, ttft_p95, error_rate, count, rps}; latency and errors merge probes
    and real traffic, `rps` counts real traffic only.
    """
    now = now or timezone.now()
    size = BUCKET[window]
    rows = list(_rows([deployment_id], floor_to(now - SPAN[window], size)))
    buckets = defaultdict(list)
    for row in rows:
        buckets[floor_to(row.minute, size)].append(row)
    return merge_rows(rows), [_point(start, bucket, size, now) for start, bucket in sorted(buckets.items())]


def _point(start, rows, size, now):
    figures = merge_rows(rows)
    traffic = sum(row.count for row in rows if row.source == Source.TRAFFIC)
    # The current bucket is still filling: divide by the time it has covered so far.
    seconds = max(1.0, min(size.total_seconds(), (now - start).total_seconds()))
    return {
        "t": epoch_ms(start), "p50": figures["p50_ms"], "p95": figures["p95_ms"], "p99": figures["p99_ms"],
        "ttft_p50": figures["ttft_p50_ms"], "ttft_p95": figures["ttft_p95_ms"],
        "error_rate": figures["error_rate"], "count": figures["count"], "rps": traffic / seconds,
    }


def sparklines(deployment_ids, now=None):
    """Return {deployment id: [[minute epoch ms, p50 ms], ...]} over the last SPARK_SPAN."""
    now = now or timezone.now()
    grouped = defaultdict(lambda: defaultdict(list))
    for row in _rows(deployment_ids, floor_to(now - SPARK_SPAN, timedelta(minutes=1))):
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
    for target in ProbeTarget.objects.filter(deployment_id__in=list(deployment_ids), enabled=True).select_related("api_key"):
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
    if circuit is not None and circuit.state == CircuitState.HALF_OPEN and HEALTH_RANK[state] < HEALTH_RANK[HealthState.DEGRADED]:
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
