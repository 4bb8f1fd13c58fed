"""Per-minute rollups shared by probes and gateway traffic: the one home of their arithmetic.

Producers aggregate outcomes in memory into `RollupDelta`s (one per minute,
source, deployment, key and, for gateway traffic, route) and hand them to
`save_delta`, which merges one into its `Rollup` row. Every merge, of a delta
into a delta, a row or a window, is `RollupDelta.merge`. Every read of a
window, its figures and its chart points, is `read_window`, used by the REST
API and the dashboard alike, over the windows of `Window`.
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.db import models, transaction
from django.utils import timezone

from probes import sketch
from probes.models import Rollup, Source
from routing.outcomes import Outcome, client_errors, deployment_errors

MAX_TOKENS = 10**9  # per request: a larger usage report is an upstream's bug, not a bill
# Tokens per second is shown only for answers long enough to measure one: at least this many output tokens,
# generated over at least this long (a short answer's speed is its chunking, e.g. 8 tokens "at 102,647/s").
SPEED_MIN_TOKENS = 16
SPEED_MIN_SECONDS = 0.25
SPEED_RULE = (f"too short to measure a speed (fewer than {SPEED_MIN_TOKENS} output tokens, or generated in under "
              f"{SPEED_MIN_SECONDS * 1000:.0f} ms)")


class Window(models.TextChoices):
    """The windows figures and charts are read over (API `window`, dashboard selector)."""

    M5 = "5m", "5 min"
    M15 = "15m", "15 min"
    H1 = "1h", "1 hour"
    H24 = "24h", "24 hours"
    D7 = "7d", "7 days"


SPAN = {Window.M5: timedelta(minutes=5), Window.M15: timedelta(minutes=15), Window.H1: timedelta(hours=1),
        Window.H24: timedelta(days=1), Window.D7: timedelta(days=7)}
# Chart buckets that keep every window under ~100 points.
BUCKET = {Window.M5: timedelta(minutes=1), Window.M15: timedelta(minutes=1), Window.H1: timedelta(minutes=1),
          Window.H24: timedelta(minutes=15), Window.D7: timedelta(hours=2)}
ALIASES = {"1d": Window.H24, "1w": Window.D7}


def parse_window(value, default=Window.H1):
    """Return the Window named by `value` (or an alias; the default when empty).

    Raises ValueError naming the field and the choices.
    """
    if not value:
        return Window(default)
    if value in ALIASES:
        return ALIASES[value]
    try:
        return Window(value)
    except ValueError:
        choices = ", ".join(Window.values)
        raise ValueError(f"window must be one of {choices}, not {str(value)[:20]!r}.") from None


def minute_of(when):
    return when.replace(second=0, microsecond=0)


def floor_to(when, size):
    """Return `when` rounded down to a multiple of `size` since the epoch."""
    seconds = int(size.total_seconds())
    return when - timedelta(seconds=int(when.timestamp()) % seconds, microseconds=when.microsecond)


def epoch_ms(when):
    return int(when.timestamp() * 1000)


def _tokens(value):
    """Return a usage count as a sane non-negative int (upstreams send negatives, floats, strings)."""
    try:
        value = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(value, 0), MAX_TOKENS)


def _finite(value):
    """Return `value` as a finite float, or None when it is no number (None, text, NaN, infinite)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _finite_ms(value):
    """Return a duration in ms as a positive float for the sketch, or None when it is no duration."""
    value = _finite(value)
    return None if value is None else max(value, 0.001)


