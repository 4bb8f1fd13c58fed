"""Mergeable latency sketches (DDSketch, 1% relative accuracy) stored as JSON.

Probe and gateway rollups both keep their latencies in this form, so any
window's p50/p95/p99 comes from merging per-minute sketches.
"""

from ddsketch import DDSketch

RELATIVE_ACCURACY = 0.01


def new():
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def to_json(sketch):
    """Return a compact JSON-safe dict of `sketch` (positive values only: latencies)."""
    store = sketch._store
    bins = {str(store.offset + i): c for i, c in enumerate(store.bins) if c}
    return {"bins": bins, "zero": sketch._zero_count, "count": sketch.count, "sum": sketch.sum,
            "min": sketch._min if sketch.count else None, "max": sketch._max if sketch.count else None}


def from_json(data):
    """Return a DDSketch rebuilt from `to_json` output (an empty one for None)."""
    sketch = new()
    if not data or not data.get("count"):
        return sketch
    for key, count in data["bins"].items():
        sketch._store.add(int(key), count)
    sketch._zero_count = data.get("zero", 0)
    sketch._count = data["count"]
    sketch._sum = data["sum"]
    sketch._min = data["min"]
    sketch._max = data["max"]
    return sketch



def quantiles(sketch, qs=(0.5, 0.95, 0.99)):
    """Return {q: value or None} for the given quantiles."""
    if not sketch.count:
        return {q: None for q in qs}
    return {q: sketch.get_quantile_value(q) for q in qs}


def count_above(sketch, value):
    """Return how many values of `sketch` lie in bins above the bin holding `value` (exact to the bin)."""
    key = sketch._mapping.key(value)
    store = sketch._store
    return sum(store.bins[max(key - store.offset + 1, 0):])


def mixture_quantile(weighted, q):
    """Return the q-quantile of a mixture of distributions: `weighted` is [(share, sketch), ...],
    each sketch standing for its share of the traffic whatever its own count. None when all are empty.

    Sketches of one relative accuracy share their bins, so the mixture is their shares' sum bin by bin.
    """
    bins, zero, total = {}, 0.0, 0.0
    mapping = None
    for share, one in weighted:
        if share <= 0 or not one.count:
            continue
        mapping = one._mapping
        scale = share / one.count
        zero += one._zero_count * scale
        for offset, count in enumerate(one._store.bins):
            if count:
                key = one._store.offset + offset
                bins[key] = bins.get(key, 0.0) + count * scale
        total += share
    if mapping is None:
        return None
    rank = q * total
    seen = zero
    if seen >= rank:
        return 0.0
    for key in sorted(bins):
        seen += bins[key]
        if seen >= rank - 1e-12:
            return mapping.value(key)
    return mapping.value(max(bins))
