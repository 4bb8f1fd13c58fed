"""What a run measured: per-request figures from one stream, and the run's summary.

Definitions (also in the README):
- TTFT: from sending the request to the first chunk carrying content.
- ITL: the mean gap between consecutive content chunks of one response.
- TPOT: (end-to-end latency − TTFT) / (output tokens − 1).
- E2E: from sending to the last byte.
- Output tokens/s: output tokens of successful requests over the run's duration.
Percentiles are exact, from every stored sample (a run is bounded by its request cap),
linear between closest ranks.
"""

from dataclasses import asdict, dataclass

OK = "ok"
PERCENTILES = (50, 90, 95, 99, 99.9)
TIMED = ("ttft", "itl", "tpot", "e2e")
FIRST_ERRORS = 5


@dataclass
class Sample:
    """One request's figures; times in ms from its send, `at` in s from the run's start."""

    phase: int = 0
    at: float = 0.0
    outcome: str = OK
    status: int | None = None
    ttft: float | None = None
    itl: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    deployment: str = ""
    lag: float = 0.0
    error: str = ""

    def row(self):
        return asdict(self)


def stream_figures(sent, chunk_times, end, tokens_out):
    """Return {ttft, itl, tpot, e2e} in ms from perf-counter seconds of one response.

    `chunk_times` are the arrival times of the content chunks, in order.
    """
    e2e = (end - sent) * 1000
    ttft = (chunk_times[0] - sent) * 1000 if chunk_times else None
    gaps = [b - a for a, b in zip(chunk_times, chunk_times[1:], strict=False)]
    itl = sum(gaps) / len(gaps) * 1000 if gaps else None
    tpot = (e2e - ttft) / (tokens_out - 1) if ttft is not None and tokens_out > 1 else None
    return {"ttft": ttft, "itl": itl, "tpot": tpot, "e2e": e2e}


def percentile(ordered, q):
    """Return the q-th percentile (0..100) of a sorted list, linear between closest ranks; None when empty."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values):
    """Return {avg, min, max, p50, p90, p95, p99, p99.9} of the non-None values (None entries when empty)."""
    ordered = sorted(v for v in values if v is not None)
    figures = {"avg": sum(ordered) / len(ordered) if ordered else None,
               "min": ordered[0] if ordered else None, "max": ordered[-1] if ordered else None}
    figures.update({f"p{q:g}": percentile(ordered, q) for q in PERCENTILES})
    return figures


def meets(sample, slos):
    """Return True when the sample succeeded within every SLO ({metric: max ms})."""
    if sample.outcome != OK:
        return False
    figures = {metric: getattr(sample, metric) for metric in slos}
    return all(value is not None and value <= slos[metric] for metric, value in figures.items())


def summarise(samples, duration_s, slos=None):
    """Return the figures of a list of Samples over `duration_s` seconds of wall time."""
    slos = slos or {}
    count = len(samples)
    ok = [s for s in samples if s.outcome == OK]
    errors = {}
    for s in samples:
        if s.outcome != OK:
            errors[s.outcome] = errors.get(s.outcome, 0) + 1
    duration_s = max(duration_s, 1e-9)
    cost = sum(s.cost for s in samples)
    good = sum(1 for s in samples if meets(s, slos))
    return {
        "count": count, "ok": len(ok), "duration_s": duration_s,
        "success_rate": len(ok) / count if count else None,
        "error_rate": (count - len(ok)) / count if count else None,
        "errors": errors, "first_errors": _first_errors(samples),
        "rps": count / duration_s,
        "output_tps": sum(s.tokens_out for s in ok) / duration_s,
        "tokens_in": sum(s.tokens_in for s in samples), "tokens_out": sum(s.tokens_out for s in samples),
        "goodput_rps": good / duration_s, "goodput_ratio": good / count if count else None, "slos": slos,
        "cost": cost, "cost_per_1k": cost / count * 1000 if count else None,
        **{metric: distribution(getattr(s, metric) for s in ok) for metric in TIMED},
    }


def _first_errors(samples):
    firsts = []
    for s in samples:
        if s.outcome != OK and len(firsts) < FIRST_ERRORS:
            firsts.append({"outcome": s.outcome, "status": s.status, "error": s.error, "at": round(s.at, 3)})
    return firsts