@dataclass
class RollupDelta:
    """Figures of one (minute, source, deployment, key, route), or of any merge of them."""

    minute: object = None
    source: str = ""
    deployment_id: int | None = None
    api_key_id: int | None = None
    route_id: int | None = None
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
    tpot: object = field(default_factory=sketch.new)  # ms per output token after the first (streams)

    @property
    def key(self):
        return (self.minute, self.source, self.deployment_id, self.api_key_id, self.route_id)

    def add(self, outcome, latency_ms=None, ttft_ms=None, tokens_in=0, tokens_out=0, tps=None, cost=0):
        """Fold one request's outcome into this delta; what an upstream reported is clamped to sane values."""
        self.count += 1
        if outcome == Outcome.OK:
            self.ok += 1
        else:
            self.errors[outcome] = self.errors.get(outcome, 0) + 1
        for value, target in ((_finite_ms(latency_ms), self.latency), (_finite_ms(ttft_ms), self.ttft)):
            if value is not None:
                target.add(value)
        self.tokens_in += _tokens(tokens_in)
        self.tokens_out += _tokens(tokens_out)
        tps = _finite(tps)
        if tps and tps > 0:
            self.tps_sum += tps
            self.tps_count += 1
            self.tpot.add(max(1000.0 / tps, 0.001))
        self.cost += _cost(cost)

    def merge(self, other):
        """Add `other`'s figures to this one's (the one merge of rollup arithmetic); return self."""
        self.count += other.count
        self.ok += other.ok
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        self.tpot.merge(other.tpot)
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.tps_sum += other.tps_sum
        self.tps_count += other.tps_count
        self.cost += other.cost
        return self

    @classmethod
    def of_row(cls, row):
        """Return a Rollup row's figures as a delta."""
        return cls(row.minute, row.source, row.deployment_id, row.api_key_id, row.route_id, row.count, row.ok,
                   dict(row.errors or {}), sketch.from_json(row.latency), sketch.from_json(row.ttft), row.tokens_in,
                   row.tokens_out, row.tps_sum, row.tps_count, Decimal(row.cost), sketch.from_json(row.tpot))

    def row_values(self):
        """Return the Rollup column values of these figures."""
        return {"count": self.count, "ok": self.ok, "errors": self.errors, "latency": sketch.to_json(self.latency),
                "ttft": sketch.to_json(self.ttft), "tpot": sketch.to_json(self.tpot), "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "tps_sum": self.tps_sum, "tps_count": self.tps_count, "cost": self.cost}

    def figures(self):
        """Return the figures a reader sees: counts, rates, percentiles (ms), tokens and cost."""
        lat = sketch.quantiles(self.latency)
        ttft = sketch.quantiles(self.ttft, (0.5, 0.95))
        return {
            "count": self.count, "ok": self.ok, "errors": dict(self.errors),
            **_error_figures(self.errors, self.count),
            "p50_ms": lat[0.5], "p95_ms": lat[0.95], "p99_ms": lat[0.99],
            "ttft_p50_ms": ttft[0.5], "ttft_p95_ms": ttft[0.95],
            "tokens_per_s": measurable_speed(self.tps_sum / self.tps_count if self.tps_count else None,
                                             self.tokens_out / self.ok if self.ok else 0),
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "cost": str(self.cost),
        }


def measurable_speed(tokens_per_s, tokens_out):
    """Return `tokens_per_s`, or None when the answer (or the average answer) it describes is too short to
    measure one: fewer than SPEED_MIN_TOKENS output tokens, or generated in under SPEED_MIN_SECONDS at that
    speed. The probes' few-token answers and one-chunk answers land here."""
    if not tokens_per_s or tokens_out < SPEED_MIN_TOKENS or tokens_out / tokens_per_s < SPEED_MIN_SECONDS:
        return None
    return tokens_per_s


def _error_figures(errors, count):
    """Return error_rate (the deployment's own failures: routing.outcomes.deployment_errors), availability (its
    complement) and the separate counts of client errors and rate limits (a key's 429s)."""
    failures = deployment_errors(errors)
    return {
        "error_rate": failures / count if count else None,
        "availability": (count - failures) / count if count else None,
        "client_errors": client_errors(errors), "rate_limited": errors.get(Outcome.RATE_LIMITED, 0),
    }


def _cost(value):
    try:
        cost = Decimal(str(value or 0))
    except ArithmeticError:
        return Decimal(0)
    return cost if cost.is_finite() and cost >= 0 else Decimal(0)


class Aggregator:
    """Collects outcomes into deltas keyed by (minute, source, deployment, key, route)."""

    def __init__(self, source):
        self.source = source
        self.deltas = {}

    def add(self, deployment_id, api_key_id=None, when=None, route_id=None, **outcome):
        minute = minute_of(when or timezone.now())
        key = (minute, self.source, deployment_id, api_key_id, route_id)
        delta = self.deltas.get(key)
        if delta is None:
            delta = self.deltas[key] = RollupDelta(minute, self.source, deployment_id, api_key_id, route_id)
        delta.add(**outcome)

    def put_back(self, delta):
        """Merge a delta that could not be saved back in, for the next flush."""
        existing = self.deltas.get(delta.key)
        if existing is None:
            self.deltas[delta.key] = delta
        else:
            existing.merge(delta)

    def drain(self):
        """Return the collected deltas and start afresh."""
        deltas, self.deltas = list(self.deltas.values()), {}
        return deltas


def save_delta(delta):
    """Merge one delta into its Rollup row, in a transaction of its own (safe with concurrent writers)."""
    with transaction.atomic():
        row, _ = Rollup.objects.select_for_update().get_or_create(
            minute=delta.minute, source=delta.source, deployment_id=delta.deployment_id, api_key_id=delta.api_key_id,
            route_id=delta.route_id,
        )
        merged = RollupDelta.of_row(row).merge(delta)
        Rollup.objects.filter(pk=row.pk).update(**merged.row_values())


def save_deltas(deltas):
    """Merge each delta into its row (see save_delta)."""
    for delta in deltas:
        save_delta(delta)


# --- reading ---------------------------------------------------------------------------

ROW_FIELDS = ("minute", "source", "deployment_id", "api_key_id", "route_id", "count", "ok", "errors", "latency", "ttft",
              "tpot", "tokens_in", "tokens_out", "tps_sum", "tps_count", "cost")


def select_rows(deployment_id=None, source=None, since=None, until=None, api_key_id=None, exact_key=False,
                route_id=None):
    """Return the Rollup rows matching the given dimensions from `since` (to `until`).

    `deployment_id` may be one id or a list. With exact_key, api_key_id=None
    means the deployment-level rows only (a rotating probe target's), not
    every key's; otherwise None means all rows. source=None means probes and
    traffic: a rollout's shadow rows (mirrored requests, counted twice by
    design) come only when asked for by their source.
    """
    rows = Rollup.objects.only(*ROW_FIELDS)
    if source is None:
        rows = rows.exclude(source=Source.SHADOW)
    if isinstance(deployment_id, (list, tuple, set)):
        rows = rows.filter(deployment_id__in=list(deployment_id))
    elif deployment_id is not None:
        rows = rows.filter(deployment_id=deployment_id)
    if source is not None:
        rows = rows.filter(source=source)
    if route_id is not None:
        rows = rows.filter(route_id=route_id)
    if since is not None:
        rows = rows.filter(minute__gte=minute_of(since))
    if until is not None:
        rows = rows.filter(minute__lt=until)
    if api_key_id is not None:
        rows = rows.filter(api_key_id=api_key_id)
    elif exact_key:
        rows = rows.filter(api_key__isnull=True)
    return rows


def merge_rows(rows):
    """Return the merged figures (RollupDelta.figures) of any iterable of Rollup rows."""
    total = RollupDelta()
    for row in rows:
        total.merge(RollupDelta.of_row(row))
    return total.figures()


EMPTY = RollupDelta().figures()


def window_stats(deployment_id, source, since, until=None, api_key_id=None, route_id=None):
    """Return the merged figures of one deployment and source over [since, until)."""
    return merge_rows(select_rows(deployment_id, source, since, until, api_key_id, route_id=route_id))


def figures_by(rows, dimension="deployment_id"):
    """Return {value of `dimension`: merged figures} of the rows."""
    grouped = defaultdict(RollupDelta)
    for row in rows:
        grouped[getattr(row, dimension)].merge(RollupDelta.of_row(row))
    return {value: delta.figures() for value, delta in grouped.items()}


def read_window(rows, since, until, bucket, rate_source=None):
    """Return (figures, points) of `rows` from `since` to `until` in `bucket`-sized steps.

    Buckets are aligned to the epoch and every one is present, oldest first
    (an empty one has count 0 and no latencies). Each point holds the figures
    of its bucket, `t` (its start, epoch ms), `start` (ISO) and `rps`: requests
    per second of `rate_source` rows only (all rows when None), over the part
    of the bucket that has passed.
    """
    first = floor_to(since, bucket)
    total = RollupDelta()
    buckets = defaultdict(RollupDelta)
    rates = defaultdict(int)
    for row in rows:
        delta = RollupDelta.of_row(row)
        start = floor_to(row.minute, bucket)
        total.merge(delta)
        buckets[start].merge(delta)
        if rate_source is None or row.source == rate_source:
            rates[start] += row.count
    points, start = [], first
    while start < until:
        points.append(_point(start, buckets.get(start) or RollupDelta(), rates[start], bucket, until))
        start += bucket
    return total.figures(), points


def _point(start, delta, count, bucket, until):
    seconds = max(1.0, min(bucket.total_seconds(), (until - start).total_seconds()))
    return {"t": epoch_ms(start), "start": start.isoformat(), **delta.figures(), "rps": count / seconds}


def ttft_by_deployment(since, deployment_ids=None):
    """Return {deployment id: merged time-to-first-token sketch} of probes and traffic from `since`.

    Reads only the ttft column: the gateways call it every minute or so to learn first-token timeouts.
    """
    rows = Rollup.objects.filter(minute__gte=minute_of(since)).exclude(source=Source.SHADOW)
    if deployment_ids is not None:
        rows = rows.filter(deployment_id__in=list(deployment_ids))
    merged = defaultdict(sketch.new)
    for deployment_id, ttft in rows.values_list("deployment_id", "ttft"):
        if ttft and ttft.get("count"):
            merged[deployment_id].merge(sketch.from_json(ttft))
    return dict(merged)


def traffic_by_route(route_id, since, until=None):
    """Return {deployment id: figures} of one route's own gateway traffic over [since, until).

    One indexed read: the rows of a route's canary and baseline over the same window.
    """
    return figures_by(select_rows(source=Source.TRAFFIC, since=since, until=until, route_id=route_id))
