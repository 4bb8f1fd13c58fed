"""Per-minute rollups shared by probes and gateway traffic.

Producers aggregate outcomes in memory into `RollupDelta`s (one per
deployment, key, source and minute) and hand them to `save_deltas`, which
merges them into `Rollup` rows. Queries over any window merge those rows, so
p50/p95/p99 for 5 minutes or a week cost one indexed read.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from probes import sketch
from probes.models import Rollup

OK = "ok"


def minute_of(when):
    return when.replace(second=0, microsecond=0)


@dataclass
class RollupDelta:
    minute: object
    source: str
    deployment_id: int
    api_key_id: int | None = None
    count: int = 0
    ok: int = 0
    errors: dict = field(default_factory=dict)
    latency: object = field(default_factory=sketch.new)
    ttft: object = field(default_factory=sketch.new)
    tokens_in: int = 0
    tokens_out: int = 0
    tps_sum: float = 0.0
    tps_count: int = 0
    cost: Decimal = Decimal(0)

    def add(self, outcome, latency_ms=None, ttft_ms=None, tokens_in=0, tokens_out=0, tps=None, cost=0):
        """Fold one request's outcome into this delta."""
        self.count += 1
        if outcome == OK:
            self.ok += 1
        else:
            self.errors[outcome] = self.errors.get(outcome, 0) + 1
        if latency_ms is not None:
            self.latency.add(max(latency_ms, 0.001))
        if ttft_ms is not None:
            self.ttft.add(max(ttft_ms, 0.001))
        self.tokens_in += tokens_in or 0
        self.tokens_out += tokens_out or 0
        if tps:
            self.tps_sum += tps
            self.tps_count += 1
        self.cost += Decimal(str(cost or 0))


class Aggregator:
    """Collects outcomes into deltas keyed by (minute, source, deployment, key)."""

    def __init__(self, source):
        self.source = source
        self.deltas = {}

    def add(self, deployment_id, api_key_id=None, when=None, **outcome):
        minute = minute_of(when or timezone.now())
        key = (minute, deployment_id, api_key_id)
        delta = self.deltas.get(key)
        if delta is None:
            delta = self.deltas[key] = RollupDelta(minute, self.source, deployment_id, api_key_id)
        delta.add(**outcome)

    def drain(self):
        """Return the collected deltas and start afresh."""
        deltas, self.deltas = list(self.deltas.values()), {}
        return deltas


def save_deltas(deltas):
    """Merge deltas into Rollup rows (one transaction each; safe with concurrent writers)."""
    for delta in deltas:
        with transaction.atomic():
            row, _ = Rollup.objects.select_for_update().get_or_create(
                minute=delta.minute, source=delta.source, deployment_id=delta.deployment_id, api_key_id=delta.api_key_id,
            )
            _merge_row(row, delta)


def _merge_row(row, delta):
    errors = dict(row.errors or {})
    for kind, n in delta.errors.items():
        errors[kind] = errors.get(kind, 0) + n
    latency = sketch.from_json(row.latency)
    latency.merge(delta.latency)
    ttft = sketch.from_json(row.ttft)
    ttft.merge(delta.ttft)
    Rollup.objects.filter(pk=row.pk).update(
        count=F("count") + delta.count, ok=F("ok") + delta.ok, errors=errors,
        latency=sketch.to_json(latency), ttft=sketch.to_json(ttft),
        tokens_in=F("tokens_in") + delta.tokens_in, tokens_out=F("tokens_out") + delta.tokens_out,
        tps_sum=F("tps_sum") + delta.tps_sum, tps_count=F("tps_count") + delta.tps_count,
        cost=F("cost") + delta.cost,
    )


WINDOWS = {"5m": timedelta(minutes=5), "15m": timedelta(minutes=15), "1h": timedelta(hours=1),
           "24h": timedelta(days=1), "1d": timedelta(days=1), "7d": timedelta(days=7), "1w": timedelta(days=7)}


def window_stats(deployment_id, source, since, until=None, api_key_id=None):
    """Return merged figures for one deployment and source over [since, until).

    Keys: count, ok, errors, error_rate, availability, p50/p95/p99 (ms),
    ttft_p50/ttft_p95 (ms), tokens_per_s, tokens_in, tokens_out, cost.
    """
    return merge_rows(select_rows(deployment_id, source, since, until, api_key_id))


def merge_rows(rows):
    """Return the figures of `window_stats` for any iterable of Rollup rows."""
    total = RollupDelta(None, None, None)
    for row in rows:
        total.count += row.count
        total.ok += row.ok
        for kind, n in (row.errors or {}).items():
            total.errors[kind] = total.errors.get(kind, 0) + n
        total.latency.merge(sketch.from_json(row.latency))
        total.ttft.merge(sketch.from_json(row.ttft))
        total.tokens_in += row.tokens_in
        total.tokens_out += row.tokens_out
        total.tps_sum += row.tps_sum
        total.tps_count += row.tps_count
        total.cost += row.cost
    return _figures(total)


def _figures(total):
    lat = sketch.quantiles(total.latency)
    ttft = sketch.quantiles(total.ttft, (0.5, 0.95))
    return {
        "count": total.count, "ok": total.ok, "errors": total.errors,
        "error_rate": (total.count - total.ok) / total.count if total.count else None,
        "availability": total.ok / total.count if total.count else None,
        "p50_ms": lat[0.5], "p95_ms": lat[0.95], "p99_ms": lat[0.99],
        "ttft_p50_ms": ttft[0.5], "ttft_p95_ms": ttft[0.95],
        "tokens_per_s": total.tps_sum / total.tps_count if total.tps_count else None,
        "tokens_in": total.tokens_in, "tokens_out": total.tokens_out, "cost": str(total.cost),
    }


# --- series for charts and per-target figures (added with the probes) ---------------


def select_rows(deployment_id, source, since, until=None, api_key_id=None, exact_key=False):
    """Return the Rollup rows of one deployment and source from `since` (to `until`).

    With exact_key, api_key_id=None means the deployment-level rows only (a
    rotating probe target's), not every key's; otherwise None means all rows.
    """
    rows = Rollup.objects.filter(deployment_id=deployment_id, source=source, minute__gte=minute_of(since))
    if until is not None:
        rows = rows.filter(minute__lt=until)
    if api_key_id is not None:
        rows = rows.filter(api_key_id=api_key_id)
    elif exact_key:
        rows = rows.filter(api_key__isnull=True)
    return rows


def series(deployment_id, source, since, until=None, api_key_id=None, step_minutes=1, exact_key=False):
    """Return chart points, one per `step_minutes` bucket from `since` to `until` (now),
    oldest first; buckets without data have count 0 and None latencies.

    Each point: minute (ISO start), count, ok, errors, error_rate, p50_ms,
    p95_ms, p99_ms, ttft_p50_ms, tokens_per_s, rps.
    """
    start = minute_of(since)
    end = until or timezone.now()
    step = timedelta(minutes=step_minutes)
    buckets = {}
    for row in select_rows(deployment_id, source, start, end, api_key_id, exact_key):
        buckets.setdefault(int((row.minute - start) / step), []).append(row)
    points, index = [], 0
    while start + index * step < end:
        figures = merge_rows(buckets.get(index, ()))
        points.append({
            "minute": (start + index * step).isoformat(),
            **{k: figures[k] for k in ("count", "ok", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "tokens_per_s")},
            "rps": figures["count"] / step.total_seconds(),
        })
        index += 1
    return points
