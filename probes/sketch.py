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
    return sum(c for i, c in enumerate(store.bins) if store.offset + i > key)
